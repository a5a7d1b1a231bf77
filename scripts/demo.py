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
         "python", "scripts/train.py", "fit", "--config", "configs/vit_mnist.yaml", "--trainer.max_epochs", str(epochs),
         # a short run: average over the last ~100 steps (25 updates, one every 4 steps), not the recipe's ~500
         "--trainer.callbacks.init_args.decay", "0.96")
    step("classify the 1,000 held-out digits (one sub-folder per class, so accuracy is reported)",
         "python", "scripts/classify.py", "--checkpoint", "runs/vit_mnist/checkpoints/last.ckpt",
         str(DATA / "mnist/test"), "--top-k", "3", tail=4)


def speech_recognition(epochs: int, minutes: int = 2) -> None:
    data = DATA / "speech_demo"  # not data/speech, where asr_shapes.yaml's 20,000 clips go
    step("speak 400 shapes-world sentences and digit strings with espeak-ng (30 test clips in held-out voices)",
         "python", "scripts/make_data.py", "speech", str(data), "--train-size", "400", "--test-size", "30")
    step(f"train a tiny speech recognizer (audio encoder + attention decoder + CTC) for {epochs} epochs, at most "
         f"{minutes} minutes (configs/asr_shapes.yaml is the real recipe, for a GPU)",
         "python", "scripts/train.py", "fit", "--config", "configs/tiny/asr_tiny.yaml",
         "--trainer.max_epochs", str(epochs), "--trainer.max_time", f"00:00:{minutes:02d}:00",
         "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
         "--data.init_args.train_manifest", str(data / "train.jsonl"),
         "--data.init_args.test_manifest", str(data / "test.jsonl"))
    step("transcribe the held-out voices' clips and report WER / CER (minutes of CPU training are far from "
         "what the GPU recipe reaches)",
         "python", "scripts/transcribe.py", "--checkpoint", "runs/tiny_asr/checkpoints/last.ckpt",
         "--manifest", str(data / "test.jsonl"), tail=6)


def image_text(epochs: int, seconds: int = 120) -> None:
    data = DATA / "shapes_pairs_demo"  # not data/shapes_pairs, where clip_shapes.yaml's 20,000 pairs go
    step("render 800 captioned shapes-world scenes (6 colour-shape pairs held out of training), zero-shot "
         "class folders and two-object test scenes",
         "python", "scripts/make_data.py", "shapes", str(data), "--train-size", "800", "--test-size", "64",
         "--retrieval-size", "100", "--zero-shot-per-class", "4", "--image-size", "32")
    step(f"train a tiny CLIP (ViT + text tower, BPE tokenizer trained on the captions) for {epochs} epochs, at most "
         f"{seconds} s (configs/clip_shapes.yaml is the real recipe)",
         "python", "scripts/train.py", "fit", "--config", "configs/tiny/clip_tiny.yaml",
         "--trainer.max_epochs", str(epochs), "--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}",
         "--trainer.enable_progress_bar", "false", "--data.init_args.train", str(data / "train.jsonl"),
         "--data.init_args.val", str(data / "test.jsonl"))
    checkpoint = "runs/tiny_clip/checkpoints/last.ckpt"
    step("zero-shot: name the 48 colour+shape classes in words; seen and never-seen pairs reported apart",
         "python", "scripts/zero_shot.py", "--checkpoint", checkpoint, "--images",
         str(data / "zero_shot/train_pairs"), str(data / "zero_shot/held_out"), tail=3)
    step("index the zero-shot images, then find them by text (a contact sheet of the top 5 is written too)",
         "python", "scripts/retrieve.py", "index", "--checkpoint", checkpoint, "--images", str(data / "zero_shot"),
         "--out", "runs/tiny_clip/shapes.index")
    step("retrieve by text", "python", "scripts/retrieve.py", "query", "--checkpoint", checkpoint,
         "--index", "runs/tiny_clip/shapes.index", "--text", "a large blue square", "--sheet",
         "runs/tiny_clip/query.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the image classifier")
    parser.add_argument("--clip-epochs", type=int, default=4, help="training epochs of the image–text model")
    parser.add_argument("--speech-epochs", type=int, default=2, help="training epochs of the speech recognizer")
    args = parser.parse_args()
    start = time.perf_counter()
    image_classification(args.epochs)
    speech_recognition(args.speech_epochs)
    image_text(args.clip_epochs)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
