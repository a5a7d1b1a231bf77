"""Models shipped inside the package, by name: ``load_model("mnist-vit")``, ``available_models()``.

``registry.json`` beside this file says, for each name, which file holds it (one safetensors file: the weights,
half precision where that measured as lossless, and the model's description in its metadata), its sha256, the
recipe and commands that made it, when, on what machine, and what it scored on which test data.
``multimodal models build NAME`` remakes a file and its entry from the recipe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from multimodal.errors import InputError
from multimodal.models import Model, from_state
from multimodal.outputs import atomic_write

HERE = Path(__file__).resolve().parent
REGISTRY = HERE / "registry.json"
FORMAT = "multimodal-model-file"


def registry() -> dict[str, dict]:
    """Every shipped model's entry, by name."""
    return json.loads(REGISTRY.read_text(encoding="utf-8")) if REGISTRY.is_file() else {}


def available_models() -> list[str]:
    """The names ``load_model`` accepts besides paths, as ``whisper.available_models()``."""
    return sorted(registry())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model_file(model: Model, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """``model`` as one safetensors file (floating-point weights in ``dtype``, the description in the metadata),
    written atomically."""
    from safetensors.torch import save

    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().clone().contiguous()
             for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "description": json.dumps(model.describe())}
    with atomic_write(path) as temporary:
        temporary.write_bytes(save(state, metadata=metadata))
    return Path(path)


def read_model_file(path: str | Path) -> Model:
    """The model in a file ``write_model_file`` wrote, in float32 and eval mode."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        description = json.loads(metadata["description"]) if metadata.get("format") == FORMAT else None
    except Exception as e:  # a damaged file: safetensors and json raise many kinds
        raise InputError(f"not a readable model file ({type(e).__name__})", path) from None
    if description is None:
        raise InputError(f"not a {FORMAT} (no \"format\": \"{FORMAT}\" in its metadata)", path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return from_state(description, state, path)


def load_pretrained(name: str) -> Model:
    """The shipped model ``name``, its file checked against the registry's sha256 first."""
    entry = registry().get(name)
    if entry is None:
        raise InputError(f"no shipped model of that name; available: {', '.join(available_models()) or 'none'}", name)
    path = HERE / entry["file"]
    if not path.is_file():
        raise InputError(f"the shipped model {name!r} is missing: reinstall the package or rebuild it with "
                         f"`multimodal models build {name}`", path)
    found = sha256(path)
    if found != entry["sha256"]:
        raise InputError(f"checksum mismatch for the shipped model {name!r}: sha256 {found[:16]}…, the registry says "
                         f"{entry['sha256'][:16]}…; the file is damaged: reinstall the package or rebuild it with "
                         f"`multimodal models build {name}`", path)
    return read_model_file(path)
