"""Attention pooling: a learned query attends over a sequence and gives one vector (timm's ``AttentionPoolLatent``,
the "map" head of SigLIP's ViT). Which positions it weighs shows with ``record_attention``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multimodal.nn.attention import MultiHeadAttention
from multimodal.nn.block import MLP


class AttentionPool(nn.Module):
    """(B, S, D) features + (B, S) key-padding mask (True = keep) -> (B, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=dim ** -0.5)
        self.attn = MultiHeadAttention(dim, num_heads, kv_dim=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = self.attn(self.query.expand(x.shape[0], -1, -1), x, key_padding_mask=key_padding_mask)  # (B, 1, D)
        return (x + self.mlp(self.norm(x)))[:, 0]
