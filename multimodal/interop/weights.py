"""Reading other projects' weight files safely, and loading converted state dicts strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from multimodal.errors import InputError


def read_weights(path: str | Path):
    """What a weights file holds: .safetensors through safetensors, anything else through
    torch.load(weights_only=True), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such weights file", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None


def state_dict_of(state, path: str | Path) -> dict[str, Tensor]:
    """The state dict inside what ``read_weights`` read: common wrappers ({"state_dict": …}, {"model": …},
    {"model_state_dict": …}) are unwrapped, and the ``module.`` prefix of DistributedDataParallel removed."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError("no state dict of tensors in this file", path)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a .safetensors, .pt, .pth, .bin or .ckpt file (``read_weights`` + ``state_dict_of``)."""
    return state_dict_of(read_weights(path), path)


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
