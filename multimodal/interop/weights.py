"""Reading other projects' weight files safely, and loading converted state dicts strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from multimodal.errors import InputError


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from .safetensors, or .pt / .pth / .bin / .ckpt through torch.load(weights_only=True).

    Common wrappers ({"state_dict": …}, {"model": …}, {"model_state_dict": …}) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such weights file", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError("no state dict of tensors in this file", path)
    return state


def load_converted(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """load_state_dict(strict) that refuses a mismatch with one message listing every missing,
    unexpected and wrongly-shaped key, instead of torch's traceback."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own.keys() & state.keys()
             if own[k].shape != state[k].shape]
    problems = [f"{label}: {', '.join(items[:12])}{' …' if len(items) > 12 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("wrong shapes (file vs model)", wrong)) if items]
    if problems:
        raise InputError("weights do not fit the model; " + "; ".join(problems), source)
    module.load_state_dict(state)
