"""The public API: ``multimodal.load_model`` reads any of our model files into a plain nn.Module whose methods take
paths, PIL images, arrays and tensors, without importing Lightning; bad input raises InputError naming it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import multimodal as mm
from multimodal.cli import COMMANDS
from multimodal.tokenizers import BPETokenizer, CharTokenizer

VIT = {"image_size": 32, "patch_size": 8, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
TEXT = {"context_length": 16, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}


def tiny_clip() -> mm.CLIP:
    torch.manual_seed(0)
    tokenizer = BPETokenizer.train(["a red star", "a blue circle", "a small green cross"], 300)
    return mm.CLIP({"vit": VIT, "text": TEXT, "embed_dim": 16, "mean": (0.4,) * 3}, tokenizer).eval()


def tiny_speech() -> mm.SpeechToText:
    torch.manual_seed(0)
    small = {"dim": 32, "depth": 1, "num_heads": 2}
    return mm.SpeechToText({"encoder": {"max_frames": 100, "transformer": small},
                            "decoder": {"context_length": 8, "transformer": small}}, CharTokenizer(list("ab "))).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    mm.save_model(tiny_clip(), out / "clip")
    mm.save_model(tiny_speech(), out / "speech")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(out / "image.png")
    sf.write(out / "clip.wav", 0.1 * rng.standard_normal(8000), 8000)  # 1 s at 8 kHz: resampled on reading
    return out


def test_every_method_works_from_files_without_importing_lightning(tiny_classifier, files):
    code = f"""
import json, sys
import multimodal as mm
from multimodal.cli import COMMANDS
classifier = mm.load_model({str(tiny_classifier)!r})
clip = mm.load_model({str(files / 'clip')!r})
speech = mm.load_model({str(files / 'speech')!r})
image = {str(files / 'image.png')!r}
out = {{"classify": classifier.classify(image, top_k=2).labels,
       "zero_shot": clip.zero_shot(image, ["red star", "blue circle"]).label,
       "image": list(clip.encode_image(image).shape), "text": list(clip.encode_text(["a red star"]).shape),
       "transcribe": speech.transcribe({str(files / 'clip.wav')!r}).seconds, "lightning": "lightning" in sys.modules}}
print(json.dumps(out))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["lightning"] is False
    assert len(out["classify"]) == 2 and out["zero_shot"] in ("red star", "blue circle")
    assert out["image"] == [16] and out["text"] == [1, 16] and out["transcribe"] == 1.0


def test_images_as_paths_pil_arrays_and_tensors_give_the_same_result(files):
    clip = mm.load_model(files / "clip")
    path = files / "image.png"
    pil = Image.open(path)
    array = np.asarray(pil)
    tensor = clip.preprocess.image(path)
    embeddings = [clip.encode_image(x) for x in (path, str(path), pil, array, tensor)]
    for e in embeddings[1:]:
        torch.testing.assert_close(e, embeddings[0])
    batch = clip.encode_image([path, pil])
    assert batch.shape == (2, 16) and torch.allclose(batch[1], embeddings[0], atol=1e-6)
    results = clip.zero_shot([path, array], ["red star", "blue circle", "green cross"], top_k=2)
    assert [r.labels for r in results] == [results[0].labels] * 2 and len(results[0].scores) == 2
    assert results[0].scores[0] >= results[0].scores[1]


def test_audio_as_a_path_or_an_array_with_its_sample_rate(files):
    speech = mm.load_model(files / "speech")
    from_file = speech.transcribe(files / "clip.wav")
    samples, rate = sf.read(files / "clip.wav", dtype="float32")
    from_array = speech.transcribe(samples, sample_rate=rate)
    assert from_array.text == from_file.text and from_array.tokens == from_file.tokens and from_file.seconds == 1.0
    both = speech.transcribe([files / "clip.wav", torch.from_numpy(samples)], sample_rate=rate)
    assert [t.text for t in both] == [from_file.text] * 2


def test_a_saved_model_loads_back_the_same(files, tmp_path):
    clip = tiny_clip()
    loaded = mm.load_model(files / "clip")
    assert type(loaded) is mm.CLIP and not loaded.training
    torch.testing.assert_close(loaded.encode_text(["a red star"]), clip.encode_text(["a red star"]))
    config = json.loads((files / "clip/config.json").read_text())
    assert config["model"] == "CLIP" and config["config"]["embed_dim"] == 16 and config["tokenizer"]["type"] == "bpe"
    assert sorted(p.name for p in (files / "clip").iterdir()) == ["config.json", "model.safetensors"]


def test_bad_input_raises_input_error_naming_it(files, tmp_path):
    clip, speech = mm.load_model(files / "clip"), mm.load_model(files / "speech")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(mm.InputError, match="junk.png: not a readable image"):
        clip.encode_image(tmp_path / "junk.png")
    with pytest.raises(mm.InputError, match="missing.wav: no such audio file"):
        speech.transcribe(tmp_path / "missing.wav")
    with pytest.raises(mm.InputError, match="an image array must be"):
        clip.encode_image(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(mm.InputError, match="a template needs exactly one"):
        clip.zero_shot(files / "image.png", ["red star"], templates=["a photo"])
    with pytest.raises(mm.InputError, match="this is a CLIP; a SpeechToText is needed here"):
        mm.load_model(files / "clip", expect=mm.SpeechToText)
    with pytest.raises(mm.InputError, match="nowhere: no such checkpoint file or folder"):
        mm.load_model(tmp_path / "nowhere")


def test_the_multimodal_command_runs_from_any_folder(tmp_path):
    command = Path(sys.executable).parent / "multimodal"  # installed by [project.scripts]
    listing = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert listing.returncode == 0 and all(f"  {name} " in listing.stdout for name in COMMANDS)
    usage = subprocess.run([command, "zero-shot", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: multimodal zero-shot")
    wrong = subprocess.run([command, "transcibe"], capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 2 and "unknown command 'transcibe'" in wrong.stderr and "Traceback" not in wrong.stderr
