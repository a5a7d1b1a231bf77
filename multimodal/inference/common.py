"""What every script shares: clean errors instead of tracebacks, device choice, batching with a progress bar."""

from __future__ import annotations

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

CHECKPOINT_HELP = "a .ckpt, an exported folder, or timm / OpenCLIP / Whisper weights"


def script_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run a script's main: bad input prints ``error: FILE: reason`` and exits 2; warnings print one line."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        warnings.formatwarning = lambda message, category, *_: f"warning: {message}\n"
        try:
            return main(*args, **kwargs) or 0
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper


def device(name: str | None = None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


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
