"""The models shipped inside the package: list them, or rebuild one from its recipe.

    multimodal models                     # name, task, size, what each scored on which data
    multimodal models build shapes-asr    # data -> train -> evaluate -> multimodal/pretrained/ + registry.json
Building runs the recipe's commands as printed (data already written by the same command is kept), evaluates
the trained model on test data it never saw, in float32 and in half precision, and ships half precision when
it scores the same. The registry entry records the commands, commit, date, machine, training time and scores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from multimodal import pretrained
from multimodal.inference.common import print_json, script_main
from multimodal.loading import load_model
from multimodal.models import Model
from multimodal.outputs import atomic_write
from multimodal.pretrained import read_model_file, registry, sha256, write_model_file

ROOT = Path(__file__).resolve().parents[2]


def mnist_scores(model: Model) -> dict[str, float]:
    from multimodal.inference.classify import classify, collect

    images = collect([ROOT / "data/mnist/test"], model.class_names)
    return {"top1": classify(model, images)["accuracy"]["top1"]}


def speech_scores(model: Model) -> dict[str, float]:
    """WER / CER, greedy and beam 5, on held-out voices; WER per source (espeak-ng's formant, Klatt) too."""
    from multimodal.inference.transcribe import transcribe_manifest

    scores = {}
    for beam in (1, 5):
        result = transcribe_manifest(model, ROOT / "data/speech_eval/test.jsonl", beam_size=beam)
        name = "greedy" if beam == 1 else f"beam{beam}"
        scores.update({f"wer_{name}": result["wer"], f"cer_{name}": result["cer"]})
        scores.update({f"wer_{source}_{name}": r["wer"] for source, r in result.get("by_source", {}).items()})
    return scores


def clip_scores(model: Model, data: Path = ROOT / "data/shapes_eval", quiet: bool = False) -> dict[str, float]:
    """Zero-shot top-1 over the 48 colour+shape classes (and the 6 pairs never in training) and the 6 shapes, and
    text->image R@1 over the distinct two-object scenes, of a `make-data shapes` folder; the same, suffixed with the
    style's name, for a drawing style it holds out (`--hold-out-style`)."""
    from multimodal.data.shapes import STYLES
    from multimodal.inference.retrieval import evaluate
    from multimodal.inference.zero_shot import zero_shot

    classes = zero_shot(model, [data / "zero_shot/train_pairs", data / "zero_shot/held_out"], quiet=quiet)
    shapes = zero_shot(model, [data / "zero_shot/shapes"], quiet=quiet)
    retrieval = evaluate(model, data / "two_object_test.jsonl", quiet=quiet)
    scores = {"zero_shot_48_classes": classes["accuracy"]["top1"],
              "zero_shot_held_out_pairs": classes["accuracy_per_input"][str(data / "zero_shot/held_out")]["top1"],
              "zero_shot_6_shapes": shapes["accuracy"]["top1"],
              "text_to_image_R@1": retrieval["text_to_image"]["R@1"]}
    for style in STYLES:
        if (data / style / "two_object_test.jsonl").is_file():
            scores |= {f"{name}_{style}": v for name, v in clip_scores(model, data / style, quiet).items()}
    return scores


def speech_clip_scores(model: Model) -> dict[str, float]:
    """Speech->image and speech->text R@1 over distinct two-object scenes spoken by held-out voices, per source too,
    and the frozen CLIP's own text->image R@1 on their written captions, the figure it is measured against."""
    from multimodal.inference.retrieval import evaluate_spoken

    result = evaluate_spoken(model, ROOT / "data/spoken_eval/two_object_test.jsonl")
    return {"speech_to_image_R@1": result["speech_to_image"]["R@1"],
            "speech_to_text_R@1": result["speech_to_text"]["R@1"],
            "text_to_image_R@1": result["text_to_image"]["R@1"],
            **{f"speech_to_image_R@1_{source}": r for source, r in result["speech_to_image_R@1_by_source"].items()}}


@dataclass(frozen=True)
class Build:
    recipe: str
    checkpoint: str
    data: list[list[str]]  # `multimodal` commands writing the training data, then the test data
    test_data: str
    evaluate: Callable[[Model], dict[str, float]]
    higher_is_better: bool
    tolerance: float  # half precision ships when every score is within this of float32's


# the evaluation draws the scene's own styles; clutter is a training background only
EVAL_STYLES = ("flat", "gradient", "noise", "outline", "texture")
TRAIN_STYLES = ("flat", "gradient", "noise", "outline", "clutter", "texture")
BUILDS = {
    "mnist-vit": Build(
        "configs/vit_mnist.yaml", "runs/vit_mnist/checkpoints/last.ckpt", [["make-data", "mnist", "data/mnist"]],
        "the 1,000 MNIST-5k test digits (never trained on)", mnist_scores, True, 0.001),
    "shapes-asr": Build(
        "configs/asr_shapes_cpu.yaml", "runs/asr_shapes_cpu/checkpoints/last.ckpt",
        [["make-data", "speech", "data/speech", "--train-size", "6000", "--test-size", "200"],
         ["make-data", "speech", "data/speech_eval", "--train-size", "0", "--test-size", "200", "--seed", "1"]],
        "200 spoken sentences and digit strings in held-out voices, drawn with seed 1 (training validated on "
        "seed 0's)", speech_scores, False, 0.002),
    "shapes-clip": Build(
        "configs/clip_shapes_cpu.yaml", "runs/clip_shapes_cpu/checkpoints/last.ckpt",
        [["make-data", "shapes", "data/shapes_clip_cpu", "--train-size", "32000", "--colorless-fraction", "0.25",
          "--styles", *TRAIN_STYLES, "--hold-out-style", "texture"],
         ["make-data", "shapes", "data/shapes_eval", "--train-size", "100", "--test-size", "100", "--retrieval-size",
          "1000", "--zero-shot-per-class", "60", "--seed", "1", "--styles", *EVAL_STYLES,
          "--hold-out-style", "texture"]],
        "shapes-world scenes drawn with seed 1 (training used seed 0): 2,880 zero-shot images (60 per colour+shape "
        "class, 360 of the 6 pairs never in training) and 1,000 distinct two-object scenes for retrieval, in the "
        "four training styles; and as many in the texture style, never drawn in training (scores suffixed _texture)",
        clip_scores, True, 0.002),
    "shapes-speech-clip": Build(
        "configs/speech_clip_cpu.yaml", "runs/speech_clip_cpu/checkpoints/last.ckpt",
        [["make-data", "spoken-shapes", "data/spoken_shapes", "--train-size", "10000", "--workers", "2"],
         ["make-data", "spoken-shapes", "data/spoken_eval", "--train-size", "0", "--test-size", "0",
          "--retrieval-size", "1000", "--seed", "1", "--workers", "2"]],
        "1,000 distinct two-object scenes drawn with seed 1 (training used seed 0), their captions spoken by "
        "held-out espeak-ng voices", speech_clip_scores, True, 0.002),
}


def run(command: list[str]) -> float:
    """Run ``multimodal COMMAND`` as a user would, from the checkout; its wall time in seconds."""
    print(f"$ multimodal {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "multimodal", *command], cwd=ROOT, check=True)
    return time.perf_counter() - start


def commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    return f"{os.cpu_count()} CPU cores ({names[0] if names else platform.processor() or platform.machine()})"


def worse_by(scores: dict, reference: dict, higher_is_better: bool) -> float:
    return max((reference[k] - scores[k]) if higher_is_better else (scores[k] - reference[k]) for k in reference)


def build(name: str) -> dict:
    spec = BUILDS[name]
    for command in spec.data:
        if not (ROOT / command[2]).exists():
            run(command)
    return register(name, run(["train", "fit", "--config", spec.recipe]))


def register(name: str, training_seconds: float) -> dict:
    """Evaluate the recipe's trained checkpoint, ship it (half precision when that scores the same) and enter it in
    the registry."""
    spec = BUILDS[name]
    train = ["train", "fit", "--config", spec.recipe]
    trained = load_model(ROOT / spec.checkpoint)
    float32 = spec.evaluate(trained)
    path = pretrained.HERE / f"{name}.safetensors"
    write_model_file(trained, path, torch.float16)
    float16 = spec.evaluate(read_model_file(path))
    half = worse_by(float16, float32, spec.higher_is_better) <= spec.tolerance
    if not half:
        write_model_file(trained, path)
    entry = {"model": type(trained).__name__, "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
             "dtype": "float16" if half else "float32", "recipe": spec.recipe,
             "commands": [f"multimodal {shlex.join(c)}" for c in (*spec.data, train)],
             "commit": commit(), "date": datetime.date.today().isoformat(), "machine": machine(),
             "training_seconds": round(training_seconds), "test_data": spec.test_data,
             "scores": float16 if half else float32, "scores_float32": float32}
    entries = {**registry(), name: entry}
    with atomic_write(pretrained.REGISTRY) as temporary:
        temporary.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n", encoding="utf-8")
    return entry


def table(entries: dict[str, dict]) -> str:
    rows = [("name", "model", "size", "scores", "test data")]
    for name, e in entries.items():
        scores = ", ".join(f"{k} {v:.2%}" for k, v in e["scores"].items())
        rows.append((name, e["model"], f"{e['bytes'] / 1e6:.1f} MB {e['dtype']}", scores, e["test_data"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4] for r in rows)


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the registry's entries as JSON")
    sub = parser.add_subparsers(dest="action")
    rebuild = sub.add_parser("build", help="rebuild a shipped model from its recipe (run from a checkout)")
    rebuild.add_argument("name", choices=sorted(BUILDS))
    rebuild.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the new entry as JSON")
    args = parser.parse_args(argv)
    entries = {args.name: build(args.name)} if args.action == "build" else registry()
    if args.json:
        print_json(entries)
    else:
        print(table(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
