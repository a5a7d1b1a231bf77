"""Train, validate, test or predict with any recipe in configs/ (LightningCLI).

    multimodal train fit --config configs/vit_mnist.yaml
    multimodal train test --config configs/vit_mnist.yaml --ckpt_path runs/vit_mnist/checkpoints/last.ckpt
    multimodal train fit --config configs/vit_mnist.yaml --ckpt_path last   # resume a stopped run
    multimodal train fit --config configs/vit_shapes.yaml --pretrained MODEL
--pretrained (or `pretrained:` in a recipe) starts fit from the weights of a model of the recipe's task: a
.ckpt, an exported folder, or timm / OpenCLIP / Whisper weights; --ckpt_path, which resumes, still wins.
"""

import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI

from multimodal.inference.common import CHECKPOINT_HELP, script_main
from multimodal.loading import load_model
from multimodal.tasks import Task


class CLI(LightningCLI):
    """LightningCLI with --pretrained: the model is loaded here, and its weights copied by the task's
    configure_model, once the data have sized it."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--pretrained", type=str | None, default=None,
                            help=f"fit: start from a model of the recipe's task: {CHECKPOINT_HELP}")

    def before_fit(self) -> None:
        if path := self.config.fit.pretrained:
            self.model.start_from(load_model(path, expect=self.model.model_class), path)


def build_cli(args: list[str] | None = None) -> LightningCLI:
    return CLI(Task, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
               save_config_kwargs={"overwrite": True}, args=args)


@script_main
def main(argv: list[str] | None = None) -> None:
    """The command line: bad input (a missing data file, weights of another task) is one line, exit status 2."""
    build_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
