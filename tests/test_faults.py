"""Faults a training run meets: a checkpoint that is not what it claims (pickled code, another task's), a full disk
during a save, a scheduler's SIGTERM part-way through an epoch."""

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, run_main, run_script
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from multimodal.encoders import ViTConfig
from multimodal.errors import InputError
from multimodal.tasks import ImageClassifier
from multimodal.tasks.checkpointing import SafeCheckpointIO

RECIPE = ROOT / "configs/tiny/vit_folder.yaml"
LAST = "runs/tiny_vit/checkpoints/last.ckpt"  # the recipe's ModelCheckpoint: where --ckpt_path last looks


def recipe(shape_folders, *args) -> list:
    return ["fit", "--config", RECIPE, "--data.init_args.root", shape_folders / "train",
            "--trainer.enable_progress_bar", "false", *args]


def train(*args, cwd, env: dict | None = None) -> subprocess.Popen:
    """scripts/train.py in its own process, started (``communicate()`` waits for it)."""
    return subprocess.Popen([sys.executable, str(ROOT / "scripts/train.py"), *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


class _Payload:
    """Unpickled, it creates its marker file: code that a checkpoint must never get to run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("override", [False, True], ids=["plain", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
@pytest.mark.parametrize("how", ["path", "last"])
def test_resume_refuses_a_pickled_checkpoint(shape_folders, tmp_path, monkeypatch, how, override):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / (LAST if how == "last" else "evil.ckpt")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"multimodal_task": "ImageClassifier", "payload": _Payload(marker)}, checkpoint)
    if override:  # makes torch.load unpickle anything where weights_only is left unset (Lightning's own loads)
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train"])  # else LightningCLI warns that pytest's arguments are not its own
    rc, _, stderr = run_main("train", *recipe(shape_folders, "--ckpt_path", "last" if how == "last" else checkpoint))
    assert rc == 2
    (line,) = stderr.strip().splitlines()  # one line, naming the file
    assert line.startswith(f"error: {LAST if how == 'last' else checkpoint}: refused: it holds pickled objects"), line
    with pytest.raises(InputError, match="refused: it holds pickled objects"):  # Lightning's own loads too
        SafeCheckpointIO().load_checkpoint(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("override", [False, True], ids=["plain", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def test_resume_refuses_another_tasks_checkpoint_before_building_anything(shape_folders, tmp_path, monkeypatch,
                                                                          override):
    """LightningCLI took the file's ``_class_path``: the other task's model replaced the recipe's."""
    if override:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    other = {"multimodal_task": "SpeechRecognizer", "pytorch-lightning_version": "2.6.0", "state_dict": {},
             "hyper_parameters": {"_class_path": "multimodal.tasks.SpeechRecognizer"}, "loops": {},
             "optimizer_states": []}
    torch.save(other, tmp_path / "asr.ckpt")
    (tmp_path / LAST).parent.mkdir(parents=True)
    shutil.copy(tmp_path / "asr.ckpt", tmp_path / LAST)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train"])
    for ckpt_path, named in [(tmp_path / "asr.ckpt", tmp_path / "asr.ckpt"), ("last", LAST)]:
        rc, _, stderr = run_main("train", *recipe(shape_folders, "--ckpt_path", ckpt_path))
        assert rc == 2 and stderr.strip().splitlines() == [
            f"error: {named}: this is a SpeechRecognizer checkpoint; the recipe trains an ImageClassifier"]
    rc, _, stderr = run_main("train", *recipe(shape_folders, "--ckpt_path", tmp_path / "none.ckpt"))
    assert rc == 2 and stderr.strip() == f"error: {tmp_path / 'none.ckpt'}: no such checkpoint file"


@pytest.mark.parametrize(("config", "setting", "reason"), [
    ("tiny/clip_tiny.yaml", ["--model.init_args.vit.stem", "foo"], "vit stem must be 'patch' or 'conv', got 'foo'"),
    ("tiny/asr_tiny.yaml", ["--data.init_args.augment.noise", "3"], "augment noise is a probability between 0 and 1"),
    ("tiny/asr_tiny.yaml", ["--data.init_args.speeds", "[0.9, 0]"], "speeds must be positive factors"),
    ("tiny/clip_tiny.yaml", ["--data.init_args.augment", "{hflip: 2}"], "augment hflip is a probability between 0 and 1"),
    ("tiny/clip_tiny.yaml", ["--data.init_args.augment", "{zoom: 0.5, scale: [0.5, 1.5]}"],
     "augment scale must be [low, high] within [0.1, 1.0]"),
])
def test_a_recipe_setting_its_class_refuses_is_one_line(config, setting, reason, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train"])
    rc, out, stderr = run_main("train", "fit", "--config", ROOT / "configs" / config, *setting)
    assert rc == 2 and out == "" and "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: a setting of the recipe is refused: ") and reason in line


def test_every_way_into_a_task_checks_the_checkpoints_task():
    task = ImageClassifier(ViTConfig(image_size=32, patch_size=8), class_names=["a", "b"])
    with pytest.raises(InputError, match="this is an ImageTextContrastive checkpoint; this run trains an ImageClassifier"):
        task.on_load_checkpoint({"multimodal_task": "ImageTextContrastive", "state_dict": {},
                                 "pytorch-lightning_version": "2.6.0"})


def test_recipes_save_through_the_safe_checkpoint_io(shape_folders, monkeypatch):
    from lightning import LightningDataModule

    from multimodal.cli.train import CLI
    from multimodal.tasks import Task

    monkeypatch.setattr(sys, "argv", ["train"])
    cli = CLI(Task, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
              args=["--config", str(RECIPE), "--data.init_args.root", str(shape_folders / "train")])
    assert isinstance(cli.trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_a_save_that_fails_on_a_full_disk_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save, saves, before = torch.save, [], {}

    def full_disk(obj, f, *args, **kwargs):  # the second save: a few bytes written, then ENOSPC
        saves.append(f.name)
        if len(saves) == 2:
            before["bytes"] = (tmp_path / "last.ckpt").read_bytes()
            f.write(b"PK\x03\x04 and then the disk was full")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", save_top_k=1, enable_version_counter=False)
    trainer = Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint],
                      plugins=[SafeCheckpointIO()])
    with pytest.raises(InputError, match="last.ckpt: cannot write the checkpoint .No space left on device.; the "
                                         "previous checkpoint is left as it was"):
        trainer.fit(BoringModel())
    assert all(os.path.dirname(name) == str(tmp_path) for name in saves)  # written beside the target, not in /tmp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left
    assert (tmp_path / "last.ckpt").read_bytes() == before["bytes"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 0


TERM_AT = """
import os, signal
import lightning as L

class TermAt(L.Callback):
    '''SIGTERM to this process, as a scheduler sends it, after batch $TERM_AT = "EPOCH:BATCH".'''
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == tuple(map(int, os.environ["TERM_AT"].split(":"))):
            os.kill(os.getpid(), signal.SIGTERM)
"""


def test_sigterm_mid_epoch_then_resume_ends_as_the_uninterrupted_run(shape_folders, tmp_path):
    """The recipe has 4 batches an epoch and 2 epochs; TERM comes after the second batch of the second epoch.
    The resumed run skips the batches already trained on and draws the rest with the same random states."""
    (tmp_path / "term_at.py").write_text(textwrap.dedent(TERM_AT))
    (whole := tmp_path / "whole").mkdir()
    (stopped := tmp_path / "stopped").mkdir()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])), "TERM_AT": "1:1"}
    runs = [train(*recipe(shape_folders), cwd=whole),
            train(*recipe(shape_folders, "--trainer.callbacks+=term_at.TermAt"), cwd=stopped, env=env)]
    (_, whole_err), (_, stopped_err) = (run.communicate() for run in runs)
    assert runs[0].returncode == 0, whole_err
    assert runs[1].returncode == 143 and "Traceback" not in stopped_err, stopped_err
    assert stopped_err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM in epoch 1 at step 6; saved {stopped / LAST}: run the same command with --ckpt_path "
        "last to go on")
    saved = torch.load(stopped / LAST, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 6)  # mid-epoch: where the TERM came

    run_script("train", *recipe(shape_folders, "--ckpt_path", "last"), cwd=stopped)
    expected, resumed = (torch.load(folder / LAST, weights_only=True) for folder in (whole, stopped))
    assert (resumed["epoch"], resumed["global_step"]) == (expected["epoch"], expected["global_step"]) == (1, 8)
    assert expected["state_dict"].keys() == resumed["state_dict"].keys()
    assert all(torch.equal(expected["state_dict"][k], resumed["state_dict"][k]) for k in expected["state_dict"])
    for a, b in zip(*(d["optimizer_states"][0]["state"].values() for d in (expected, resumed)), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
