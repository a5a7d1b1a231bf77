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

from multimodal.errors import InputError

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


def load_checkpoint(path: str | Path, task_class: type[T]) -> T:
    """The model a script runs: anything ``load_pretrained`` reads (CHECKPOINT_HELP), refused with a clear
    message when it is another task's ("this is a X; a Y is needed here")."""
    from multimodal.interop.pretrained import load_pretrained  # imports Lightning: only scripts that load a model

    return load_pretrained(path, task_class)


def device(name: str | None = None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def batches(items: Sequence[T], size: int, desc: str, quiet: bool = False) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` with a tqdm progress bar on stderr for long work."""
    from tqdm import tqdm

    starts = range(0, len(items), size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=quiet or len(starts) < 2, file=sys.stderr):
        yield items[start:start + size]


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
