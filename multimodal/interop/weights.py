"""Reading weight files safely: torch.load(weights_only=True) or safetensors, never a pickle's code."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from multimodal.errors import InputError


def read_weights(path: str | Path):
    """What a weights file holds: .safetensors through safetensors, anything else through
    torch.load(weights_only=True), on the CPU. InputError naming the file for a missing, empty, truncated or
    otherwise unreadable one."""
    path = Path(path)
    if path.is_dir():
        raise InputError("a folder, not a weights file", path)
    if not path.is_file():
        raise InputError("no such weights file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes), not a weights file", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many kinds for a truncated or foreign file
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(f"not a readable weights file, or a truncated one ({type(e).__name__}"
                         f"{': ' + reason if reason else ''})", path) from None


def state_dict_of(state, path: str | Path) -> dict[str, Tensor]:
    """The state dict inside what ``read_weights`` read: common wrappers ({"state_dict": …}, {"model": …},
    {"model_state_dict": …}) are unwrapped, and the ``module.`` prefix of DistributedDataParallel removed.
    InputError unless it is a dict of tensors with string keys."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if (not isinstance(state, dict) or not all(isinstance(k, str) for k in state)
            or not all(isinstance(v, Tensor) for v in state.values())):
        raise InputError("no state dict of tensors in this file", path)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a .safetensors, .pt, .pth, .bin or .ckpt file (``read_weights`` + ``state_dict_of``)."""
    return state_dict_of(read_weights(path), path)
