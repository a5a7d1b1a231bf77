"""What a model attends to, read from recorded attention weights: rollout and last-layer maps of a ViT
drawn over the image, the caption tokens a CLIP text tower pools from, and where in the audio a speech
recognizer's decoder looks for each token it writes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from multimodal.encoders import ViT
from multimodal.encoders.audio import HOP_LENGTH, SAMPLE_RATE
from multimodal.encoders.text import TextEncoder, greedy_decode
from multimodal.models import SpeechCLIP, SpeechToText
from multimodal.nn import record_attention
from multimodal.outputs import atomic_write
from multimodal.tokenizers import Tokenizer


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
    with atomic_write(path) as temporary:
        overlay(image, maps).save(temporary, format="PNG")


def token_pieces(tokenizer: Tokenizer, ids: Iterable[int]) -> list[str]:
    """The text of each id alone (a BPE piece keeps its leading space); specials by name, as decode skips them."""
    specials = {tokenizer.pad: "<pad>", tokenizer.sos: "<sos>", tokenizer.eos: "<eos>"}
    return [specials.get(i) or tokenizer.decode([i]) for i in map(int, ids)]


def shown(piece: str) -> str:  # a token as an axis label: spaces made visible
    return piece.strip() or "\u2423"


@torch.no_grad()
def text_pooling_weights(encoder: TextEncoder, tokens: Tensor, lengths: Tensor) -> Tensor:
    """(B, T) weight of each token in what the text tower pools: the last layer's head-averaged attention
    of the pooled position, the last real token (<eos>). Under causal attention that is the only position
    that sees the whole caption; each row sums to 1 and is zero past its <eos>."""
    with record_attention(encoder) as recorded:
        encoder(tokens, lengths)
    last = list(recorded.values())[-1][0].mean(dim=1)  # (B, T, T): the last layer, heads averaged
    return last[torch.arange(tokens.shape[0]), lengths - 1]


@dataclass
class SpeechAttention:
    text: str  # the greedy transcript
    tokens: list[str]  # the tokens the decoder predicted: the transcript's, then <eos>
    mel: Tensor  # (n_mels, F) the encoder's log-mel input
    alignment: Tensor  # (tokens, S) cross-attention over the encoder's S frames; rows sum to 1
    stride: int  # mel frames per encoder frame (the encoder's conv subsampling)
    title: str = ""  # the drawing's title; the transcript when empty
    rows: str = "predicted token"  # what a row of the alignment is


@torch.no_grad()
def speech_attention(model: SpeechToText, waveform: Tensor) -> SpeechAttention:
    """Decode one (samples,) clip greedily, then run the decoder once over its start prompt + the transcript
    with the weights recorded. Row i of the alignment is where the decoder looked when it predicted token i,
    averaged over heads and over all decoder layers: alignment is spread over the layers of
    a deep decoder, and the average shows it without choosing one. Only the ``.cross`` layers are read;
    the ``.attn`` ones are the decoder's self-attention over its own tokens."""
    tok, context = model.tokenizer, model.config.decoder.context_length
    mel, _ = model.encoder.log_mel(waveform[None].to(model.device))  # (1, n_mels, F)
    memory, mask = model.encoder.forward_features(mel)
    ids = greedy_decode(model.decoder, memory, mask, tok.sos, tok.eos, context)[0]
    # the decoder reads its start prompt (<sos>, or Whisper's longer one), then the transcript; the row of the
    # prompt's last token predicts the first text token. The slice keeps a transcript that filled the context.
    inputs, first = (tok.prompt + ids)[:context], len(tok.prompt) - 1
    with record_attention(model.decoder) as recorded:
        model.decoder(torch.tensor([inputs], device=memory.device), memory, mask)
    cross = torch.stack([w[0][0] for name, w in recorded.items() if name.endswith(".cross")])  # (L, H, T, S)
    predicted = (ids + [tok.eos])[:len(inputs) - first]
    return SpeechAttention(tok.decode(ids), token_pieces(tok, predicted), mel[0].cpu(),
                           cross.mean(dim=(0, 1))[first:].cpu(), model.encoder.conv2.stride[0])


@torch.no_grad()
def speech_pooling_attention(model: SpeechCLIP, waveform: Tensor) -> SpeechAttention:
    """Where a SpeechCLIP's attention pooling looks in one (samples,) clip: a row per head over the encoder's
    frames, and their mean (each row sums to 1)."""
    mel, _ = model.audio.log_mel(waveform[None].to(model.device))  # (1, n_mels, F)
    with record_attention(model.audio_pool) as recorded:
        model.pool(model.audio.forward_features(mel)[0])
    heads = next(iter(recorded.values()))[0][0, :, 0]  # (H, S)
    alignment = torch.cat([heads, heads.mean(0, keepdim=True)]).cpu()
    labels = [f"head {h + 1}" for h in range(len(heads))] + ["mean"]
    return SpeechAttention("", labels, mel[0].cpu(), alignment, model.audio.conv2.stride[0],
                           title="what the speech tower pools", rows="pooling query")


def save_text_weights(path: Path, caption: str, tokens: list[str], weights: Tensor) -> None:
    """A bar per token of the caption, in reading order, coloured and labelled with its weight."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    values = weights.tolist()
    fig = Figure(figsize=(min(max(4.0, 0.7 * len(tokens) + 1), 40.0), 3.2), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(tokens)), values, color=colormaps["viridis"](np.array(values) / max(max(values), 1e-8)))
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(tokens)), [shown(t) for t in tokens], rotation=45 if len(tokens) > 12 else 0)
    ax.set_ylim(0, max(values) * 1.2 + 1e-8)
    ax.set_ylabel("weight at <eos>")
    ax.set_title(f"{caption!r}: what the text tower pools (last layer)", fontsize=10)
    with atomic_write(path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")


def save_speech_attention(path: Path, result: SpeechAttention) -> None:
    """The log-mel spectrogram above the token x time alignment, on one time axis in seconds."""
    from matplotlib.figure import Figure

    frames, rows = result.mel.shape[-1], len(result.tokens)
    seconds = frames * HOP_LENGTH / SAMPLE_RATE
    # encoder frame s was computed from mel frames around s * stride: repeat it over those
    upsampled = result.alignment.repeat_interleave(result.stride, dim=1)[:, :frames]
    fig = Figure(figsize=(min(max(6.0, 3 * seconds), 40.0), 3 + 0.2 * rows), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.5, max(1.0, 0.2 * rows)])
    top.imshow(result.mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, result.mel.shape[0]))
    top.set_ylabel("mel bin")
    top.set_title(result.title or f"transcript: {result.text!r}", fontsize=10)
    bottom.imshow(upsampled, aspect="auto", cmap="viridis", interpolation="nearest", extent=(0, seconds, rows, 0))
    bottom.set_yticks(np.arange(rows) + 0.5, [shown(t) for t in result.tokens], fontsize=8 if rows < 40 else 5)
    bottom.set_ylabel(result.rows)
    bottom.set_xlabel("seconds")
    with atomic_write(path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")
