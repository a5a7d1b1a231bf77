"""What every script shares: clean errors instead of tracebacks, device choice, batching with a progress bar."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from multimodal.errors import InputError
from multimodal.models.base import ImagePreprocess

T = TypeVar("T")

CHECKPOINT_HELP = ("the name of a shipped model (multimodal models), a .ckpt, an exported folder, or timm / OpenCLIP / "
                   "Whisper weights")


def script_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run a script's main: bad input prints ``error: FILE: reason`` and exits 2; warnings print one line."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        warnings.formatwarning = lambda message, category, *_: f"warning: {message}\n"
        try:
            return main(*args, **kwargs) or 0
        except InputError as e:
            message = str(e)
            if "Original Traceback" in message:  # raised in a DataLoader worker: keep the worker's last line
                message = message.strip().splitlines()[-1].removeprefix(f"{InputError.__module__}.InputError: ")
            print(f"error: {message}", file=sys.stderr)
            return 2

    return wrapper


INT8_HELP = "run on the CPU with the linear layers in int8 (faster; scores beside float32's in docs/RESULTS.md)"


def device(name: str | None = None, int8: bool = False) -> torch.device:
    """The device asked for, else CUDA when available; the CPU for int8 (its only device)."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() and not int8 else "cpu"))


def device_name(name: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:N, mps)."""
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"no device {name!r} here ({torch.cuda.device_count()} CUDA devices)")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("no device 'mps' here")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {name!r}: use cpu, cuda, cuda:N or mps")
    return name


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive = at_least(1)


def batches(items: Sequence[T], size: int, desc: str, quiet: bool = False) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` with a tqdm progress bar on stderr for long work."""
    from tqdm import tqdm

    starts = range(0, len(items), size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=quiet or len(starts) < 2, file=sys.stderr):
        yield items[start:start + size]


def image_batches(preprocess: ImagePreprocess, paths: Sequence[Path], batch_size: int, desc: str, quiet: bool,
                  skipped: list[str]) -> Iterator[tuple[Tensor, list[int]]]:
    """(B, C, H, W) batches of the readable images among ``paths`` and their indices; why each unreadable one
    was skipped goes to ``skipped``, and one warning counts them at the end."""
    for start in batches(range(len(paths)), batch_size, desc, quiet):
        tensors, kept = [], []
        for i in start:
            try:
                tensors.append(preprocess.image(paths[i]))
                kept.append(i)
            except InputError as e:
                skipped.append(str(e))
        if tensors:
            yield torch.stack(tensors), kept
    if skipped and len(skipped) == len(paths):
        raise InputError(f"no readable image among {len(paths)}; the first: {skipped[0]}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): " + "; ".join(skipped[:5]))


def print_json(data) -> None:
    print(json.dumps(data, indent=2))


def print_predictions(result: dict) -> None:
    """One line per image: its top labels with probabilities, and ✓ / ✗ where the true label is known."""
    for r in result["predictions"]:
        top = ", ".join(f"{t['label']} {t['prob']:.2f}" for t in r["top"])
        mark = "" if "true" not in r else ("  ✓" if r["correct"] else f"  ✗ (true: {r['true']})")
        print(f"{r['path']}: {top}{mark}")


def format_scores(scores: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items())
