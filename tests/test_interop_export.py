"""Export to safetensors + JSON config, and back."""

import importlib.util
import json

import pytest
import torch

from conftest import ROOT, run_script
from multimodal.errors import InputError
from multimodal.interop.export import export_task, load_exported
from multimodal.tasks import ImageClassifier

VIT = {"image_size": 32, "patch_size": 8, "channels": 3,
       "transformer": {"dim": 32, "depth": 2, "num_heads": 2, "activation": "quick_gelu"}}


def tiny_classifier() -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(vit=VIT, class_names=["cat", "dog", "fox"], mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25)).eval()


def test_export_round_trip_gives_the_same_logits(tmp_path):
    model = tiny_classifier()
    export_task(model, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["task"] == "ImageClassifier" and config["hyper_parameters"]["class_names"] == ["cat", "dog", "fox"]
    loaded = load_exported(tmp_path / "out")
    assert isinstance(loaded, ImageClassifier) and loaded.class_names == model.class_names
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_export_script_from_a_checkpoint(tmp_path):
    model = tiny_classifier()
    torch.save({"multimodal_task": "ImageClassifier", "hyper_parameters": dict(model.hparams),
                "state_dict": model.state_dict()}, tmp_path / "model.ckpt")
    result = run_script("export", "--checkpoint", tmp_path / "model.ckpt", "--out", tmp_path / "exported", "--json")
    assert json.loads(result.stdout)["weights"].endswith("model.safetensors")
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path / "exported")(images), model(images))


def test_export_script_errors_and_help(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert "none.ckpt: no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--help"])
    assert "safetensors" in capsys.readouterr().out


def test_broken_exports_are_refused(tmp_path):
    export_task(tiny_classifier(), tmp_path / "out")
    with pytest.raises(InputError, match="config.json: not an exported model folder"):
        load_exported(tmp_path)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    config["hyper_parameters"]["vit"]["transformer"]["dim"] = 48
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"model.safetensors: weights do not fit the model; wrong shapes"):
        load_exported(tmp_path / "out")
