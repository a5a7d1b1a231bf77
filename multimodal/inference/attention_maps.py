"""What a model attends to: attention rollout and last-layer maps of a ViT, drawn over the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from multimodal.encoders import ViT
from multimodal.nn import record_attention


@torch.no_grad()
def vit_attention_maps(vit: ViT, images: Tensor) -> dict[str, Tensor]:
    """Per-patch attention maps (B, H/p, W/p), each summing to 1, for images already normalised.

    rollout: Abnar & Zuidema (2020) — head-averaged attention plus the residual identity, multiplied
    through the layers. last: the last layer's head-averaged attention. Both are read from the
    pooled position: the class token's row, or for mean pooling the mean of all rows.
    """
    with record_attention(vit) as recorded:
        tokens = vit.forward_tokens(images)
    layers = [weights[0].mean(dim=1) for weights in recorded.values()]  # L x (B, N, N)
    eye = torch.eye(tokens.shape[1], device=tokens.device)
    rollout = eye.expand_as(layers[0])
    for a in layers:
        a = 0.5 * a + 0.5 * eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    grid = (images.shape[-2] // vit.cfg.patch_size, images.shape[-1] // vit.cfg.patch_size)

    def read(matrix: Tensor) -> Tensor:
        row = matrix[:, 0] if vit.cfg.pool == "cls" else matrix.mean(dim=1)  # (B, N)
        patches = row[:, vit.num_prefix:]
        return (patches / patches.sum(-1, keepdim=True)).reshape(-1, *grid)

    return {"rollout": read(rollout), "last": read(layers[-1])}


def overlay(image: Image.Image, maps: dict[str, Tensor]) -> Image.Image:
    """The image beside one heat-map overlay per map, each upsampled to the image size."""
    from matplotlib import colormaps

    size = (max(image.width, 160), max(image.height, 160))
    base = image.convert("RGB").resize(size, Image.NEAREST)
    panels = [base]
    for m in maps.values():
        heat = F.interpolate(m[None, None].float(), size=size[::-1], mode="bilinear", align_corners=False)[0, 0]
        heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)
        colored = (colormaps["inferno"](heat.numpy())[..., :3] * 255).astype(np.uint8)
        panels.append(Image.blend(base, Image.fromarray(colored), 0.6))
    sheet = Image.new("RGB", (size[0] * len(panels) + 4 * (len(panels) - 1), size[1]), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * (size[0] + 4), 0))
    return sheet


def save_image_maps(path: Path, image: Image.Image, maps: dict[str, Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, maps).save(path)
