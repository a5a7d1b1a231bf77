#!/usr/bin/env python
"""Train, validate, test or predict with any recipe in configs/ (LightningCLI).

    python scripts/train.py fit --config configs/vit_mnist.yaml
    python scripts/train.py test --config configs/vit_mnist.yaml --ckpt_path runs/vit_mnist/.../last.ckpt
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L
from lightning.pytorch.cli import LightningCLI

from multimodal.tasks import Task


def main(args: list[str] | None = None) -> LightningCLI:
    return LightningCLI(Task, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                        save_config_kwargs={"overwrite": True}, args=args)


if __name__ == "__main__":
    main()
