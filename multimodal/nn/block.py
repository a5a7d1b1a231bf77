"""The one residual block that every encoder and decoder in the project is made of."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multimodal.nn.attention import KVCache, MultiHeadAttention


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation of OpenAI's CLIP weights."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "quick_gelu": QuickGELU}


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, activation: str = "gelu", dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout),
                         nn.Linear(hidden, dim), nn.Dropout(dropout))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch for a random subset of samples."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, optional cross-attention to a memory, MLP.

    x = x + attn(norm1(x));  x = x + cross(norm_cross(x), memory);  x = x + mlp(norm2(x))
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, cross_dim: int | None = None,
                 bias: bool = True, activation: str = "gelu", norm_eps: float = 1e-5, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, window: int | None = None,
                 low_rank: int | None = None, max_len: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        # the variants for long inputs change self-attention only; cross-attention stays full
        self.attn = MultiHeadAttention(dim, num_heads, bias=bias, dropout=attn_dropout, window=window,
                                       low_rank=low_rank, max_len=max_len)
        if cross_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=norm_eps)
            self.cross = MultiHeadAttention(dim, num_heads, kv_dim=cross_dim, bias=bias, dropout=attn_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation, dropout)
        self.drop_path = DropPath(drop_path)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None, causal: bool = False,
                memory: Tensor | None = None, memory_mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        x = x + self.drop_path(self.dropout(self.attn(self.norm1(x), key_padding_mask=key_padding_mask,
                                                      causal=causal, cache=cache)))
        if memory is not None:
            x = x + self.drop_path(self.dropout(self.cross(self.norm_cross(x), memory,
                                                           key_padding_mask=memory_mask, cache=cache)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
