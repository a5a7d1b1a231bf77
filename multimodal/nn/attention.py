"""Multi-head attention: the only place in the project where attention is computed.

Self- or cross-attention, boolean key-padding masks, causal masking and a key/value cache for
step-by-step decoding all go through ``F.scaled_dot_product_attention``. When there is no padding
and the causal triangle is aligned, no mask tensor is built at all, so PyTorch can pick the flash
kernel. Attention weights are computed only when a caller asks for them (``record_attention``).

Two variants for long inputs, chosen per model (``TransformerConfig.attention``):
- local: each query sees the keys at most ``window`` positions away. On a GPU this is FlexAttention
  with a block-sparse mask (memory linear in length); elsewhere a banded mask for SDPA.
- linformer: keys and values are projected along time to ``low_rank`` rows (Wang et al. 2020), so
  the cost is linear in length. Not causal, and not invariant to padding (the projection sees it).
"""

from __future__ import annotations

import contextlib
import functools
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
        """Rows follow ``index``: beam search's surviving hypotheses, which never leave their utterance. The
        cross-attention entries are the same for every beam of an utterance, so they stay as they are: copying
        them (S memory frames per row and layer, every step) cost more than the step itself on 30-s audio."""
        self.layers = {m: (k, v) if m.is_cross else (k[index], v[index]) for m, (k, v) in self.layers.items()}


class MultiHeadAttention(nn.Module):
    """Multi-head attention; cross-attention when ``kv_dim`` is given.

    x: (B, T, D) queries; memory: (B, S, kv_dim) for cross-attention.
    key_padding_mask: (B, S) boolean, True = a real key, False = padding.
    """

    def __init__(self, dim: int, num_heads: int, *, kv_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0, window: int | None = None, low_rank: int | None = None,
                 max_len: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout, self.window = num_heads, dim // num_heads, dropout, window
        self.is_cross = kv_dim is not None
        if low_rank is not None:
            if max_len is None:
                raise ValueError("low-rank (Linformer) attention needs max_len, the longest sequence it takes")
            # one (low_rank, max_len) projection along time for the keys, one for the values
            self.compress = nn.Parameter(torch.randn(2, low_rank, max_len) * max_len ** -0.5)
        else:
            self.compress = None
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

        if self.compress is not None:
            k, v, key_padding_mask = self._compress(k, v, key_padding_mask, causal)
        if self.window is not None and q.is_cuda and self.recorded is None and not (self.training and self.dropout):
            out = self._flex_local(q, k, v, key_padding_mask, causal)
            return self.proj(out.transpose(1, 2).reshape(B, T, D))
        mask = self._mask(key_padding_mask, causal, T, k.shape[2], x.device, self.window)
        # the aligned causal case needs no mask tensor: is_causal lets SDPA use the flash kernel
        is_causal = causal and mask is None and T == k.shape[2] and T > 1
        if self.recorded is not None:
            out = self._attend_and_record(q, k, v, mask, is_causal)
        else:
            # PyTorch's CPU kernels for bfloat16 attention are ~7x slower than float32 (backward, torch 2.11)
            upcast = q.device.type == "cpu" and q.dtype == torch.bfloat16
            with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
                out = F.scaled_dot_product_attention(*(t.float() if upcast else t for t in (q, k, v)), attn_mask=mask,
                                                     is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0)
            out = out.to(q.dtype)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    @staticmethod
    def _mask(key_padding_mask: Tensor | None, causal: bool, T: int, S: int, device,
              window: int | None = None) -> Tensor | None:
        """The boolean SDPA mask (True = attend), or None when SDPA needs none.

        Queries are the last T of S positions (cached decoding), so the causal triangle and the
        window band are aligned bottom-right.
        """
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        if (causal and (mask is not None or T != S) and T > 1) or window is not None:
            distance = torch.arange(S - T, S, device=device)[:, None] - torch.arange(S, device=device)  # (T, S)
            band = distance >= 0 if causal else torch.ones_like(distance, dtype=torch.bool)
            if window is not None:
                band &= distance.abs() <= window
            mask = band if mask is None else mask & band
        return mask

    def _compress(self, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, causal: bool):
        """Linformer: (B, H, S, D/H) keys and values -> (B, H, low_rank, D/H); padding is zeroed first."""
        if causal:
            raise ValueError("low-rank (Linformer) attention cannot be causal")
        S, max_len = k.shape[2], self.compress.shape[-1]
        if S > max_len:
            raise ValueError(f"sequence of {S} is longer than this low-rank attention's max_len {max_len}")
        if key_padding_mask is not None:
            keep = key_padding_mask[:, None, :, None].to(k.dtype)
            k, v = k * keep, v * keep
        e, f = self.compress[:, :, :S].to(k.dtype)
        return e @ k, f @ v, None

    def _flex_local(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, causal: bool) -> Tensor:
        """Sliding-window attention with FlexAttention: only blocks near the diagonal are computed."""
        from torch.nn.attention.flex_attention import create_block_mask

        T, S, window, offset = q.shape[2], k.shape[2], self.window, k.shape[2] - q.shape[2]

        def keep(b, h, q_idx, kv_idx):
            distance = q_idx + offset - kv_idx
            ok = (distance <= window) & (distance >= (0 if causal else -window))
            return ok & key_padding_mask[b, kv_idx] if key_padding_mask is not None else ok

        batch = None if key_padding_mask is None else q.shape[0]
        block_mask = create_block_mask(keep, batch, None, T, S, device=q.device)
        return _compiled_flex_attention()(q, k, v, block_mask=block_mask)

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


@functools.cache
def _compiled_flex_attention():
    """FlexAttention only runs its fused kernel when compiled; compile it once, on first use."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


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
