"""Text towers on the shared Transformer: a CLIP-style encoder and a Whisper-style decoder, plus
greedy and beam-search decoding with the KV cache.

Token sequences are right-padded and every self-attention here is causal, so a real token never sees
a pad token (pads come after it) and no key-padding mask is needed: padded and unpadded sequences
give the same outputs at the real positions, and SDPA can use its flash kernel.
Decoding lives here, next to the decoder, because tasks (validation WER) and inference both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from multimodal.config import as_config
from multimodal.nn import KVCache, Transformer, TransformerConfig


@dataclass
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    embed_dim: int = 512  # TextEncoder's output size (the joint image-text space); unused by TextDecoder
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self):  # a config may come from a damaged file: every field is checked before layers are built
        self.transformer = as_config(TransformerConfig, self.transformer)
        for name in ("vocab_size", "context_length", "embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"text {name} must be a positive integer, got {value!r}")


class TextTransformer(nn.Module):
    """Token embedding + learned positions + the shared Transformer: what the two towers share."""

    def __init__(self, cfg: TextConfig, *, cross_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.transformer.dim
        self.token_embedding = nn.Embedding(cfg.vocab_size, self.dim)
        self.positions = nn.Parameter(torch.empty(cfg.context_length, self.dim))
        self.transformer = Transformer(cfg.transformer, cross_dim=cross_dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # CLIP's init; small logits for the tied head
        nn.init.normal_(self.positions, std=0.01)

    def embed(self, tokens: Tensor, offset: int = 0) -> Tensor:  # (B, T) -> (B, T, D), positions from offset
        end = offset + tokens.shape[1]
        if end > self.cfg.context_length:
            raise ValueError(f"{end} tokens do not fit the context length {self.cfg.context_length}")
        return self.token_embedding(tokens) + self.positions[offset:end]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.set_grad_checkpointing(enable)

    def lock(self) -> None:
        """Freeze every parameter (a pretrained tower kept fixed)."""
        self.requires_grad_(False)
        self.eval()


class TextEncoder(TextTransformer):
    """CLIP's text tower: (B, T) tokens + (B,) lengths -> (B, embed_dim), read at the last real token.

    The last real token is <eos>; under causal attention it is the only one that has seen the whole text.
    """

    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self.projection = nn.Linear(self.dim, cfg.embed_dim, bias=False)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = self.transformer(self.embed(tokens), causal=True)  # (B, T, D)
        last = (tokens.shape[1] if lengths is None else lengths) - 1  # None: no padding
        return self.projection(x[torch.arange(x.shape[0], device=x.device), last])


class TextDecoder(TextTransformer):
    """Whisper's decoder: (B, T) tokens cross-attending to (B, S, memory_dim) memory -> (B, T, V) logits.

    The output layer is the token embedding itself (tied weights). With a ``KVCache`` only the new
    tokens are fed and their positions continue from ``len(cache)``.
    ``prompt``: the tokens decoding starts from when longer than the one <sos> that ``greedy_decode`` /
    ``beam_search`` feed (Whisper's <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>): the
    first step of a cached run feeds it in place of that <sos> and returns the logits after it. ``eos``:
    forced at the last position of the context, so that cached decoding always ends inside it.
    """

    def __init__(self, cfg: TextConfig, memory_dim: int, prompt: Sequence[int] = (), eos: int | None = None):
        super().__init__(cfg, cross_dim=memory_dim)
        self.register_buffer("prompt", torch.tensor(list(prompt), dtype=torch.long), persistent=False)
        self.eos = eos

    def forward(self, tokens: Tensor, memory: Tensor, memory_mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        if cache is not None and len(cache) == 0 and tokens.shape[1] == 1 and len(self.prompt) > 1:
            tokens = self.prompt.expand(tokens.shape[0], -1)
        x = self.embed(tokens, offset=0 if cache is None else len(cache))
        x = self.transformer(x, causal=True, memory=memory, memory_mask=memory_mask, cache=cache)
        logits = x @ self.token_embedding.weight.T  # (B, T, V)
        if self.eos is not None and cache is not None and len(cache) >= self.cfg.context_length:
            logits[:, -1] = float("-inf")
            logits[:, -1, self.eos] = 0.0
        return logits


@torch.no_grad()
def greedy_decode(decoder: nn.Module, memory: Tensor, memory_mask: Tensor | None, sos: int, eos: int,
                  max_len: int) -> list[list[int]]:
    """The most likely next token at each step, for a batch; at most ``max_len`` tokens, <eos> included.

    Returns the tokens of each sequence without <sos> and <eos>.
    """
    cache = KVCache()
    tokens = torch.full((memory.shape[0], 1), sos, dtype=torch.long, device=memory.device)  # (B, 1)
    done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
    for _ in range(max_len):
        next_token = decoder(tokens[:, -1:], memory, memory_mask, cache)[:, -1].argmax(-1)  # (B,)
        tokens = torch.cat([tokens, next_token.masked_fill(done, eos)[:, None]], dim=1)
        done |= next_token == eos
        if done.all():
            break
    return [seq[:seq.index(eos)] if eos in seq else seq for seq in tokens[:, 1:].tolist()]


@torch.no_grad()
def beam_search(decoder: nn.Module, memory: Tensor, memory_mask: Tensor | None, sos: int, eos: int,
                beam_size: int, max_len: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search for a batch: all utterances x beams run as one (B * K) batch through the KV cache.

    Each step ranks the 2K best extensions of the K live beams: an <eos> among them ends a hypothesis
    if it ranks above the K-th continuing one, and the K best continuing ones live on. Hypotheses are
    ranked by log p / length ** length_penalty, length counting <eos>. An utterance is done once K
    hypotheses have ended and its best live beam, at its present length, ranks below the K-th of them;
    after ``max_len`` tokens the live beams compete too. Stopping at the first K ended hypotheses
    (Whisper) would cut short longer, better ones. Returns tokens without <sos> and <eos>; beam_size=1
    gives greedy decoding.
    """
    B, K = memory.shape[0], beam_size
    memory = memory.repeat_interleave(K, dim=0)  # (B * K, S, Dm): beam k of utterance b is row b * K + k
    memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(K, dim=0)
    tokens = torch.full((B * K, 1), sos, dtype=torch.long, device=memory.device)
    scores = torch.full((B, K), float("-inf"), device=memory.device)
    scores[:, 0] = 0.0  # the K beams start as the same <sos>: extend only one of them at first
    ended: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # (normalised score, tokens)
    done = [False] * B
    cache = KVCache()
    for step in range(1, max_len + 1):  # step = the number of tokens generated, with this one
        logits = decoder(tokens[:, -1:], memory, memory_mask, cache)[:, -1].float()  # (B * K, V)
        V = logits.shape[-1]
        top, index = (scores[..., None] + logits.log_softmax(-1).view(B, K, V)).view(B, K * V).topk(2 * K)
        beam, token = index // V, index % V  # (B, 2K) each, best first
        ends = token == eos  # at most K of the 2K, so K continuing ones remain
        for b, j in (ends & ((~ends).cumsum(-1) < K)).nonzero().tolist():
            if not done[b]:
                ended[b].append((top[b, j].item() / step ** length_penalty, tokens[b * K + beam[b, j], 1:].tolist()))
        live = (~ends).float().argsort(dim=-1, descending=True, stable=True)[:, :K]  # the K best continuing
        scores = top.gather(1, live)  # (B, K), best first
        best_live = (scores[:, 0] / step ** length_penalty).tolist()
        done = [d or (len(e) >= K and best_live[b] < sorted(h[0] for h in e)[-K])
                for b, (d, e) in enumerate(zip(done, ended))]
        if all(done):
            break
        origin = (torch.arange(B, device=memory.device)[:, None] * K + beam.gather(1, live)).flatten()
        cache.reorder(origin)
        tokens = torch.cat([tokens[origin], token.gather(1, live).flatten()[:, None]], dim=1)
    else:  # max_len reached
        for b in range(B):
            if not done[b]:
                ended[b] += [(scores[b, k].item() / max_len ** length_penalty, tokens[b * K + k, 1:].tolist())
                             for k in range(K)]
    return [max(e, key=lambda h: h[0])[1] for e in ended]
