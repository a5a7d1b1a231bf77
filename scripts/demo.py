"""The project in a few minutes on a laptop CPU: the shipped models on data they never saw, then a training run.

Every step runs a `multimodal` command exactly as you would type it; the commands are printed first.
Data goes to data/, checkpoints and pictures to runs/.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("data")


def step(title: str, *command: str, tail: int = 0) -> None:
    """Run ``multimodal COMMAND``; with ``tail``, show only the last lines of its output (long listings)."""
    print(f"\n== {title}\n$ multimodal {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    argv = [sys.executable, "-m", "multimodal", *command]
    if tail:
        out = subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.splitlines()
        print("  …\n" * (len(out) > tail) + "\n".join(out[-tail:]))
    else:
        subprocess.run(argv, check=True, cwd=ROOT)
    print(f"({time.perf_counter() - start:.0f} s)", flush=True)


def shipped_models() -> list[str]:
    step("the models shipped in the package, and what they scored when they were built", "models")
    step("MNIST-5k digits as PNG folders (4,000 train / 1,000 test, offline)", "make-data", "mnist", str(DATA / "mnist"))
    step("classify the 1,000 test digits with the shipped mnist-vit (one sub-folder per class: accuracy is reported)",
         "classify", "--checkpoint", "mnist-vit", str(DATA / "mnist/test"), "--top-k", "3", tail=4)
    digit = sorted((ROOT / DATA / "mnist/test/7").glob("*.png"))[0].relative_to(ROOT)
    step("where the ViT looks: attention rollout over a test digit", "attention", "--checkpoint", "mnist-vit",
         str(digit), "--out", "runs/demo")
    data = DATA / "speech_demo"
    step("speak 30 new shapes-world sentences and digit strings with espeak-ng voices never used in training",
         "make-data", "speech", str(data), "--train-size", "0", "--test-size", "30", "--seed", "7")
    step("transcribe them with the shipped shapes-asr and report WER / CER", "transcribe", "--checkpoint", "shapes-asr",
         "--manifest", str(data / "test.jsonl"), tail=6)
    data = DATA / "shapes_eval_demo"
    step("draw new shapes-world scenes: 480 single objects of the 48 colour+shape classes (6 pairs never in "
         "training) and 200 distinct two-object scenes; the same again on textured backgrounds, a drawing style "
         "never seen in training", "make-data", "shapes", str(data), "--train-size", "0", "--test-size", "0",
         "--retrieval-size", "200", "--zero-shot-per-class", "10", "--seed", "7", "--styles", "flat", "texture",
         "--hold-out-style", "texture")
    step("zero-shot with the shipped shapes-clip: name the 48 classes in words; never-seen pairs reported apart",
         "zero-shot", "--checkpoint", "shapes-clip", "--images", str(data / "zero_shot/train_pairs"),
         str(data / "zero_shot/held_out"), tail=3)
    step("the same on the textured drawings it never saw", "zero-shot", "--checkpoint", "shapes-clip", "--images",
         str(data / "texture/zero_shot/train_pairs"), str(data / "texture/zero_shot/held_out"), tail=3)
    step("text->image and image->text recall on the two-object scenes (one right image per caption)",
         "retrieve", "eval", "--checkpoint", "shapes-clip", "--pairs", str(data / "two_object_test.jsonl"))
    step("index the two-object scenes", "retrieve", "index", "--checkpoint", "shapes-clip", "--images",
         str(data / "images"), "--out", "runs/demo/scenes.index")
    query = json.loads((ROOT / data / "two_object_test.jsonl").read_text().splitlines()[0])
    step(f"find one of them by its caption (the right image: {query['image']}); a contact sheet of the top 5",
         "retrieve", "query", "--checkpoint", "shapes-clip", "--index", "runs/demo/scenes.index", "--text",
         query["caption"], "--sheet", "runs/demo/query.png")
    data = DATA / "spoken_demo"
    step("speak the captions of 100 new distinct two-object scenes with espeak-ng voices never used in training",
         "make-data", "spoken-shapes", str(data), "--train-size", "0", "--test-size", "0", "--retrieval-size", "100",
         "--seed", "7")
    step("find each picture by voice with the shipped shapes-speech-clip (a speech tower in shapes-clip's space), "
         "beside shapes-clip from the written captions", "retrieve", "eval", "--checkpoint", "shapes-speech-clip",
         "--pairs", str(data / "two_object_test.jsonl"), tail=7)
    step("index their pictures with shapes-clip", "retrieve", "index", "--checkpoint", "shapes-clip", "--images",
         str(data / "images"), "--out", "runs/demo/spoken_scenes.index")
    query = json.loads((ROOT / data / "two_object_test.jsonl").read_text().splitlines()[0])
    step(f"ask that index by voice, {query['caption']!r} (the right image: {query['image']})", "retrieve", "query",
         "--checkpoint", "shapes-speech-clip", "--index", "runs/demo/spoken_scenes.index", "--audio",
         str(data / query["audio"]), "--top-k", "3", "--sheet", "runs/demo/voice_query.png")
    return [f"runs/demo/{digit.stem}_attention.png", "runs/demo/query.png", "runs/demo/voice_query.png"]


def image_text(epochs: int, seconds: int = 120) -> None:
    data = DATA / "shapes_pairs_demo"  # not data/shapes_pairs, where clip_shapes.yaml's 20,000 pairs go
    step("training works: render 800 small captioned scenes (6 colour-shape pairs held out of training) and "
         "zero-shot class folders",
         "make-data", "shapes", str(data), "--train-size", "800", "--test-size", "64",
         "--retrieval-size", "100", "--zero-shot-per-class", "4", "--image-size", "32")
    step(f"train a tiny CLIP (ViT + text tower, BPE tokenizer trained on the captions) for {epochs} epochs, at most "
         f"{seconds} s: it shows that training runs, not what the recipe reaches (configs/clip_shapes_cpu.yaml)",
         "train", "fit", "--config", "configs/tiny/clip_tiny.yaml",
         "--trainer.max_epochs", str(epochs), "--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}",
         "--trainer.enable_progress_bar", "false", "--data.init_args.train", str(data / "train.jsonl"),
         "--data.init_args.val", str(data / "test.jsonl"))
    step("zero-shot with it: far below the shipped model, well above chance (1 in 48)",
         "zero-shot", "--checkpoint", "runs/tiny_clip/checkpoints/last.ckpt", "--images",
         str(data / "zero_shot/train_pairs"), str(data / "zero_shot/held_out"), tail=3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-epochs", type=int, default=15, help="training epochs of the image–text model")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pictures = shipped_models()
    image_text(args.clip_epochs)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; its pictures: {', '.join(pictures)}")


if __name__ == "__main__":
    main()
