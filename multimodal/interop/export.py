"""Our checkpoints as ``model.safetensors`` + ``config.json`` (the task's name and plain hyper-parameters),
and back: ``export_task`` writes a folder (of any model ``load_pretrained`` reads), ``load_exported`` rebuilds
the task."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from multimodal.errors import InputError
from multimodal.interop.weights import load_converted

FORMAT = "multimodal-export"


def _plain(value):
    """Hyper-parameters as JSON: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"hyper-parameter of type {type(value).__name__} cannot be written as JSON: {value!r}")


def export_task(model, out_dir: str | Path) -> Path:
    """Write ``model`` (a Task) to out_dir/model.safetensors and out_dir/config.json; returns out_dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # clones: safetensors refuses tensors that share memory (tied weights, views)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT, "version": 1, "task": type(model).__name__,
              "hyper_parameters": _plain(dict(model.hparams))}
    save_file(state, out / "model.safetensors", metadata={"task": type(model).__name__})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_exported(directory: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the task of an exported folder (config.json + model.safetensors), in eval mode."""
    from safetensors.torch import load_file

    from multimodal.tasks import Task

    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise InputError("not an exported model folder (no such file)", path)
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", config_path) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} config (no \"format\": \"{FORMAT}\")", config_path)
    model = Task.build(config.get("task"), config.get("hyper_parameters", {}), config_path)
    try:
        state = load_file(weights_path, device=str(map_location))
    except Exception as e:
        raise InputError(f"not a readable safetensors file ({type(e).__name__}: {str(e)[:200]})", weights_path) from None
    load_converted(model, state, weights_path)
    return model.to(map_location).eval()
