"""Every recipe in configs/ parses and runs one batch of fit (fast_dev_run), from a fresh working folder
whose data/ holds tiny versions of the data sets that the recipes name (as make_data.py writes them)."""

import os

import pytest
import torch
import yaml
from conftest import ROOT, run_main
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from multimodal.data.shapes import STYLES

CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))


@pytest.fixture(scope="session")
def recipe_data(shape_folders, tmp_path_factory):
    data = tmp_path_factory.mktemp("recipes") / "data"
    data.mkdir()
    os.symlink(shape_folders, data / "shape_classes")
    for args in (("speech", data / "speech", "--train-size", 8, "--test-size", 4),  # asr_*.yaml
                 # asr_robust_cpu.yaml trains on the formant voices only
                 ("speech", data / "speech_robust", "--train-size", 8, "--test-size", 4, "--sources", "formant",
                  "--prosody", "wide"),
                 ("shapes", data / "shapes_pairs", "--train-size", 16, "--test-size", 8,  # clip_*.yaml
                  "--retrieval-size", 2, "--zero-shot-per-class", 1, "--image-size", 32),
                 ("shapes", data / "shapes_clip_cpu", "--train-size", 16, "--test-size", 8,  # clip_shapes_cpu.yaml
                  "--retrieval-size", 2, "--zero-shot-per-class", 1, "--image-size", 32, "--styles", *STYLES,
                  "--hold-out-style", "texture", "--colorless-fraction", 0.25),
                 ("spoken-shapes", data / "spoken_shapes", "--train-size", 8, "--test-size", 4,  # speech_clip_*.yaml
                  "--retrieval-size", 4)):
        status, _, err = run_main("make_data", *args)
        assert status == 0, err
    return data


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_recipe_runs_with_fast_dev_run(config, recipe_data, tmp_path):
    os.symlink(recipe_data, tmp_path / "data")
    status, _, err = run_main("train", "fit", "--config", config, "--trainer.fast_dev_run", "true",
                              "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert not status, err[-3000:]


class _Interrupt(Exception):
    pass


class _InterruptInSecondEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise _Interrupt


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_recipe_keeps_a_last_checkpoint_through_an_interruption(config, tmp_path):
    """A run stopped part-way (Ctrl-C, a lost machine) leaves last.ckpt of its last finished epoch, so that
    ``--ckpt_path`` can resume it. Lightning's ``save_last`` alone writes nothing until training ends when
    ``save_top_k`` is 0."""
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    (args,) = [c["init_args"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    checkpoint = ModelCheckpoint(**{**args, "dirpath": tmp_path})
    trainer = Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[checkpoint, _InterruptInSecondEpoch()])
    with pytest.raises(_Interrupt):
        trainer.fit(BoringModel())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 0
