"""timm VisionTransformer weights (vit_*_patch16/32_*, class-token and mean-pool variants) -> Classifier."""

from __future__ import annotations

import math
import re
from pathlib import Path

from torch import Tensor

from multimodal.errors import InputError
from multimodal.interop.weights import read_state_dict
from multimodal.models import Classifier, ClassifierConfig, load_converted

# timm name -> ours, for the parts of a block
_BLOCK = {"norm1": "norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "norm2",
          "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}


def vit_config_from_timm(state: dict[str, Tensor], pool: str | None = None) -> dict:
    """Read a ViTConfig (as a dict) off a timm ViT state dict's shapes.

    timm's mean-pool ViTs without a class token and without fc_norm (``*_gap_*``) pool as ours do;
    ``pool`` defaults to "cls" when the state has a class token, else "mean".
    """
    if "patch_embed.proj.weight" not in state:
        raise ValueError("not a timm VisionTransformer state dict (no patch_embed.proj.weight)")
    if any(k.startswith("fc_norm.") for k in state):
        raise ValueError("timm ViTs with fc_norm (norm after pooling) are not supported")
    dim, channels, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    prefix = 1 if "cls_token" in state else 0
    grid = math.isqrt(state["pos_embed"].shape[1] - prefix)
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    return {"image_size": grid * patch, "patch_size": patch, "channels": channels,
            "pool": pool or ("cls" if prefix else "mean"),
            "transformer": {"dim": dim, "depth": depth, "num_heads": max(dim // 64, 1), "mlp_ratio": hidden / dim,
                            "norm_eps": 1e-6, "bias": "blocks.0.attn.qkv.bias" in state}}


def convert_timm_vit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm ViT state dict -> Classifier state dict (keys under ``vit.`` and ``head.``)."""
    out = {}
    for key, value in state.items():
        if m := re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", key):
            out[f"vit.transformer.blocks.{m.group(1)}.{_BLOCK.get(m.group(2), m.group(2))}.{m.group(3)}"] = value
        elif key.startswith("norm."):
            out[f"vit.transformer.{key}"] = value
        elif key.startswith("patch_embed.proj."):
            out[f"vit.patch_embed.{key.rsplit('.', 1)[1]}"] = value
        elif key in ("cls_token", "pos_embed"):
            out[f"vit.{key}"] = value
        elif key.startswith("head."):
            out[key] = value
        else:
            out[key] = value  # left as it is, so that the strict load names it
    return out


def load_timm_vit(path: str | Path, class_names: list[str] | None = None, num_heads: int | None = None,
                  state: dict[str, Tensor] | None = None) -> Classifier:
    """A Classifier with the weights of a timm ViT file (.safetensors / .pth / .bin); ``state``: the
    file's state dict when it was read already.

    timm files name no classes: ``class_names`` defaults to class_0 … class_{N-1}. ViT-Ti/S/B/L use
    64-dimensional heads (ViT-S: 6 heads); pass ``num_heads`` for other layouts.
    """
    state = read_state_dict(path) if state is None else state
    try:
        cfg = vit_config_from_timm(state)
    except (ValueError, KeyError) as e:
        raise InputError(str(e), path) from None
    if num_heads:
        cfg["transformer"]["num_heads"] = num_heads
    if "head.weight" not in state:
        raise InputError("this timm ViT has no classification head (head.weight)", path)
    num_classes = state["head.weight"].shape[0]
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise InputError(f"{len(names)} class names given for a head of {num_classes} classes", path)
    model = Classifier(ClassifierConfig(vit=cfg), names)
    load_converted(model, convert_timm_vit(state), path)
    return model.eval()
