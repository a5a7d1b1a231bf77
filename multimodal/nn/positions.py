"""Position encodings: fixed sinusoids (audio) and learned tables, with 2-D resizing for ViTs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sinusoids(length: int, dim: int, max_timescale: float = 10_000.0) -> Tensor:
    """(length, dim) sin | cos table, Whisper's layout: first half sines, second half cosines."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
    inv = torch.exp(-math.log(max_timescale) / (dim // 2 - 1) * torch.arange(dim // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


def resize_grid_positions(pos: Tensor, new_grid: tuple[int, int], num_prefix: int = 0) -> Tensor:
    """Bicubically resize a learned (1, prefix + H*W, D) patch-position table to a new (H', W') grid.

    Lets a ViT trained at one image size run at another; prefix (class) tokens are kept as they are.
    """
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise ValueError(f"{grid.shape[1]} patch positions do not form a square grid")
    if (old, old) == tuple(new_grid):
        return pos
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
