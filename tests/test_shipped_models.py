"""The models shipped in the package: each loads by name from any folder, its file is checked against the
registry's sha256, and it still scores its registry figure, within a stated margin, on test data it never saw,
through the commands a user runs. These are the regression tests of every inference path against real
trained weights; the build that makes them is tested on the tiny recipe."""

import json
import math
import shutil

import pytest
import torch
from conftest import ROOT, run_main
from PIL import Image

import multimodal as mm
from multimodal import pretrained
from multimodal.cli import models as models_command
from multimodal.data.export import mnist_folders
from multimodal.data.pairs import write_shape_pairs
from multimodal.data.speech_synth import make_speech_manifest

SHIPPED = {"mnist-vit": "Classifier", "shapes-asr": "SpeechToText", "shapes-clip": "CLIP",
           "shapes-speech-clip": "SpeechCLIP"}
MNIST_MARGIN = 0.002  # the same 1,000 test digits as the registry's figure: only arithmetic may differ
WER_MARGIN = 0.04  # 40 new clips (about 300 words) against the registry's 200: sampling noise, not a regression


def zero_shot_margin(accuracy: float, images: int) -> float:
    """Four standard errors of an accuracy measured on `images` new images: sampling noise, not a regression."""
    return 4 * math.sqrt(accuracy * (1 - accuracy) / images)


RECALL_MARGIN = 0.05  # 200 new scenes against the registry's 1,000 (fewer rivals per query, so an easier test)
# float32, and int8 (--int8) under the same margins: its loss, measured by benchmarks/int8.py, is within them
PRECISIONS = pytest.mark.parametrize("precision", [[], ["--int8"]], ids=["float32", "int8"])


def test_the_registry_lists_every_shipped_model_and_they_are_small():
    entries = pretrained.registry()
    assert {name: e["model"] for name, e in entries.items()} == SHIPPED and mm.available_models() == sorted(SHIPPED)
    sizes = [(pretrained.HERE / e["file"]).stat().st_size for e in entries.values()]
    assert sizes == [e["bytes"] for e in entries.values()] and sum(sizes) <= 25e6
    for e in entries.values():
        assert e["commands"][-1] == f"multimodal train fit --config {e['recipe']}" and (ROOT / e["recipe"]).is_file()


def test_each_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, kind in SHIPPED.items():
        model = mm.load_model(name)
        assert type(model).__name__ == kind and not model.training
        assert all(p.dtype == torch.float32 for p in model.parameters())


@PRECISIONS
def test_mnist_vit_scores_its_figure_on_the_test_digits(tmp_path, precision):
    mnist_folders(tmp_path, quiet=True)
    rc, out, _ = run_main("classify", "--checkpoint", "mnist-vit", tmp_path / "test", "--json", *precision)
    assert rc == 0
    top1 = json.loads(out)["accuracy"]["top1"]
    assert top1 >= pretrained.registry()["mnist-vit"]["scores"]["top1"] - MNIST_MARGIN


@PRECISIONS
def test_shapes_asr_scores_its_figure_on_new_clips_of_held_out_voices(tmp_path, precision):
    manifest = make_speech_manifest(tmp_path, 40, "test", seed=2, quiet=True)
    rc, out, _ = run_main("transcribe", "--checkpoint", "shapes-asr", "--manifest", manifest, "--json", *precision)
    assert rc == 0
    wer = json.loads(out)["wer"]
    assert wer <= pretrained.registry()["shapes-asr"]["scores"]["wer_greedy"] + WER_MARGIN


@PRECISIONS
def test_shapes_clip_scores_its_figures_on_new_scenes_in_the_styles_it_saw_and_the_one_it_did_not(tmp_path, precision):
    write_shape_pairs(tmp_path, train_size=0, test_size=0, seed=2, retrieval_size=200, zero_shot_per_class=10,
                      styles=models_command.EVAL_STYLES, hold_out_style="texture", quiet=True)
    scores = pretrained.registry()["shapes-clip"]["scores"]
    for folder, suffix in [(tmp_path, ""), (tmp_path / "texture", "_texture")]:
        zero = folder / "zero_shot"
        rc, out, _ = run_main("zero_shot", "--checkpoint", "shapes-clip", "--images", zero / "train_pairs",
                              zero / "held_out", "--json", *precision)
        assert rc == 0
        expected = scores[f"zero_shot_48_classes{suffix}"]
        assert json.loads(out)["accuracy"]["top1"] >= expected - zero_shot_margin(expected, 480)
        rc, out, _ = run_main("retrieve", "eval", "--checkpoint", "shapes-clip", "--pairs",
                              folder / "two_object_test.jsonl", "--json", *precision)
        assert rc == 0
        assert json.loads(out)["text_to_image"]["R@1"] >= scores[f"text_to_image_R@1{suffix}"] - RECALL_MARGIN


@PRECISIONS
def test_shapes_speech_clip_finds_new_scenes_by_voice(tmp_path, precision):
    """New scenes spoken by held-out voices, against the pictures: as the registry's figure, through retrieve eval;
    the frozen CLIP inside is shapes-clip itself, so shapes-clip's indexes answer spoken queries."""
    from multimodal.data.spoken import write_spoken_pairs

    write_spoken_pairs(tmp_path, train_size=0, test_size=0, retrieval_size=200, seed=2, quiet=True)
    rc, out, _ = run_main("retrieve", "eval", "--checkpoint", "shapes-speech-clip", "--pairs",
                          tmp_path / "two_object_test.jsonl", "--json", *precision)
    assert rc == 0
    scores = pretrained.registry()["shapes-speech-clip"]["scores"]
    assert json.loads(out)["speech_to_image"]["R@1"] >= scores["speech_to_image_R@1"] - RECALL_MARGIN
    index = tmp_path / "scenes.index"
    assert run_main("retrieve", "index", "--checkpoint", "shapes-clip", "--images", tmp_path / "images", "--out",
                    index, "--json", *precision)[0] == 0
    rows = [json.loads(line) for line in (tmp_path / "two_object_test.jsonl").read_text().splitlines()]
    rc, out, _ = run_main("retrieve", "query", "--checkpoint", "shapes-speech-clip", "--index", index, "--audio",
                          tmp_path / rows[0]["audio"], "--json", *precision)
    assert rc == 0 and json.loads(out)["results"][0]["path"] == str((tmp_path / rows[0]["image"]).resolve())


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """The shipped files and registry copied to a folder the test may damage."""
    copy = tmp_path / "pretrained"
    shutil.copytree(pretrained.HERE, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(pretrained, "HERE", copy)
    monkeypatch.setattr(pretrained, "REGISTRY", copy / "registry.json")
    return copy


def test_a_damaged_or_missing_file_is_one_error_naming_it(shipped_copy, tmp_path):
    weights = shipped_copy / "mnist-vit.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern in the last weight: still a readable file, wrong numbers
    weights.write_bytes(bytes(data))
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    rc, out, err = run_main("classify", "--checkpoint", "mnist-vit", image)
    assert rc == 2 and out == ""
    assert err.startswith(f"error: {weights}: checksum mismatch for the shipped model 'mnist-vit'") and err.count("\n") == 1
    weights.unlink()
    with pytest.raises(mm.InputError, match="mnist-vit.safetensors: the shipped model 'mnist-vit' is missing"):
        mm.load_model("mnist-vit")


def test_the_models_command_prints_the_registry():
    rc, out, _ = run_main("models", "--json")
    assert rc == 0 and json.loads(out) == pretrained.registry()
    rc, out, _ = run_main("models")
    assert rc == 0 and all(name in out for name in SHIPPED) and "top1 " in out and "wer_greedy " in out


def test_build_trains_exports_evaluates_and_registers(shipped_copy, tmp_path, monkeypatch):
    """The tiny recipe through the same build: data, training, float32 and half-precision scores, the entry."""
    work = tmp_path / "work"
    (work / "configs/tiny").mkdir(parents=True)
    shutil.copy(ROOT / "configs/tiny/vit_folder.yaml", work / "configs/tiny")
    data = ["make-data", "shape-classes", "data/shape_classes", "--train-size", "96", "--test-size", "24",
            "--image-size", "32"]

    def scores(model):
        from multimodal.inference.classify import classify, collect
        return {"top1": classify(model, collect([work / "data/shape_classes/test"], model.class_names), quiet=True)
                ["accuracy"]["top1"]}

    monkeypatch.setattr(models_command, "ROOT", work)
    monkeypatch.setitem(models_command.BUILDS, "tiny-vit", models_command.Build(
        "configs/tiny/vit_folder.yaml", "runs/tiny_vit/checkpoints/last.ckpt", [data], "24 shapes", scores, True, 1.0))
    entry = models_command.build("tiny-vit")
    assert (work / "data/shape_classes/test").is_dir() and (work / "runs/tiny_vit/checkpoints/last.ckpt").is_file()
    assert entry["dtype"] == "float16" and entry["sha256"] == pretrained.sha256(shipped_copy / "tiny-vit.safetensors")
    assert entry["commands"] == ["multimodal " + " ".join(data), "multimodal train fit --config configs/tiny/vit_folder.yaml"]
    assert set(entry["scores"]) == set(entry["scores_float32"]) == {"top1"} and entry["training_seconds"] >= 0
    assert json.loads((shipped_copy / "registry.json").read_text())["tiny-vit"] == entry
    assert set(pretrained.registry()) == {*SHIPPED, "tiny-vit"}  # the others kept
    trained = mm.load_model(work / "runs/tiny_vit/checkpoints/last.ckpt")
    shipped = mm.load_model("tiny-vit")
    image = torch.rand(2, 3, 32, 32)
    assert torch.allclose(shipped(image), trained(image), atol=2e-2)  # half-precision weights, float32 compute


def test_int8_quantizes_every_linear_layer_of_a_copy_and_stays_on_the_cpu(tmp_path):
    model = mm.load_model("mnist-vit")
    quantized = mm.quantize_int8(model)
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert [name for name, m in quantized.named_modules()
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)] == linears
    images = torch.rand(8, 1, 28, 28)
    with torch.inference_mode():
        logits, int8_logits = model(images), quantized(images)
    assert not torch.equal(logits, int8_logits) and torch.allclose(logits, int8_logits, atol=0.05 * logits.abs().max())
    with pytest.raises(ValueError, match="for inference only"):
        mm.save_model(quantized, tmp_path / "int8")
    assert not (tmp_path / "int8").exists()
    with pytest.raises(mm.InputError, match="int8 inference runs on the CPU"):
        mm.load_model("mnist-vit", device="cuda", int8=True)
