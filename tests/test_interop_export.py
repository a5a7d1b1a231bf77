"""save_model / load_model: a model as safetensors + JSON config, and back; our Lightning checkpoints; the
export script; checkpoints and exports written before the models were apart from the tasks."""

import dataclasses
import importlib.util
import json
import math

import lightning as L
import pytest
import torch
from conftest import ROOT, run_script
from safetensors.torch import save_file

from multimodal.errors import InputError
from multimodal.loading import load_model, save_model
from multimodal.models import CLIP, Classifier, SpeechToText
from multimodal.tasks import ImageClassifier, Task
from multimodal.tokenizers import CharTokenizer

VIT = {"image_size": 32, "patch_size": 8, "channels": 3,
       "transformer": {"dim": 32, "depth": 2, "num_heads": 2, "activation": "quick_gelu"}}
NORMALISATION = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.25)}


def tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    model = Classifier({"vit": VIT, **NORMALISATION}, ["cat", "dog", "fox"])
    torch.nn.init.normal_(model.head.weight)  # a trained head, not the zeros of a fresh one
    return model.eval()


def save_checkpoint(task: Task, path):
    """``task``'s checkpoint as Lightning writes it in training (hyper-parameters, ``model.``-prefixed weights,
    and what the task's on_save_checkpoint adds)."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path, weights_only=False)
    return path


def test_export_round_trip_gives_the_same_logits(tmp_path):
    model = tiny_classifier()
    assert save_model(model, tmp_path / "out") == tmp_path / "out"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["format"] == "multimodal-export" and config["version"] == 2
    assert config["model"] == "Classifier" and config["class_names"] == ["cat", "dog", "fox"]
    assert config["config"]["mean"] == [0.4, 0.5, 0.6] and config["config"]["vit"]["transformer"]["dim"] == 32
    loaded = load_model(tmp_path / "out")
    assert isinstance(loaded, Classifier) and loaded.class_names == model.class_names and not loaded.training
    assert loaded.describe() == model.describe()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_export_script_from_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    task = ImageClassifier(vit=VIT, class_names=["cat", "dog", "fox"], **NORMALISATION)
    torch.nn.init.normal_(task.model.head.weight)
    checkpoint = torch.load(save_checkpoint(task, tmp_path / "model.ckpt"), weights_only=True)
    assert checkpoint["multimodal_task"] == "ImageClassifier" and checkpoint["multimodal_model"] == task.model.describe()
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])
    result = run_script("export", "--checkpoint", tmp_path / "model.ckpt", "--out", tmp_path / "exported", "--json")
    assert json.loads(result.stdout)["weights"].endswith("model.safetensors")
    exported = load_model(tmp_path / "exported")
    assert isinstance(exported, Classifier) and exported.describe() == task.model.describe()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(exported(images), task.model.eval()(images))


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
    save_model(tiny_classifier(), tmp_path / "out")
    with pytest.raises(InputError, match="config.json: not an exported model folder"):
        load_model(tmp_path)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    config["config"]["vit"]["transformer"]["dim"] = 48
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"model.safetensors: weights do not fit the model; wrong shapes"):
        load_model(tmp_path / "out")


# --- files written before the models were apart from the tasks -------------------------------------------

TEXT = {"context_length": 16, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
ENCODER = {"num_masks": 0, "max_frames": 100, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
DECODER = {"context_length": 12, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}


def old_task(kind: str):
    """A model, and the task name and hyper-parameters the code of before saved it with: the task's
    constructor arguments, with what the data decided (class names, a tokenizer) filled in. That code's
    state dicts were the model's, its keys without the ``model.`` prefix."""
    torch.manual_seed(0)
    common = {"lr": 0.001, "warmup_fraction": 0.05}
    if kind == "ImageClassifier":
        model = tiny_classifier()
        hparams = {"vit": VIT, "class_names": ["cat", "dog", "fox"], **common, "weight_decay": 0.05,
                   "label_smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0, **NORMALISATION}
    elif kind == "ImageTextContrastive":  # SigLIP: the model has a logit bias
        tokenizer = CharTokenizer(list("abc "))
        model = CLIP({"vit": VIT, "text": TEXT, "embed_dim": 16, "init_logit_scale": math.log(10.0),
                      "init_logit_bias": -10.0}, tokenizer)
        with torch.no_grad():
            model.logit_bias.fill_(-3.5)  # trained away from its initial value
        hparams = {"vit": VIT, "text": dataclasses.asdict(model.config.text), "embed_dim": 16, "loss": "siglip",
                   "tokenizer": tokenizer.to_dict(), "tokenizer_vocab_size": 1000, "init_image_tower_from": None,
                   "lock_image_tower": False, **common, "weight_decay": 0.1, "mean": (0.5,), "std": (0.5,)}
    else:
        tokenizer = CharTokenizer(list("ab "))
        model = SpeechToText({"encoder": ENCODER, "decoder": DECODER, "beam_size": 2}, tokenizer)
        hparams = {"encoder": ENCODER, "decoder": {**DECODER, "vocab_size": tokenizer.vocab_size},
                   "tokenizer": tokenizer.to_dict(), "ctc_weight": 0.3, "label_smoothing": 0.1, "beam_size": 2,
                   "length_penalty": 1.0, **common, "weight_decay": 0.01}
    return model.eval(), hparams


def same_model(loaded, model) -> bool:
    """The same kind, weights and description."""
    state, own = loaded.state_dict(), model.state_dict()
    return (type(loaded) is type(model) and not loaded.training and state.keys() == own.keys()
            and all(torch.equal(v, own[k]) for k, v in state.items()) and loaded.describe() == model.describe())


@pytest.mark.parametrize("kind", ["ImageClassifier", "ImageTextContrastive", "SpeechRecognizer"])
def test_old_checkpoints_and_version_1_exports_still_load(kind, tmp_path):
    model, hparams = old_task(kind)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert not any(k.startswith("model.") for k in state)
    # the checkpoint: the task's name, hyper-parameters and weights; no multimodal_model entry
    torch.save({"multimodal_task": kind, "hyper_parameters": hparams, "state_dict": state, "epoch": 3,
                "global_step": 120}, tmp_path / "old.ckpt")
    assert same_model(load_model(tmp_path / "old.ckpt"), model)
    # the exported folder of version 1: the task and its hyper-parameters as JSON (tuples as lists)
    (tmp_path / "exported").mkdir()
    save_file(state, tmp_path / "exported" / "model.safetensors", metadata={"task": kind})
    (tmp_path / "exported" / "config.json").write_text(json.dumps(
        {"format": "multimodal-export", "version": 1, "task": kind, "hyper_parameters": hparams}, indent=2) + "\n")
    assert same_model(load_model(tmp_path / "exported"), model)
    expected = type(model)
    other = Classifier if expected is not Classifier else SpeechToText
    assert load_model(tmp_path / "old.ckpt", expect=expected).describe() == load_model(tmp_path / "old.ckpt").describe()
    with pytest.raises(InputError, match=rf"old.ckpt: this is an? {expected.__name__} checkpoint; an? {other.__name__} "
                                         r"is needed here"):
        load_model(tmp_path / "old.ckpt", expect=other)
    with pytest.raises(InputError, match=rf"exported: this is an? {expected.__name__}; an? {other.__name__} is needed"):
        load_model(tmp_path / "exported", expect=other)
