"""Multi-head attention: the only place in the project where attention is computed.

Self- or cross-attention, boolean key-padding masks, causal masking and a key/value cache for
step-by-step decoding all go through ``F.scaled_dot_product_attention``. When there is no padding
and the causal triangle is aligned, no mask tensor is built at all, so PyTorch can pick the flash
kernel. Attention weights are computed only when a caller asks for them (``record_attention``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KVCache:
    """Keys and values of every attention layer, kept between decoding steps.

    Self-attention layers append one step at a time; cross-attention layers store the projected
    memory once. ``reorder`` follows the surviving hypotheses in beam search.
    """

    def __init__(self) -> None:
        self.layers: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:  # number of cached time steps of the self-attention layers
        return next((k.shape[2] for m, (k, _) in self.layers.items() if not m.is_cross), 0)

    def reorder(self, index: Tensor) -> None:
        self.layers = {m: (k[index], v[index]) for m, (k, v) in self.layers.items()}


class MultiHeadAttention(nn.Module):
    """Multi-head attention; cross-attention when ``kv_dim`` is given.

    x: (B, T, D) queries; memory: (B, S, kv_dim) for cross-attention.
    key_padding_mask: (B, S) boolean, True = a real key, False = padding.
    """

    def __init__(self, dim: int, num_heads: int, *, kv_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout = num_heads, dim // num_heads, dropout
        self.is_cross = kv_dim is not None
        if self.is_cross:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(kv_dim, 2 * dim, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)  # one fused matmul for q, k and v
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.recorded: list[Tensor] | None = None  # set by record_attention()

    def _heads(self, x: Tensor, n: int) -> list[Tensor]:  # (B, T, n*D) -> n x (B, H, T, D/H)
        B, T, _ = x.shape
        return list(x.view(B, T, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4))

    def forward(self, x: Tensor, memory: Tensor | None = None, *, key_padding_mask: Tensor | None = None,
                causal: bool = False, cache: KVCache | None = None) -> Tensor:
        B, T, D = x.shape
        if self.is_cross:
            if memory is None:
                raise ValueError("cross-attention needs memory")
            q, = self._heads(self.q(x), 1)
            if cache is not None and self in cache.layers:
                k, v = cache.layers[self]  # the memory is projected once per decoding run
            else:
                k, v = self._heads(self.kv(memory), 2)
                if cache is not None:
                    cache.layers[self] = (k, v)
        else:
            q, k, v = self._heads(self.qkv(x), 3)
            if cache is not None:
                if self in cache.layers:
                    past_k, past_v = cache.layers[self]
                    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
                cache.layers[self] = (k, v)

        mask = self._mask(key_padding_mask, causal, T, k.shape[2], x.device)
        # the aligned causal case needs no mask tensor: is_causal lets SDPA use the flash kernel
        is_causal = causal and mask is None and T == k.shape[2] and T > 1
        if self.recorded is not None:
            out = self._attend_and_record(q, k, v, mask, is_causal)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    @staticmethod
    def _mask(key_padding_mask: Tensor | None, causal: bool, T: int, S: int, device) -> Tensor | None:
        """The boolean SDPA mask (True = attend), or None when SDPA needs none."""
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        if causal and (mask is not None or T != S) and T > 1:
            # queries are the last T of S positions (cached decoding): align the triangle bottom-right
            tri = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)
            mask = tri if mask is None else mask & tri
        return mask

    def _attend_and_record(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                           is_causal: bool) -> Tensor:
        if is_causal:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        scores = q @ k.transpose(-2, -1) * self.head_dim ** -0.5  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        self.recorded.append(weights.detach())
        return weights @ v


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Collect the attention weights (B, H, T, S) of every attention layer in ``model``.

    Yields a dict from each layer's module name to the list of weights of the calls made inside the
    ``with`` block. Outside it the layers run the fused SDPA path untouched.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)}
    for m in layers.values():
        m.recorded = []
    try:
        yield {name: m.recorded for name, m in layers.items()}
    finally:
        for m in layers.values():
            m.recorded = None
