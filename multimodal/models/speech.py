"""SpeechToText: Whisper's layout — an audio encoder, a decoder that cross-attends to it — plus a CTC head on
the encoder (trained beside the decoder; decoding uses the decoder)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from multimodal.config import as_config
from multimodal.encoders.audio import HOP_LENGTH, SAMPLE_RATE, AudioEncoder, AudioEncoderConfig, pad_waveforms
from multimodal.encoders.text import TextConfig, TextDecoder, beam_search, greedy_decode
from multimodal.errors import InputError
from multimodal.models.base import AudioInput, Model, Transcription, waveform
from multimodal.tokenizers import Tokenizer

LONG_AUDIO = ("split", "refuse")


@dataclass
class SpeechToTextConfig:
    encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    decoder: TextConfig = field(default_factory=TextConfig)  # its vocab_size is the tokenizer's
    beam_size: int = 1  # 1 = greedy
    length_penalty: float = 1.0

    def __post_init__(self):
        self.encoder, self.decoder = as_config(AudioEncoderConfig, self.encoder), as_config(TextConfig, self.decoder)
        if not isinstance(self.beam_size, int) or isinstance(self.beam_size, bool) or self.beam_size < 1:
            raise ValueError(f"beam_size must be a positive integer, got {self.beam_size!r}")
        if (not isinstance(self.length_penalty, (int, float)) or isinstance(self.length_penalty, bool)
                or not math.isfinite(self.length_penalty)):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty!r}")


def split_points(waveform: Tensor, window: int, search: int = SAMPLE_RATE // 2) -> list[int]:
    """Boundaries 0 = b0 < b1 < … < bn = T with every piece at most ``window`` samples: n equal pieces, each
    inner boundary moved to the quietest 10 ms within ``search`` samples of its place (never past a window)."""
    T = waveform.shape[0]
    n = math.ceil(T / window)
    points = [0]
    energy = waveform.square()
    for k in range(1, n):
        target = round(k * T / n)
        lo = max(points[-1] + 1, target - search, T - (n - k) * window)  # the rest must still fit
        hi = min(points[-1] + window, target + search)
        if hi - lo < HOP_LENGTH:
            points.append(min(max(target, lo), hi))
            continue
        frames = energy[lo:hi][: (hi - lo) // HOP_LENGTH * HOP_LENGTH].view(-1, HOP_LENGTH).mean(-1)
        points.append(lo + int(frames.argmin()) * HOP_LENGTH + HOP_LENGTH // 2)
    points.append(T)
    return points


class SpeechToText(Model):
    """Waveforms (B, T) at 16 kHz + lengths (B,) -> transcripts; ``transcribe`` takes files and arrays too."""

    def __init__(self, config: SpeechToTextConfig, tokenizer: Tokenizer):
        super().__init__()
        config = as_config(SpeechToTextConfig, config)
        self.config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder,
                                                                              vocab_size=tokenizer.vocab_size))
        self.tokenizer = tokenizer
        self.encoder = AudioEncoder(self.config.encoder)
        self.decoder = TextDecoder(self.config.decoder, self.encoder.dim, prompt=tokenizer.prompt, eos=tokenizer.eos)
        self.ctc_head = nn.Linear(self.encoder.dim, tokenizer.vocab_size)

    def describe(self) -> dict:
        return self._description(tokenizer=self.tokenizer.to_dict())

    def encode(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.encoder(waveforms, lengths)  # (B, S, D), (B, S)

    @torch.no_grad()
    def decode(self, waveforms: Tensor, lengths: Tensor | None = None, beam_size: int | None = None) -> list[list[int]]:
        """Token ids of a padded batch (B, T) + lengths (B,): greedy for beam_size 1, else beam search
        (default: the config's ``beam_size``)."""
        was_training = self.training
        self.eval()
        try:
            memory, mask = self.encode(waveforms.to(self.device), None if lengths is None else lengths.to(self.device))
            beam, tok, max_len = beam_size or self.config.beam_size, self.tokenizer, self.config.decoder.context_length
            if beam == 1:
                return greedy_decode(self.decoder, memory, mask, tok.sos, tok.eos, max_len)
            return beam_search(self.decoder, memory, mask, tok.sos, tok.eos, beam, max_len, self.config.length_penalty)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def transcribe(self, audio: AudioInput | Sequence[AudioInput], sample_rate: int | None = None,
                   beam_size: int | None = None, batch_size: int = 16, long_audio: str = "split",
                   names: Sequence[str] | None = None, progress: bool = False) -> Transcription | list[Transcription]:
        """Transcripts of audio files or waveforms (at ``sample_rate``, default 16 kHz): one result per input,
        or one result for one input. Audio longer than the encoder's window is split at its quietest moments
        near the window boundaries and the pieces' texts joined, with a warning (``long_audio="split"``), or
        refused (``"refuse"``); ``names`` name the inputs in those messages."""
        if long_audio not in LONG_AUDIO:
            raise InputError(f"long_audio must be one of {LONG_AUDIO}, not {long_audio!r}")
        if batch_size < 1 or (beam_size is not None and beam_size < 1):
            raise InputError(f"batch_size and beam_size must be at least 1, not {batch_size} and {beam_size}")
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        waveforms = [waveform(item, sample_rate) for item in items]
        names = list(names) if names is not None else [str(i) if isinstance(i, (str, Path)) else f"audio {n}"
                                                       for n, i in enumerate(items)]
        window = self.encoder.window_samples
        pieces: list[tuple[int, Tensor]] = []  # (input, waveform)
        windows = []
        for i, (w, name) in enumerate(zip(waveforms, names)):
            if w.shape[0] <= window:
                pieces.append((i, w))
                windows.append(1)
                continue
            seconds, limit = w.shape[0] / SAMPLE_RATE, window / SAMPLE_RATE
            if long_audio == "refuse":
                raise InputError(f"{seconds:.1f} s of audio is longer than the model's {limit:.1f} s window "
                                 f"(encoder max_frames={self.config.encoder.max_frames}); split it, or allow "
                                 f"splitting (--long-audio split)", name)
            points = split_points(w, window)
            warnings.warn(f"{name}: {seconds:.1f} s is longer than the model's {limit:.1f} s window; "
                          f"transcribed in {len(points) - 1} windows and joined")
            pieces += [(i, w[a:b]) for a, b in zip(points, points[1:])]
            windows.append(len(points) - 1)
        order = sorted(range(len(pieces)), key=lambda j: pieces[j][1].shape[0])  # similar lengths together
        ids: list[list[int]] = [[] for _ in pieces]
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="transcribing", unit="batch", disable=not progress or len(starts) < 2):
            chunk = order[start:start + batch_size]
            for j, seq in zip(chunk, self.decode(*pad_waveforms([pieces[j][1] for j in chunk]), beam_size)):
                ids[j] = seq
        texts: list[list[str]] = [[] for _ in waveforms]
        tokens: list[list[int] | None] = [None] * len(waveforms)
        for (i, _), seq in zip(pieces, ids):
            tokens[i] = seq if tokens[i] is None else tokens[i]
            if text := self.tokenizer.decode(seq):
                texts[i].append(text)
        results = [Transcription(" ".join(t), tok, round(w.shape[0] / SAMPLE_RATE, 3), n)
                   for t, tok, w, n in zip(texts, tokens, waveforms, windows)]
        return results[0] if single else results
