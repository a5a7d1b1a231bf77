#!/usr/bin/env python
"""The project in a few minutes on a laptop CPU: make data, train, and use what was trained.

Every step runs one of the scripts exactly as you would type it; the commands are printed first.
Data goes to data/, checkpoints to runs/ (where the recipes put them).
"""

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("data")


def step(title: str, *command: str, tail: int = 0) -> None:
    """Run one command; with ``tail``, show only the last lines of its output (long listings)."""
    print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    argv = [sys.executable if c == "python" else c for c in command]
    if tail:
        out = subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.splitlines()
        print("  …\n" * (len(out) > tail) + "\n".join(out[-tail:]))
    else:
        subprocess.run(argv, check=True, cwd=ROOT)
    print(f"({time.perf_counter() - start:.0f} s)", flush=True)


def image_classification(epochs: int) -> None:
    step("MNIST-5k digits as PNG folders (4,000 train / 1,000 test, offline)",
         "python", "scripts/make_data.py", "mnist", str(DATA / "mnist"))
    step(f"train a small ViT on the 4,000 training digits ({epochs} epochs; configs/vit_mnist.yaml trains longer)",
         "python", "scripts/train.py", "fit", "--config", "configs/vit_mnist.yaml", "--trainer.max_epochs", str(epochs))
    step("classify the 1,000 held-out digits (one sub-folder per class, so accuracy is reported)",
         "python", "scripts/classify.py", "--checkpoint", "runs/vit_mnist/checkpoints/last.ckpt",
         str(DATA / "mnist/test"), "--top-k", "3", tail=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the image classifier")
    args = parser.parse_args()
    start = time.perf_counter()
    image_classification(args.epochs)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
