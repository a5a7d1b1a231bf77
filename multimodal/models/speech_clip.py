"""SpeechCLIP: a speech tower in a trained CLIP's embedding space (the parallel branch of SpeechCLIP, Shih et al.
2022; ImageBind binds audio to a frozen image space the same way). The CLIP stays frozen; the audio encoder,
attention pooling over its frames and a projection learn to land a spoken caption where the CLIP puts its
image and its written caption. So one index of image embeddings answers text, image and voice queries alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodal.config import as_config
from multimodal.encoders.audio import SAMPLE_RATE, AudioEncoder, AudioEncoderConfig, pad_waveforms
from multimodal.errors import InputError
from multimodal.models.base import AudioInput, ImageInput, Model, waveform
from multimodal.models.clip import CLIP, CLIPConfig
from multimodal.nn import AttentionPool, Transformer, TransformerConfig
from multimodal.tokenizers import Tokenizer


@dataclass
class SpeechCLIPConfig:
    clip: CLIPConfig = field(default_factory=CLIPConfig)  # the frozen CLIP's; the tower projects to its embed_dim
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    pool_heads: int = 4
    pool_depth: int = 0  # fresh blocks between the encoder and the pooling (SpeechCLIP's small transformer)
    init_logit_scale: float = math.log(1 / 0.07)

    def __post_init__(self):
        self.clip, self.audio = as_config(CLIPConfig, self.clip), as_config(AudioEncoderConfig, self.audio)
        heads, dim = self.pool_heads, self.audio.transformer.dim
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or dim % heads:
            raise ValueError(f"pool_heads must be a positive integer dividing the audio width {dim}, got {heads!r}")
        if not isinstance(self.pool_depth, int) or isinstance(self.pool_depth, bool) or self.pool_depth < 0:
            raise ValueError(f"pool_depth must be an integer from 0 up, got {self.pool_depth!r}")
        if not isinstance(self.init_logit_scale, (int, float)) or not math.isfinite(self.init_logit_scale):
            raise ValueError(f"init_logit_scale must be a finite number, got {self.init_logit_scale!r}")


class SpeechCLIP(Model):
    """A frozen ``CLIP`` (``self.clip``) and a speech tower into its space: ``encode_audio`` gives (B, E) embeddings
    comparable with ``encode_image`` and ``encode_text``."""

    def __init__(self, config: SpeechCLIPConfig, tokenizer: Tokenizer):
        super().__init__()
        config = as_config(SpeechCLIPConfig, config)
        self.clip = CLIP(config.clip, tokenizer)
        self.config = dataclasses.replace(config, clip=self.clip.config)
        self.audio = AudioEncoder(config.audio)
        self.audio_blocks = Transformer(TransformerConfig(self.audio.dim, config.pool_depth, config.pool_heads)) \
            if config.pool_depth else None
        self.audio_pool = AttentionPool(self.audio.dim, config.pool_heads)
        self.audio_projection = nn.Linear(self.audio.dim, self.clip.embed_dim, bias=False)
        nn.init.normal_(self.audio_projection.weight, std=self.audio.dim ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.clip.requires_grad_(False)
        self.clip.eval()  # Lightning keeps the modes a model is built with
        self.audio_locked = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen: no dropout, no drop-path, ever
        if self.audio_locked:
            self.audio.eval()
        return self

    def lock_audio_encoder(self) -> None:
        """Freeze the audio encoder (SpeechCLIP's frozen HuBERT): only the pooling blocks and the projection train,
        and the encoder's features of a clip never change, so a trainer may keep them."""
        self.audio.lock()
        self.audio_locked = True

    def describe(self) -> dict:
        return self._description(tokenizer=self.tokenizer.to_dict())

    @property
    def tokenizer(self) -> Tokenizer:
        return self.clip.tokenizer

    @property
    def embed_dim(self) -> int:
        return self.clip.embed_dim

    def scale(self) -> Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, normalize: bool = True) -> Tensor:
        """(B, T) 16 kHz waveforms + (B,) lengths -> (B, E) embeddings in the CLIP's space."""
        features, mask = self.audio(waveforms, lengths)  # (B, S, D), (B, S)
        return self.pool(features, mask if lengths is not None else None, normalize)

    def pool(self, features: Tensor, mask: Tensor | None = None, normalize: bool = True) -> Tensor:
        """(B, S, D) audio encoder features + (B, S) mask -> (B, E): the part of the tower above the encoder."""
        if self.audio_blocks is not None:
            features = self.audio_blocks(features, key_padding_mask=mask)
        x = self.audio_projection(self.audio_pool(features, mask))
        return F.normalize(x.float(), dim=-1) if normalize else x

    @torch.no_grad()
    def encode_audio(self, audio: AudioInput | Sequence[AudioInput], sample_rate: int | None = None,
                     batch_size: int = 32, normalize: bool = True) -> Tensor:
        """(B, E) embeddings of audio files or waveforms (at ``sample_rate``, default 16 kHz); (E,) for one.
        A clip longer than the encoder's window is refused."""
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        if not items:
            raise InputError("no audio given")
        waveforms = [waveform(item, sample_rate) for item in items]
        window = self.audio.window_samples
        for item, w in zip(items, waveforms):
            if w.shape[0] > window:
                raise InputError(f"{w.shape[0] / SAMPLE_RATE:.1f} s of audio is longer than the speech tower's "
                                 f"{window / SAMPLE_RATE:.1f} s window", item if isinstance(item, (str, Path)) else None)
        out = []
        for start in range(0, len(waveforms), batch_size):
            batch, lengths = pad_waveforms(waveforms[start:start + batch_size])
            out.append(self(batch.to(self.device), lengths.to(self.device), normalize).cpu())
        x = torch.cat(out)
        return x[0] if single else x

    def encode_image(self, images: ImageInput | Sequence[ImageInput], normalize: bool = True) -> Tensor:
        return self.clip.encode_image(images, normalize)

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> Tensor:
        return self.clip.encode_text(texts, normalize)
