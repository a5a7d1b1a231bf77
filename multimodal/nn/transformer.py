"""A stack of TransformerBlocks with a final norm: the body of every encoder and decoder."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from multimodal.nn.attention import KVCache
from multimodal.nn.block import TransformerBlock


@dataclass
class TransformerConfig:
    dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    bias: bool = True
    activation: str = "gelu"  # gelu | gelu_tanh | quick_gelu
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth of the last block; earlier blocks get linearly less
    attention: str = "full"  # full | local (keys within `window` positions) | linformer (`low_rank` projection)
    window: int = 256
    low_rank: int = 256
    max_len: int = 4096  # the longest sequence linformer attention takes

    def __post_init__(self):  # a config may come from a damaged file: every field is checked before layers are built
        import math

        from multimodal.nn.block import ACTIVATIONS

        for name in ("dim", "depth", "num_heads", "window", "low_rank", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"transformer {name} must be a positive integer, got {value!r}")
        for name, fits, what in (("mlp_ratio", lambda v: v > 0, "above 0"), ("norm_eps", lambda v: 0 < v < 1, "in (0, 1)"),
                                 ("dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
                                 ("attn_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
                                 ("drop_path", lambda v: 0 <= v < 1, "in [0, 1)")):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not fits(value):
                raise ValueError(f"transformer {name} must be a number {what}, got {value!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"transformer bias must be true or false, got {self.bias!r}")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.attention not in ("full", "local", "linformer"):
            raise ValueError(f"attention must be full, local or linformer, got {self.attention!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"transformer dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if int(self.dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio {self.mlp_ratio} leaves the MLP of dim {self.dim} no hidden units")


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, *, cross_dim: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, cross_dim=cross_dim, bias=cfg.bias,
                             activation=cfg.activation, norm_eps=cfg.norm_eps, dropout=cfg.dropout,
                             attn_dropout=cfg.attn_dropout, drop_path=cfg.drop_path * i / max(cfg.depth - 1, 1),
                             window=cfg.window if cfg.attention == "local" else None,
                             low_rank=cfg.low_rank if cfg.attention == "linformer" else None, max_len=cfg.max_len)
            for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, ~30 % more compute."""
        self.grad_checkpointing = enable

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None, causal: bool = False,
                memory: Tensor | None = None, memory_mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:  # (B, T, D) -> (B, T, D)
        for block in self.blocks:
            kwargs = dict(key_padding_mask=key_padding_mask, causal=causal, memory=memory,
                          memory_mask=memory_mask, cache=cache)
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False, **kwargs)
            else:
                x = block(x, **kwargs)
        return self.norm(x)
