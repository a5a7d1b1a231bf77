"""Train, validate, test or predict with any recipe in configs/ (LightningCLI).

    multimodal train fit --config configs/vit_mnist.yaml
    multimodal train test --config configs/vit_mnist.yaml --ckpt_path runs/vit_mnist/checkpoints/last.ckpt
    multimodal train fit --config configs/vit_mnist.yaml --ckpt_path last   # resume a stopped run
    multimodal train fit --config configs/vit_shapes.yaml --pretrained MODEL
--pretrained (or `pretrained:` in a recipe) starts fit from the weights of a model of the recipe's task: a
.ckpt, an exported folder, or timm / OpenCLIP / Whisper weights; --ckpt_path, which resumes, still wins.

--ckpt_path is read weights-only and must be a checkpoint of the recipe's task, checked before anything is built;
checkpoints are saved atomically (multimodal.tasks.checkpointing.SafeCheckpointIO). SIGTERM (a scheduler's stop)
saves the run to last.ckpt at the end of the running batch and exits with status 143; `--ckpt_path last` then
goes on exactly as the uninterrupted run would have.
"""

import importlib
import sys

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from multimodal.errors import InputError
from multimodal.inference.common import CHECKPOINT_HELP, script_main
from multimodal.loading import load_model
from multimodal.tasks import Task
from multimodal.tasks.checkpointing import (
    SIGTERM_STATUS,
    SafeCheckpointIO,
    check_checkpoint,
    find_last,
    read_checkpoint,
    stopped_message,
)


class CLI(LightningCLI):
    """LightningCLI with --pretrained: the model is loaded here, and its weights copied by the task's
    configure_model, once the data have sized it."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--pretrained", type=str | None, default=None,
                            help=f"fit: start from a model of the recipe's task: {CHECKPOINT_HELP}")

    def before_fit(self) -> None:
        if path := self.config.fit.pretrained:
            self.model.start_from(load_model(path, expect=self.model.model_class), path)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's own reads a --ckpt_path file's hyper-parameters into the model's config, its
        ``_class_path`` included: another task's checkpoint replaced the recipe's model. Here the file (or, for
        ``last``, the one Lightning will pick in the recipe's ModelCheckpoint folders) is read weights-only and
        checked against the recipe's task first; a file's hyper-parameters are then taken for the recipe's class."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config else None
        if not ckpt_path:
            return
        class_path = config.model.class_path
        module, _, name = class_path.rpartition(".")
        task = getattr(importlib.import_module(module), name).__name__
        resume = subcommand == "fit"
        if ckpt_path == "last":
            if path := find_last(_checkpoint_folders(config)):
                check_checkpoint(read_checkpoint(path), path, task, resume=resume)
            return
        if ckpt_path in ("best", "hpc") or "://" in str(ckpt_path) or str(ckpt_path).startswith("registry:"):
            return  # Lightning's own: the run's best checkpoint, SLURM's, a remote or a model registry's one
        checkpoint = check_checkpoint(read_checkpoint(ckpt_path), ckpt_path, task, resume=resume)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        for key in ("_instantiator", "_class_path"):
            hparams.pop(key, None)
        if hparams:
            self.config = self.parser.parse_object(
                {subcommand: {"model": {"class_path": class_path, "dict_kwargs": hparams}}}, self.config)

    def instantiate_classes(self) -> None:
        """A recipe value that its class refuses (a ViT stem that does not exist, a probability of 3) is one line,
        the class's own reason, instead of jsonargparse's traceback through every type the value was tried as."""
        try:
            super().instantiate_classes()
        except InputError:
            raise
        except ValueError as e:
            reasons = [line.strip()[2:] for line in str(e).splitlines() if line.strip().startswith("- ")]
            reasons = [r for r in reasons if not r.startswith(("Does not validate", "Expected a "))]
            raise InputError(f"a setting of the recipe is refused: {(reasons or [str(e)])[0]}") from None

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The trainer of the recipe, its checkpoints written and read by SafeCheckpointIO unless the recipe names
        a CheckpointIO of its own, and in the recipe's precision unless ``cpu_precision`` says float32."""
        trainer = self._get(self.config_init, "trainer", default={})
        plugins = trainer.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(SafeCheckpointIO())
        precision = cpu_precision(trainer.get("precision"), trainer.get("accelerator", "auto"))
        return super().instantiate_trainer(**{"plugins": plugins, "precision": precision, **kwargs})


def cpu_precision(precision, accelerator) -> str | int | None:
    """The recipe's precision, except bf16 on a CPU that has no bf16 matrix instructions (AVX-512 BF16 or AMX):
    there PyTorch emulates bf16 matrix products, about 8x slower than float32 ones (an AVX2 EPYC, torch 2.11), so
    the run trains in float32 and says so. A CPU recipe may then ask for bf16-mixed, which pays where AMX is."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                      and not torch.backends.mps.is_available())
    if on_cpu and str(precision).startswith("bf16") and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        rank_zero_warn(f"this CPU has no bf16 matrix instructions (AVX-512 BF16 or AMX): precision {precision} would "
                       "run several times slower than float32 here, so this run trains in float32")
        return "32-true"
    return precision


def _checkpoint_folders(config) -> list[str]:
    """The dirpaths of the recipe's ModelCheckpoint callbacks."""
    folders = []
    for callback in config.trainer.get("callbacks") or []:
        class_path, init_args = callback.get("class_path"), callback.get("init_args") or {}
        module, _, name = (class_path or "").rpartition(".")
        try:
            is_checkpoint = issubclass(getattr(importlib.import_module(module), name), ModelCheckpoint)
        except (ImportError, AttributeError, TypeError, ValueError):
            continue
        if is_checkpoint and init_args.get("dirpath"):
            folders.append(init_args["dirpath"])
    return folders


def build_cli(args: list[str] | None = None) -> LightningCLI:
    return CLI(Task, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
               save_config_kwargs={"overwrite": True}, args=args)


@script_main
def main(argv: list[str] | None = None) -> int | None:
    """The command line: bad input (a missing data file, weights of another task) is one line, exit status 2; a
    run stopped by SIGTERM says where it saved and how to go on, exit status 143."""
    try:
        build_cli(argv)
    except SIGTERMException as stop:  # Lightning's, a SystemExit of status 0
        print(stopped_message(stop), file=sys.stderr)
        return SIGTERM_STATUS


if __name__ == "__main__":
    sys.exit(main())
