#!/usr/bin/env python
"""Time to a target quality, as MLPerf Training counts it: train a recipe, evaluate on its validation data on
a fixed schedule (the evaluation time counted), stop when every target is met, then score the test data.

    python benchmarks/time_to_quality.py mnist --seeds 0 1 2 --json
    python benchmarks/time_to_quality.py speech --seeds 0      # needs the recipe's data: see its header
    python benchmarks/time_to_quality.py clip --seeds 0        # writes its data first; validates on seed 3's
    python benchmarks/time_to_quality.py mnist -- --trainer.max_epochs 60   # a variant: overrides after --
Wall time is the whole `multimodal train fit` process (start-up, data set-up, training and evaluations), on
this machine as it is. A run that ends without meeting its targets is reported as a miss with its best
figures. Each run writes under runs/time_to_quality/NAME/seed_S/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl

from multimodal.cli.models import BUILDS, EVAL_STYLES, clip_scores

ROOT = Path(__file__).resolve().parents[1]


class StopAtTarget(pl.Callback):
    """After each validation, append the epoch, the seconds since the process started and the monitored
    metrics to ``report`` (JSON lines), and stop training once every metric has met its target
    (``targets``: name -> [">=" or "<=", value])."""

    def __init__(self, targets: dict[str, list], report: str):
        self.targets, self.report = targets, Path(report)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {name: float(trainer.callback_metrics[name]) for name in self.targets}
        met = all(v >= t if op == ">=" else v <= t for v, (op, t) in zip(values.values(), self.targets.values()))
        seconds = time.time() - float(os.environ["TIME_TO_QUALITY_START"])
        with open(self.report, "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch + 1, "seconds": seconds, "met": met, **values}) + "\n")
        if met:
            trainer.should_stop = True


class CLIPTargets(pl.Callback):
    """After each validation, log the CLIP's scores on a `make-data shapes` folder as ``target/NAME``: zero-shot
    over the 48 classes and the 6 shapes, text->image R@1 over distinct two-object scenes (what the task's own
    validation, on scenes that repeat, does not measure)."""

    def __init__(self, data: str):
        self.data = Path(data)

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        scores = clip_scores(module.model, self.data, quiet=True)
        module.log_dict({f"target/{k}": v for k, v in scores.items()}, rank_zero_only=True)


def mnist_test(checkpoint: Path) -> dict:
    from multimodal.cli.make_data import main as make_data
    from multimodal.inference.classify import classify, collect
    from multimodal.loading import load_model

    if not (ROOT / "data/mnist/test").is_dir():
        make_data(["mnist", str(ROOT / "data/mnist")])
    model = load_model(checkpoint)
    return {"top1": classify(model, collect([ROOT / "data/mnist/test"], model.class_names), quiet=True)["accuracy"]["top1"]}


def speech_test(checkpoint: Path) -> dict:
    from multimodal.inference.transcribe import transcribe_manifest
    from multimodal.loading import load_model

    result = transcribe_manifest(load_model(checkpoint), ROOT / "data/speech_eval/test.jsonl", quiet=True)
    return {"wer": result["wer"], "cer": result["cer"]}


def clip_test(checkpoint: Path) -> dict:
    from multimodal.loading import load_model

    return clip_scores(load_model(checkpoint), ROOT / "data/shapes_eval", quiet=True)


@dataclass(frozen=True)
class Target:
    config: str
    targets: dict[str, list]
    test: Callable[[Path], dict]
    test_data: str
    overrides: tuple[str, ...] = ()
    data: tuple[tuple[str, ...], ...] = ()  # `multimodal` commands writing data the run needs, skipped if written


# drawn as the test's in-style half is (four styles, 60 images a class), so a run stops where the test agrees
CLIP_VALIDATION = ("make-data", "shapes", "data/shapes_validation", "--train-size", "0", "--test-size", "0",
                   "--retrieval-size", "1000", "--zero-shot-per-class", "60", "--seed", "3",
                   "--styles", *(style for style in EVAL_STYLES if style != "texture"))


TARGETS = {
    "mnist": Target("configs/vit_mnist.yaml", {"val/top1": [">=", 0.98]}, mnist_test,
                    "the 1,000 MNIST-5k test digits, which are also the validation digits (MNIST-5k has no others)",
                    ("--trainer.check_val_every_n_epoch", "1")),
    "speech": Target("configs/asr_shapes_cpu.yaml", {"val/wer": ["<=", 0.05]}, speech_test,
                     "data/speech_eval/test.jsonl: 200 clips of held-out voices, seed 1 (validation: seed 0's)"),
    "clip": Target("configs/clip_shapes_cpu.yaml",
                   {"target/text_to_image_R@1": [">=", 0.8], "target/zero_shot_48_classes": [">=", 0.9],
                    "target/zero_shot_6_shapes": [">=", 0.98]}, clip_test,
                   "data/shapes_eval: 2,880 zero-shot images and 1,000 distinct two-object scenes drawn with seed 1 "
                   "(validation: data/shapes_validation, seed 3, the same four styles, 2,880 + 1,440 images and 1,000 "
                   "scenes)",
                   ("--trainer.callbacks+=time_to_quality.CLIPTargets", "--trainer.callbacks.data",
                    str(ROOT / "data/shapes_validation")), (*map(tuple, BUILDS["shapes-clip"].data), CLIP_VALIDATION)),
}


def checkpoint_of(config: Path) -> Path:
    """Where the recipe's ModelCheckpoint writes last.ckpt, relative to the working folder."""
    import yaml

    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    (dirpath,) = [c["init_args"]["dirpath"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    return Path(dirpath) / "last.ckpt"


def run(name: str, seed: int, overrides: list[str] = ()) -> dict:
    """One training run in its own folder (runs/ under it; data/ a link to the checkout's), stopped at target."""
    spec = TARGETS[name]
    for command in spec.data:
        if not (ROOT / command[2]).exists():
            subprocess.run([sys.executable, "-m", "multimodal", *command], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = ROOT / "runs/time_to_quality" / name / f"seed_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data").exists():
        (out / "data").symlink_to(ROOT / "data", target_is_directory=True)
    report = out / "validations.jsonl"
    report.unlink(missing_ok=True)
    config = ROOT / spec.config
    command = [sys.executable, "-m", "multimodal", "train", "fit", "--config", str(config), "--seed_everything",
               str(seed), "--trainer.enable_progress_bar", "false", "--trainer.callbacks+=time_to_quality.StopAtTarget",
               "--trainer.callbacks.targets", json.dumps(spec.targets), "--trainer.callbacks.report", str(report),
               *spec.overrides, *overrides]
    start = time.time()
    env = {**os.environ, "TIME_TO_QUALITY_START": repr(start),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    subprocess.run(command, cwd=out, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - start
    validations = [json.loads(line) for line in report.read_text().splitlines()]
    reached = next((v for v in validations if v["met"]), None)
    return {"seed": seed, "reached": reached is not None, "wall_seconds": round(wall, 1),
            "seconds_to_target": round(reached["seconds"], 1) if reached else None,
            "epochs": reached["epoch"] if reached else validations[-1]["epoch"],
            "test": spec.test(out / checkpoint_of(config)), "validations": validations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    # after --: `multimodal train fit` options that make a variant of the recipe
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(overrides) - ("--" in argv)])
    spec = TARGETS[args.name]
    runs = [run(args.name, seed, overrides) for seed in args.seeds]
    times = [r["seconds_to_target"] for r in runs if r["reached"]]
    result = {"recipe": spec.config, "overrides": overrides, "targets": spec.targets, "test_data": spec.test_data,
              "runs": runs,
              "median_seconds_to_target": statistics.median(times) if len(times) == len(runs) else None,
              "missed": [r["seed"] for r in runs if not r["reached"]]}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for r in runs:
        reached = f"target in {r['seconds_to_target']:.0f} s" if r["reached"] else "MISSED the target"
        print(f"seed {r['seed']}: {reached}, {r['epochs']} epochs, test {r['test']} (process {r['wall_seconds']:.0f} s)")
    if result["median_seconds_to_target"] is not None:
        print(f"median time to target: {result['median_seconds_to_target']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
