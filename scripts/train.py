#!/usr/bin/env python
"""Train, validate, test or predict with any recipe in configs/ (LightningCLI).

    python scripts/train.py fit --config configs/vit_mnist.yaml
    python scripts/train.py test --config configs/vit_mnist.yaml --ckpt_path runs/vit_mnist/checkpoints/last.ckpt
    python scripts/train.py fit --config configs/vit_mnist.yaml --ckpt_path last   # resume a stopped run
    python scripts/train.py fit --config configs/vit_shapes.yaml --pretrained MODEL
--pretrained (or `pretrained:` in a recipe) starts fit from the weights of a model of the recipe's task: a
.ckpt, an exported folder, or timm / OpenCLIP / Whisper weights; --ckpt_path, which resumes, still wins.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L
from lightning.pytorch.cli import LightningCLI

from multimodal.inference.common import CHECKPOINT_HELP, script_main
from multimodal.interop.pretrained import load_pretrained
from multimodal.tasks import Task


class CLI(LightningCLI):
    """LightningCLI with --pretrained: the model is loaded here, and its weights copied by the task's
    configure_model, once the data have sized it."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--pretrained", type=str | None, default=None,
                            help=f"fit: start from a model of the recipe's task: {CHECKPOINT_HELP}")

    def before_fit(self) -> None:
        if path := self.config.fit.pretrained:
            self.model.start_from(load_pretrained(path, type(self.model)), path)


def main(args: list[str] | None = None) -> LightningCLI:
    return CLI(Task, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
               save_config_kwargs={"overwrite": True}, args=args)


@script_main
def run() -> None:
    """The command line: bad input (a missing data file, weights of another task) is one line, exit status 2."""
    main()


if __name__ == "__main__":
    sys.exit(run())
