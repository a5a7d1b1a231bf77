"""load_model: our checkpoints, exported folders and timm / OpenCLIP / Whisper weights through one entry
point; the scripts on converted models; training that starts from pretrained weights (--pretrained)."""

import json
import sys
import warnings
from types import SimpleNamespace

import pytest
import soundfile as sf
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

open_clip = pytest.importorskip("open_clip")

from conftest import ROOT, run_main, run_script  # noqa: E402
from test_interop_export import save_checkpoint  # noqa: E402
from test_interop_open_clip import check_parity  # noqa: E402
from test_interop_whisper import hf_reference, openai_reference  # noqa: E402  (skips without whisper, transformers)

from multimodal.cli.train import build_cli  # noqa: E402
from multimodal.encoders.text import greedy_decode  # noqa: E402
from multimodal.errors import InputError  # noqa: E402
from multimodal.interop.open_clip import load_open_clip  # noqa: E402
from multimodal.interop.timm import load_timm_vit  # noqa: E402
from multimodal.interop.whisper import load_whisper  # noqa: E402
from multimodal.loading import load_model, save_model  # noqa: E402
from multimodal.models import CLIP, Classifier, SpeechToText  # noqa: E402
from multimodal.tasks import ImageClassifier  # noqa: E402
from multimodal.tokenizers import CharTokenizer  # noqa: E402

TINY_VIT = yaml.safe_load((ROOT / "configs/tiny/vit_folder.yaml").read_text())["model"]["init_args"]["vit"]


def tiny_clip():
    """A random OpenCLIP ViT with 64-dimensional heads, so that load_model's defaults fit it."""
    torch.manual_seed(0)
    return open_clip.model.CLIP(32, dict(layers=1, width=64, head_width=64, patch_size=8, image_size=32),
                                dict(context_length=20, vocab_size=49408, width=64, heads=1, layers=1),
                                quick_gelu=True).eval()


def classifier(class_names, vit=TINY_VIT, seed=0, mean=(0.5,), std=(0.5,)) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier({"vit": vit, "mean": mean, "std": std}, class_names)
    torch.nn.init.normal_(model.head.weight)  # a trained head, not the zeros of a fresh one
    return model


def classifier_task(class_names, seed=0) -> ImageClassifier:
    """An ImageClassifier of the tiny recipe with a trained-looking head, to save as a checkpoint."""
    torch.manual_seed(seed)
    task = ImageClassifier(vit=TINY_VIT, class_names=class_names)
    torch.nn.init.normal_(task.model.head.weight)
    return task


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Foreign weight files as their projects save them, an image folder and a clip of audio."""
    out = tmp_path_factory.mktemp("pretrained")
    clip = tiny_clip()
    torch.save(clip.state_dict(), out / "clip.pt")
    torch.manual_seed(0)
    vit = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=1, num_classes=3)
    save_file(vit.state_dict(), out / "vit.safetensors")
    whisper = openai_reference()
    state = whisper.state_dict()
    # a 16-token context, which decoding fills quickly (random weights never say <|endoftext|>)
    state["decoder.positional_embedding"] = state["decoder.positional_embedding"][:16]
    torch.save({"dims": vars(whisper.dims), "model_state_dict": state}, out / "whisper.pt")  # OpenAI's layout
    hf = {k: v.contiguous() for k, v in hf_reference().state_dict().items() if k != "proj_out.weight"}  # tied
    save_file(hf, out / "whisper_hf.safetensors")
    for name, color in [("cat", (200, 30, 30)), ("dog", (30, 200, 30))]:
        (out / "images" / name).mkdir(parents=True)
        Image.new("RGB", (40, 32), color).save(out / "images" / name / "a.png")
    sf.write(out / "clip.wav", (0.1 * torch.randn(16_000)).numpy(), 16_000)
    return SimpleNamespace(dir=out, clip=clip)


def test_each_format_is_recognised_and_converted_as_its_loader_does(files, tmp_path):
    expected = {"vit.safetensors": (Classifier, load_timm_vit), "clip.pt": (CLIP, load_open_clip),
                "whisper.pt": (SpeechToText, load_whisper), "whisper_hf.safetensors": (SpeechToText, load_whisper)}
    for name, (kind, loader) in expected.items():
        model = load_model(files.dir / name)
        assert type(model) is kind and not model.training, name
        reference = loader(files.dir / name).state_dict()
        assert model.state_dict().keys() == reference.keys(), name
        assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items()), name
        assert type(load_model(files.dir / name, expect=kind)) is kind, name
    check_parity(files.clip, load_model(files.dir / "clip.pt"), 32, 20)  # the defaults fit: 64-dim heads
    task = classifier_task(["a", "b", "c"])
    ours = task.model
    for source in (save_checkpoint(task, tmp_path / "ours.ckpt"), save_model(ours, tmp_path / "exported")):
        model = load_model(source, expect=Classifier)
        assert model.class_names == ["a", "b", "c"] and torch.equal(model.head.weight, ours.head.weight)


def test_unknown_files_and_other_tasks_are_refused(files, tmp_path):
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)}, tmp_path / "hf_clip.safetensors")
    with pytest.raises(InputError, match=r"hf_clip.safetensors: not a model this library knows \(its keys begin "
                                         r"text_model.embeddings.token_embedding.weight\); it reads our Lightning "
                                         r".ckpt, an exported folder .* timm ViT, an OpenCLIP .* Whisper"):
        load_model(tmp_path / "hf_clip.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match=r"list.pt: not a model this library knows \(no state dict of tensors\)"):
        load_model(tmp_path / "list.pt")
    with pytest.raises(InputError, match="nothing.pt: no such checkpoint file or folder"):
        load_model(tmp_path / "nothing.pt")
    with pytest.raises(InputError, match=r"clip.pt: these are OpenCLIP ViT weights \(a CLIP\); "
                                         r"a SpeechToText is needed here"):
        load_model(files.dir / "clip.pt", expect=SpeechToText)
    save_model(classifier(["a", "b"]), tmp_path / "exported")
    with pytest.raises(InputError, match="exported: this is a Classifier; a CLIP is needed here"):
        load_model(tmp_path / "exported", expect=CLIP)
    save_checkpoint(classifier_task(["a", "b"]), tmp_path / "classifier.ckpt")
    with pytest.raises(InputError, match="classifier.ckpt: this is a Classifier checkpoint; a SpeechToText is needed"):
        load_model(tmp_path / "classifier.ckpt", expect=SpeechToText)


def test_zero_shot_and_retrieval_scripts_run_on_open_clip_weights(files, tmp_path):
    clip, images = files.dir / "clip.pt", files.dir / "images"
    result = json.loads(run_script("zero_shot", "--checkpoint", clip, "--images", images, "--json").stdout)
    assert [p["true"] for p in result["predictions"]] == ["cat", "dog"]
    assert run_main("retrieve", "index", "--checkpoint", clip, "--images", images, "--out", tmp_path / "index")[0] == 0
    rc, out, _ = run_main("retrieve", "query", "--checkpoint", clip, "--index", tmp_path / "index", "--text", "a cat",
                        "--top-k", 2, "--json")
    assert rc == 0 and len(json.loads(out)["results"]) == 2


def test_transcribe_and_classify_scripts_run_on_whisper_and_timm_weights(files):
    result = json.loads(run_script("transcribe", "--checkpoint", files.dir / "whisper.pt", files.dir / "clip.wav",
                                   "--json").stdout)
    assert isinstance(result["files"][0]["text"], str)
    rc, out, _ = run_main("classify", "--checkpoint", files.dir / "vit.safetensors", files.dir / "images/cat/a.png",
                        "--json")
    top = json.loads(out)["predictions"][0]["top"]
    assert rc == 0 and {t["label"] for t in top} == {"class_0", "class_1", "class_2"}  # timm names no classes
    rc, _, err = run_main("classify", "--checkpoint", files.dir / "clip.pt", files.dir / "images")
    assert rc == 2 and "clip.pt: these are OpenCLIP ViT weights (a CLIP); a Classifier is needed here" in err


def test_exported_whisper_decodes_as_the_converted_one(files, tmp_path):
    assert run_main("export", "--checkpoint", files.dir / "whisper.pt", "--out", tmp_path / "whisper")[0] == 0
    converted, exported = load_model(files.dir / "whisper.pt"), load_model(tmp_path / "whisper")
    assert isinstance(exported, SpeechToText) and exported.describe() == converted.describe()
    assert exported.decoder.prompt.tolist() == converted.tokenizer.prompt and len(converted.tokenizer.prompt) == 4
    audio = torch.from_numpy(sf.read(files.dir / "clip.wav", dtype="float32")[0])[None]
    memory, mask = converted.encode(audio, torch.tensor([audio.shape[1]]))
    tok = converted.tokenizer
    tokens = [greedy_decode(m.decoder, memory, mask, tok.sos, tok.eos, 16) for m in (converted, exported)]
    assert tokens[0] == tokens[1] and len(tokens[0][0]) == 16 - 4  # ended inside the 16-token context
    assert exported.transcribe(audio) == converted.transcribe(audio)


# --- training from pretrained weights ----------------------------------------------------------------

def configured(source, class_names, origin="source.ckpt") -> ImageClassifier:
    """A classifier task of the tiny recipe for data of ``class_names``, started from the model ``source``."""
    task = ImageClassifier(vit=TINY_VIT)
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(class_names=class_names))
    task.start_from(source, origin)
    task.configure_model()
    return task


def test_start_from_copies_weights_and_refreshes_a_head_for_other_classes():
    source = classifier(["a", "b", "c"], mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = configured(source, ["x", "y", "z"])
    assert same.model.state_dict().keys() == source.state_dict().keys()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.model.state_dict().items())
    assert torch.equal(same.model.mean, source.mean) and same.model.config.std == (0.2, 0.3, 0.25)
    assert list(same.hparams["std"]) == [0.2, 0.3, 0.25]  # saved with the checkpoint
    assert same.model.class_names == ["x", "y", "z"]  # the data's
    with pytest.warns(UserWarning, match=r"source.ckpt: model.head.bias \(3,\) vs \(5,\), model.head.weight \(3, 32\) "
                                         r"vs \(5, 32\) \(pretrained vs for this data\): left freshly initialised"):
        other = configured(source, list("abcde"))
    assert torch.equal(other.model.vit.patch_embed.weight, source.vit.patch_embed.weight)
    assert not other.model.head.weight.any()

    clip = CLIP({"vit": TINY_VIT, "text": {}}, CharTokenizer(list("ab")))
    with pytest.raises(InputError, match=r"clip.ckpt: this is a CLIP; a Classifier is needed here"):
        ImageClassifier(vit=TINY_VIT).start_from(clip, "clip.ckpt")
    wider = classifier(["a", "b", "c"], vit={**TINY_VIT, "transformer": {**TINY_VIT["transformer"], "mlp_ratio": 4.0}})
    with pytest.raises(InputError, match=r"wide.ckpt: weights do not fit the model; wrong shapes .*mlp"):
        configured(wider, ["a", "b", "c"], "wide.ckpt")


def test_train_fit_starts_from_pretrained_weights(shape_folders, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe writes under runs/
    monkeypatch.setattr(sys, "argv", ["train.py"])  # not pytest's arguments
    names = sorted(p.name for p in (shape_folders / "train").iterdir())
    source = save_checkpoint(classifier_task(names), tmp_path / "source.ckpt")
    (tmp_path / "pretrained.yaml").write_text(f"pretrained: {source}\n")  # as a recipe sets it
    args = ["fit", "--config", ROOT / "configs/tiny/vit_folder.yaml", "--data.init_args.root", shape_folders / "train",
            "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--model.init_args.lr", 0]
    task = build_cli(list(map(str, [*args, "--config", tmp_path / "pretrained.yaml"]))).model  # lr 0: unchanged
    expected = load_model(source).state_dict()
    assert task.model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in task.model.state_dict().items())
    with pytest.raises(InputError, match=r"clip.pt: these are OpenCLIP ViT weights \(a CLIP\); a Classifier is "
                                         r"needed here"):
        build_cli(list(map(str, [*args, "--pretrained", files.dir / "clip.pt"])))
