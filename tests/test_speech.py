"""Speech-to-text: manifest data, the SpeechRecognizer task, transcription and its script."""

import importlib.util
import json
import random
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from conftest import ROOT, run_script

from multimodal.data.audio import SAMPLE_RATE, load_audio
from multimodal.data.speech import (
    DurationBatchSampler,
    SpeechDataset,
    SpeechManifestData,
    Utterance,
    collate_speech,
    read_manifest,
    speed_perturb,
)
from multimodal.encoders.text import beam_search, greedy_decode
from multimodal.errors import InputError
from multimodal.inference.transcribe import rates_by, transcribe_files, transcribe_waveforms
from multimodal.loading import load_model
from multimodal.models import SpeechToText
from multimodal.models.speech import split_points
from multimodal.tasks import SpeechRecognizer
from multimodal.tokenizers import CharTokenizer

_spec = importlib.util.spec_from_file_location("transcribe_script", ROOT / "scripts/transcribe.py")
transcribe_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transcribe_script)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models: on a busy two-core machine a second thread only adds waiting (10x slower here). Scripts
    run by the tests inherit the environment variable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """8 train / 4 test clips (held-out voices), as make_data.py writes them."""
    out = tmp_path_factory.mktemp("speech")
    written = json.loads(run_script("make_data", "--json", "speech", out, "--train-size", 8, "--test-size", 4).stdout)
    assert written["clips"] == {"train": 8, "test": 4}
    return out


def tiny_model(tokenizer: CharTokenizer, max_frames: int = 300, context_length: int = 64) -> SpeechRecognizer:
    torch.manual_seed(0)
    return SpeechRecognizer(
        encoder=dict(num_masks=0, max_frames=max_frames, transformer=dict(dim=64, depth=2, num_heads=2, mlp_ratio=2.0)),
        decoder=dict(context_length=context_length, transformer=dict(dim=64, depth=1, num_heads=2, mlp_ratio=2.0)),
        tokenizer=tokenizer.to_dict(), label_smoothing=0.0)


def test_tiny_model_overfits_one_batch_and_beam_1_equals_greedy(speech):
    torch.manual_seed(0)
    utterances, _ = read_manifest(speech / "train.jsonl")
    utterances = sorted(utterances, key=lambda u: u.seconds)[:3]  # the 3 shortest clips: one batch
    waveforms, lengths, texts = collate_speech([SpeechDataset(utterances)[i] for i in range(3)])
    model = tiny_model(CharTokenizer.from_texts(texts))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses, hypotheses = [], None
    for step in range(150):
        model.train()
        parts = model.losses(waveforms, lengths, texts)
        assert all(torch.isfinite(v) for v in parts.values()), parts
        losses.append(parts["loss"].item())
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        if step >= 20 and step % 5 == 0:
            hypotheses = [model.tokenizer.decode(ids) for ids in model.model.decode(waveforms, lengths, beam_size=1)]
            if hypotheses == texts:
                break
    assert hypotheses == texts, f"after {step + 1} steps: {hypotheses} != {texts}"
    assert losses[-1] < 0.3 * losses[0]  # CTC + attention loss falls
    clips = [w[:n] for w, n in zip(waveforms, lengths)]
    assert [t.text for t in model.model.transcribe(clips, beam_size=3)] == texts  # the public API
    # beam search with one beam == greedy, on the trained model and on an untrained one (long, odd outputs)
    for m in (model.model.eval(), tiny_model(CharTokenizer.from_texts(texts)).model.eval()):
        with torch.no_grad():
            memory, mask = m.encode(waveforms, lengths)
        tok = m.tokenizer
        greedy = greedy_decode(m.decoder, memory, mask, tok.sos, tok.eos, 64)
        assert beam_search(m.decoder, memory, mask, tok.sos, tok.eos, 1, 64) == greedy
        assert m.decode(waveforms, lengths) == greedy


def write_manifest(folder, lines, name="m.jsonl"):
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_bad_manifest_lines_name_file_and_line(speech, tmp_path):
    clip = str(speech / "clips/train_00000.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all" * 10)
    cases = {
        '{"audio": "nowhere.wav", "text": "a red star"}': "no such audio file",
        json.dumps({"audio": clip, "text": "  "}): "empty text",
        '{"audio": "x.wav", "text": "a red star"': "not valid JSON",
        json.dumps({"audio": "corrupt.wav", "text": "a red star"}): "not a readable audio file",
        json.dumps({"audio": clip}): "no 'text' field",
        json.dumps({"audio": clip, "text": "a red star", "speaker": 7}): "'speaker' must be a string, got int",
    }
    good = json.dumps({"audio": clip, "text": "a red star"})
    for bad, reason in cases.items():
        manifest = write_manifest(tmp_path, [good, bad])
        with pytest.raises(InputError, match=reason) as e:
            read_manifest(manifest)
        assert str(e.value).startswith(f"{manifest}:2: "), e.value
    # training data: bad lines skipped, counted and named in one warning; all bad: refused
    manifest = write_manifest(tmp_path, [good, *cases, good])
    data = SpeechManifestData(train_manifest=str(manifest))
    with pytest.warns(UserWarning, match=r"skipped 6 of 8 lines") as record:
        assert data.texts() == ["a red star", "a red star"]
    assert all(f"m.jsonl:{n}:" in str(record[0].message) for n in range(2, 8))
    with pytest.raises(InputError, match="all 6 are bad"):
        SpeechManifestData(train_manifest=str(write_manifest(tmp_path, list(cases), "bad.jsonl"))).texts()
    # validation / test data are refused at the first bad line
    data = SpeechManifestData(train_manifest=str(write_manifest(tmp_path, [good], "good.jsonl")),
                              test_manifest=str(manifest))
    with pytest.raises(InputError, match=r"m.jsonl:2: audio 'nowhere.wav': no such audio file"):
        data.setup("test")


def test_stereo_48k_and_8k_files_simply_work(speech, tmp_path):
    mono = load_audio(speech / "clips/train_00001.wav").numpy()
    for rate, channels in ((48_000, 2), (8_000, 1), (44_100, 6)):
        resampled = AF.resample(torch.from_numpy(mono), SAMPLE_RATE, rate).numpy()
        sf.write(tmp_path / f"{rate}.flac", np.stack([resampled * (0.5 + c / 4) for c in range(channels)], 1), rate)
    manifest = write_manifest(tmp_path, [{"audio": f"{r}.flac", "text": "two"} for r in (48_000, 8_000, 44_100)])
    data = SpeechManifestData(train_manifest=str(manifest), test_manifest=str(manifest), speeds=[1.0])
    data.setup("fit")
    waveforms, lengths, texts = next(iter(data.val_dataloader()))
    assert waveforms.shape[0] == 3 and texts == ["two"] * 3
    assert all(abs(n - len(mono)) < 0.01 * SAMPLE_RATE for n in lengths.tolist())


def test_speed_perturbation_and_duration_buckets():
    wave = torch.randn(16_000)
    assert speed_perturb(wave, 1.1).shape[0] == pytest.approx(16_000 / 1.1, abs=2)
    assert speed_perturb(wave, 0.9).shape[0] == pytest.approx(16_000 / 0.9, abs=2)
    rng = random.Random(0)
    durations = [rng.uniform(0.5, 8.0) for _ in range(500)]
    sampler = DurationBatchSampler(durations, batch_size=16, max_seconds=60, shuffle=True, seed=0)
    epoch = list(sampler)
    assert sorted(i for b in epoch for i in b) == list(range(500))
    assert all(len(b) <= 16 and max(durations[i] for i in b) * len(b) <= 60 or len(b) == 1 for b in epoch)
    padded = sum(max(durations[i] for i in b) * len(b) for b in epoch)
    assert sum(durations) / padded > 0.9  # little padding
    assert [sorted(b) for b in list(sampler)] != [sorted(b) for b in epoch]  # a new order each epoch


def test_long_audio_is_split_or_refused(speech):
    texts = [json.loads(line)["text"] for line in (speech / "train.jsonl").read_text().splitlines()]
    model = tiny_model(CharTokenizer.from_texts(texts), max_frames=50, context_length=8).model.eval()  # 0.99 s
    window = model.encoder.window_samples
    long = torch.cat([load_audio(speech / f"clips/train_0000{i}.wav") for i in range(3)])  # about 5 s
    points = split_points(long, window)
    assert points[0] == 0 and points[-1] == len(long)
    assert all(0 < b - a <= window for a, b in zip(points, points[1:]))
    with pytest.warns(UserWarning, match=r"long.wav: .* transcribed in \d+ windows"):
        result = transcribe_waveforms(model, [long, long[:window]], ["long.wav", "short.wav"], quiet=True)
    assert result[0]["windows"] == len(points) - 1 >= 5 and result[1]["windows"] == 1
    with pytest.raises(InputError, match=r"long.wav: .* longer than the model's 1.0 s window"):
        transcribe_waveforms(model, [long], ["long.wav"], long_audio="refuse")


def test_train_then_transcribe_end_to_end(speech, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/speech").symlink_to(speech)
    run_script("train", "fit", "--config", ROOT / "configs/tiny/asr_tiny.yaml", "--trainer.max_epochs", 1,
               "--trainer.limit_val_batches", 0, "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    checkpoint = tmp_path / "runs/tiny_asr/checkpoints/last.ckpt"
    model = load_model(checkpoint)  # weights_only; the tokenizer travels in the checkpoint
    assert isinstance(model, SpeechToText)
    assert model.tokenizer.to_dict()["chars"] == sorted(set("".join(
        json.loads(line)["text"] for line in (speech / "train.jsonl").read_text().splitlines())))

    long = torch.cat([load_audio(speech / f"clips/test_0000{i}.wav") for i in range(4)] * 2)  # > 10 s window
    sf.write(tmp_path / "long.wav", long.numpy(), SAMPLE_RATE)
    clips = [speech / "clips/test_00000.wav", speech / "clips/test_00001.wav", tmp_path / "long.wav"]
    out = run_script("transcribe", "--checkpoint", checkpoint, *clips, "--beam-size", 2, "--json", cwd=tmp_path)
    files = json.loads(out.stdout)["files"]
    assert [f["path"] for f in files] == list(map(str, clips)) and all(isinstance(f["text"], str) for f in files)
    assert [f["windows"] for f in files] == [1, 1, 2] and "transcribed in 2 windows" in out.stderr

    # the same script in this process (a third fresh process costs ~8 s of imports on a busy machine)
    assert transcribe_script.main(["--checkpoint", str(checkpoint), "--manifest", str(speech / "test.jsonl"),
                                   "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["utterances"] == 4 and {"wer", "cer"} <= result.keys() and result["wer"] >= 0
    speakers = [json.loads(line)["speaker"] for line in (speech / "test.jsonl").read_text().splitlines()]
    assert {name: r["utterances"] for name, r in result["by_speaker"].items()} == Counter(speakers)
    assert sum(r["utterances"] for r in result["by_source"].values()) == 4
    assert [f["reference"] for f in result["files"]] == [
        json.loads(line)["text"] for line in (speech / "test.jsonl").read_text().splitlines()]

    # another task's checkpoint, and a missing file, are refused clearly
    other = tmp_path / "other.ckpt"
    torch.save({"multimodal_task": "ImageClassifier", "hyper_parameters": {}, "state_dict": {}}, other)
    with pytest.raises(InputError, match="this is a Classifier checkpoint; a SpeechToText is needed"):
        load_model(other, expect=SpeechToText)
    with pytest.raises(InputError, match="missing.wav: no such audio file"):
        transcribe_files(model, [tmp_path / "missing.wav"])
    assert transcribe_script.main(["--checkpoint", str(other), str(clips[0])]) == 2
    assert "other.ckpt: this is a Classifier checkpoint" in capsys.readouterr().err


def test_configure_model_builds_tokenizer_and_refuses_clips_beyond_the_window(speech):
    from types import SimpleNamespace

    def configured(max_frames: int, tokenizer: dict | None = None) -> SpeechRecognizer:
        model = SpeechRecognizer(encoder=dict(max_frames=max_frames, transformer=dict(dim=32, depth=1, num_heads=2)),
                                 decoder=dict(context_length=64, transformer=dict(dim=32, depth=1, num_heads=2)),
                                 tokenizer=tokenizer)
        data = SpeechManifestData(train_manifest=str(speech / "train.jsonl"), speeds=[0.9, 1.0])
        model._trainer = SimpleNamespace(datamodule=data, state=SimpleNamespace(fn="fit"))
        model.configure_model()
        return model

    texts = [json.loads(line)["text"] for line in (speech / "train.jsonl").read_text().splitlines()]
    model = configured(300)
    assert model.tokenizer.decode(model.tokenizer.encode(texts[0])) == texts[0]
    assert model.hparams["tokenizer"] == CharTokenizer.from_texts(texts).to_dict()
    assert model.hparams["decoder"]["vocab_size"] == model.model.decoder.token_embedding.num_embeddings
    with pytest.raises(InputError, match=r"train.jsonl:\d+: audio .* lasts .* longer than the encoder's 1.0 s window"):
        configured(50)
    with pytest.raises(InputError, match="unknown characters"):
        configured(300, CharTokenizer(list("abc ")).to_dict())


def test_error_rates_per_group_count_each_group_alone(tmp_path):
    def utterance(text: str, speaker: str | None, source: str | None) -> Utterance:
        return Utterance(tmp_path / "a.wav", text, 1.0, tmp_path / "m.jsonl", 1, speaker, source)

    utterances = [utterance("a red star", "Annie", "espeak-formant"), utterance("one two", "klatt", "espeak-klatt"),
                  utterance("a blue circle", "klatt", "espeak-klatt"), utterance("three", None, None)]
    hypotheses = ["a red star", "one too", "a blue circle", "tree"]
    by_speaker = rates_by("speaker", utterances, hypotheses)
    assert list(by_speaker) == ["(none)", "Annie", "klatt"]
    assert by_speaker["Annie"]["wer"] == 0 and by_speaker["(none)"]["wer"] == 1
    assert by_speaker["klatt"] == {"utterances": 2, "wer": pytest.approx(1 / 5), "cer": pytest.approx(1 / 20)}
    assert rates_by("source", utterances, hypotheses)["espeak-klatt"]["wer"] == pytest.approx(1 / 5)
