"""Speech in the CLIP space: spoken-caption data, the attention pooling, the SpeechCLIP model and task, and the
scripts that use it (retrieve by voice, eval, attention), end to end on tiny data."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, run_main, run_script

from multimodal import load_model
from multimodal.data.audio import SAMPLE_RATE, write_audio
from multimodal.data.speech_synth import split_voices
from multimodal.data.spoken import read_spoken_pairs, write_spoken_pairs
from multimodal.errors import InputError
from multimodal.loading import save_model
from multimodal.models import CLIP, SpeechCLIP, SpeechCLIPConfig
from multimodal.nn import AttentionPool
from multimodal.tasks import SpeechImageContrastive

TINY_AUDIO = {"max_frames": 500, "num_masks": 0, "transformer": {"dim": 32, "depth": 2, "num_heads": 2}}


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    out = tmp_path_factory.mktemp("spoken") / "data" / "spoken_shapes"  # where the tiny recipe reads it
    write_spoken_pairs(out, train_size=24, test_size=6, retrieval_size=8, seed=0, quiet=True, workers=2)
    return out


@pytest.fixture(scope="module")
def trained(spoken):
    """The tiny recipe trained for its two epochs from a folder whose data/ holds the spoken pairs."""
    work = spoken.parents[1]
    run_script("train", "fit", "--config", ROOT / "configs/tiny/speech_clip_tiny.yaml",
               "--trainer.enable_progress_bar", "false", cwd=work)
    return work / "runs/tiny_speech_clip/checkpoints/last.ckpt"


def tiny_model() -> SpeechCLIP:
    clip = load_model("shapes-clip", expect=CLIP)
    model = SpeechCLIP(SpeechCLIPConfig(clip.config, TINY_AUDIO, pool_heads=2, pool_depth=1), clip.tokenizer)
    model.clip.load_state_dict(clip.state_dict())
    return model.eval()


def test_attention_pool_ignores_padding_and_weighs_only_real_frames():
    torch.manual_seed(0)
    pool = AttentionPool(16, 4).eval()
    x = torch.randn(1, 5, 16)
    padded = torch.cat([x, torch.randn(1, 3, 16) * 100], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(pool(padded, mask), pool(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pool(padded), pool(x))  # without the mask the padding would count


def test_speech_embeddings_do_not_depend_on_the_batch_and_the_clip_stays_frozen(spoken):
    model = tiny_model()
    clips = sorted((spoken / "clips").glob("test_*.wav"))[:3]
    together = model.encode_audio(clips)
    alone = torch.stack([model.encode_audio(c) for c in clips])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert together.shape == (3, model.embed_dim) and torch.allclose(together.norm(dim=-1), torch.ones(3))
    model.train()
    assert not model.clip.training and model.audio.training
    assert not any(p.requires_grad for p in model.clip.parameters())
    assert all(p.requires_grad for p in model.audio.parameters())


def test_a_saved_speech_clip_loads_with_its_clip_and_gives_the_same_embeddings(spoken, tmp_path):
    model = tiny_model()
    clip = sorted((spoken / "clips").glob("test_*.wav"))[0]
    loaded = load_model(save_model(model, tmp_path / "export"))
    assert isinstance(loaded, SpeechCLIP)
    torch.testing.assert_close(loaded.encode_audio(clip), model.encode_audio(clip))
    torch.testing.assert_close(loaded.encode_text("a red star"), load_model("shapes-clip").encode_text("a red star"))


def test_spoken_pairs_are_deterministic_distinct_and_spoken_by_held_out_voices(spoken, tmp_path):
    rows = {name: [json.loads(line) for line in (spoken / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "test", "two_object_test")}
    assert [len(r) for r in rows.values()] == [24, 6, 8]
    captions = [r["caption"] for r in rows["two_object_test"]]
    assert len(set(captions)) == 8 and all(" of " in c or " above " in c or " below " in c for c in captions)
    assert {r["speaker"] for r in rows["train"]} <= set(split_voices("train"))
    assert {r["speaker"] for r in rows["test"] + rows["two_object_test"]} <= set(split_voices("test"))
    assert {r["source"] for r in rows["train"]} <= {"espeak-formant", "espeak-klatt"}
    # the same seed, other speakers: the same scenes and pictures, scene by scene
    again = tmp_path / "again"
    write_spoken_pairs(again, train_size=0, test_size=0, retrieval_size=8, seed=0, sources=("klatt",), quiet=True)
    other = [json.loads(line) for line in (again / "two_object_test.jsonl").read_text().splitlines()]
    assert [r["caption"] for r in other] == captions and {r["source"] for r in other} == {"espeak-klatt"}
    first = rows["two_object_test"][0]
    assert (again / other[0]["image"]).read_bytes() == (spoken / first["image"]).read_bytes()
    write_spoken_pairs(tmp_path / "same", train_size=0, test_size=0, retrieval_size=8, seed=0, quiet=True)
    assert (tmp_path / "same" / first["audio"]).read_bytes() == (spoken / first["audio"]).read_bytes()


@pytest.mark.parametrize("damage, reason", [
    (lambda d, row: row.update(image="images/none.png"), "image 'images/none.png': no such"),
    (lambda d, row: row.update(audio="clips/none.wav"), "audio 'clips/none.wav': no such audio file"),
    (lambda d, row: (d / row["audio"]).write_bytes(b"RIFF broken"), "not a readable audio file"),
    (lambda d, row: sf.write(d / row["audio"], np.zeros(8000, np.float32), SAMPLE_RATE), "silent"),
    (lambda d, row: (d / row["image"]).write_bytes(b"not a png"), "image"),
    (lambda d, row: row.update(caption=" "), "'caption' must be a non-empty string"),
    (lambda d, row: row.pop("image"), "no 'image' field"),
])
def test_a_bad_line_is_named_with_its_file_and_line(spoken, tmp_path, damage, reason):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(spoken, data)
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    damage(data, rows[2])
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=reason) as error:
        read_spoken_pairs(data / "test.jsonl")
    assert str(error.value).startswith(f"{data / 'test.jsonl'}:3: ")


def test_training_lowers_the_loss_and_the_scripts_retrieve_by_voice(spoken, trained, tmp_path):
    metrics = (trained.parents[1] / "lightning_logs/version_0/metrics.csv").read_text().splitlines()
    assert any("val/speech_to_image_R@1" in line for line in metrics[:1])
    model = load_model(trained)
    assert isinstance(model, SpeechCLIP)
    frozen = load_model("shapes-clip").state_dict()
    assert all(torch.equal(v, frozen[k].float()) for k, v in model.clip.state_dict().items())  # never trained

    rc, out, err = run_main("retrieve", "eval", "--checkpoint", trained, "--pairs", spoken / "two_object_test.jsonl",
                            "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["clips"] == result["images"] == 8
    assert result["text_to_image"]["R@10"] == 1.0 and result["speech_to_image"]["R@10"] == 1.0  # 8 images
    assert set(result["speech_to_image_R@1_by_source"]) <= {"espeak-formant", "espeak-klatt"}
    assert {"speech_to_text", "image_to_speech"} <= set(result)

    index = tmp_path / "shapes.index"  # built by the SpeechCLIP: its CLIP's index, which the CLIP can query too
    assert run_main("retrieve", "index", "--checkpoint", trained, "--images", spoken / "images", "--out", index)[0] == 0
    assert run_main("retrieve", "query", "--checkpoint", "shapes-clip", "--index", index, "--text", "a red star")[0] == 0
    query = next(iter(sorted((spoken / "clips").glob("two_object_test_*.wav"))))
    rc, out, err = run_main("retrieve", "query", "--checkpoint", trained, "--index", index, "--audio", query,
                            "--top-k", "3", "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 3 and results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    # the same ranking as the Python API gives
    expected = model.encode_audio(query) @ model.encode_image([r["path"] for r in results]).T
    assert expected.argsort(descending=True).tolist() == [0, 1, 2]

    rc, out, err = run_main("attention", "--checkpoint", trained, query, "--out", tmp_path / "maps", "--json")
    assert rc == 0, err
    (result,) = json.loads(out)
    weights = torch.tensor(result["alignment"])
    assert result["tokens"] == ["head 1", "head 2", "mean"]
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    assert (tmp_path / "maps" / f"{query.stem}_attention.png").stat().st_size > 0


def test_bad_inputs_are_refused_in_one_line(spoken, trained, tiny_classifier, tmp_path):
    other = tmp_path / "other_clip"  # another CLIP: shapes-clip with its image projection changed
    clip = load_model("shapes-clip")
    with torch.no_grad():
        clip.image_projection.weight.mul_(2)
    save_model(clip, other)
    foreign, own = tmp_path / "foreign.index", tmp_path / "own.index"
    for checkpoint, index in ((other, foreign), ("shapes-clip", own)):
        assert run_main("retrieve", "index", "--checkpoint", checkpoint, "--images", spoken / "images", "--out",
                        index, "--json")[0] == 0
    query = sorted((spoken / "clips").glob("test_*.wav"))[0]
    rc, _, err = run_main("retrieve", "query", "--checkpoint", trained, "--index", foreign, "--audio", query)
    assert rc == 2 and "built with another checkpoint" in err and len(err.strip().splitlines()) == 1
    assert run_main("retrieve", "query", "--checkpoint", trained, "--index", own, "--audio", query)[0] == 0
    rc, _, err = run_main("retrieve", "query", "--checkpoint", "shapes-clip", "--index", own, "--audio", query)
    assert rc == 2 and "has no speech tower" in err
    rc, _, err = run_main("retrieve", "eval", "--checkpoint", tiny_classifier, "--pairs", spoken / "test.jsonl")
    assert rc == 2 and "a CLIP or a SpeechCLIP is needed" in err
    silent = tmp_path / "silent.wav"
    write_audio(silent, torch.zeros(SAMPLE_RATE), SAMPLE_RATE)
    rc, _, err = run_main("retrieve", "query", "--checkpoint", trained, "--index", own, "--audio", silent)
    assert rc == 2 and "silent" in err and str(silent) in err


def test_a_checkpoint_trained_against_another_clip_is_refused(trained):
    """The train command resumes with the checkpoint's own CLIP (its hyper-parameters win); any other way in is
    checked: a checkpoint whose CLIP has another embedding size than the task's is named, not half-loaded."""
    task = SpeechImageContrastive("shapes-clip", encoder=TINY_AUDIO, pool_heads=2)
    task.configure_model()
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["multimodal_model"]["config"]["clip"]["embed_dim"] = 64
    with pytest.raises(InputError, match=r"trained against another CLIP \(embed_dim 64, the CLIP given now 128\)"):
        task.on_load_checkpoint(checkpoint)


def test_the_caption_bank_holds_the_hard_negatives_a_batch_lacks():
    """A batch of one clip has no negative in-batch; against the bank of training captions, a clip that sounds like
    the caption one word away scores far worse than one that sounds like its own."""
    task = SpeechImageContrastive("shapes-clip", encoder=TINY_AUDIO, pool_heads=2)
    task.configure_model()
    captions = ["a red star", "a red star left of a blue circle", "a red star right of a blue circle"]
    task._bank_captions = {c: i for i, c in enumerate(captions)}
    text = task.model.clip.encode_text(captions)
    image = task.model.clip.encode_image(torch.rand(1, 3, 64, 64))
    own, neighbour = (task.bank_loss(text[[i]], image, [captions[1]]).item() for i in (1, 2))
    assert task.loss(text[[2]], image, text[[1]]).item() == pytest.approx(0.0)  # in-batch: nothing to tell apart
    assert own < math.log(len(captions)) - 0.5  # far from a uniform guess among the bank's captions
    assert neighbour > own  # how much worse depends on the CLIP's temperature


def test_a_locked_encoder_stays_as_it_was_and_the_kept_features_give_what_the_model_gives(spoken):
    from lightning import Trainer, seed_everything

    from multimodal.data.spoken import SpokenPairsData

    seed_everything(0)
    task = SpeechImageContrastive("shapes-clip", encoder=TINY_AUDIO, lock_audio_encoder=True, pool_heads=2,
                                  pool_depth=1, lr=0.003)
    data = SpokenPairsData(str(spoken / "train.jsonl"), str(spoken / "test.jsonl"), batch_size=8, speeds=[1.0])
    task.configure_model()
    encoder = {k: v.clone() for k, v in task.model.audio.state_dict().items()}
    pool = {k: v.clone() for k, v in task.model.audio_pool.state_dict().items()}
    Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(task, datamodule=data)
    assert all(torch.equal(v, encoder[k]) for k, v in task.model.audio.state_dict().items())
    assert not all(torch.equal(v, pool[k]) for k, v in task.model.audio_pool.state_dict().items())
    assert len(task._kept) == 24 + 6  # every training and validation clip, once
    task.model.eval()
    batch = next(iter(data.val_dataloader()))
    kept, _ = task.from_kept(*batch[:3], batch[4])
    torch.testing.assert_close(kept, task.model(batch[0], batch[1]), atol=1e-5, rtol=1e-4)
