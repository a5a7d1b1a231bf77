"""Waveform augmentation for speech training: formant shifting (another vocal tract length, the same pitch),
additive noise at a random SNR (white, pink, brown, or babble made of other training clips), reverberation through
a simulated room impulse response, band-limiting to a telephone rate, and gain; each a small function of a mono
16 kHz waveform (T,) that keeps its length.

Written on torch and torchaudio rather than taken from audiomentations (numpy, one clip at a time) or
pyroomacoustics (an image-source room simulator, a compiled extension): the six transforms are a few lines each,
run in the DataLoader workers without another dependency, and draw from one seeded ``random.Random`` per clip.
The spectrogram-side augmentation (SpecAugment) lives in the audio encoder; speed perturbation in ``data.speech``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch import Tensor

from multimodal.data.audio import SAMPLE_RATE

NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f**exponent
NOISE_KINDS = (*NOISE_EXPONENTS, "babble")


def _power(x: Tensor) -> Tensor:
    return x.pow(2).mean().clamp_min(1e-12)


def coloured_noise(length: int, kind: str, generator: torch.Generator) -> Tensor:
    """Gaussian noise of unit power whose power spectrum falls as 1 / f**exponent (white 0, pink 1, brown 2)."""
    spectrum = torch.fft.rfft(torch.randn(length, generator=generator))
    frequency = torch.arange(spectrum.numel(), dtype=torch.float32).clamp_min(1.0)
    noise = torch.fft.irfft(spectrum / frequency.pow(NOISE_EXPONENTS[kind] / 2), n=length)
    return noise / _power(noise).sqrt()


def fit_length(x: Tensor, length: int) -> Tensor:
    """``x`` repeated or cut to ``length`` samples."""
    return x.repeat(math.ceil(length / max(1, x.numel())))[:length]


def add_noise(waveform: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """``waveform`` plus ``noise`` (repeated or cut to its length) scaled to the signal-to-noise ratio ``snr_db``."""
    noise = fit_length(noise, waveform.numel())
    scale = (_power(waveform) / (_power(noise) * 10 ** (snr_db / 10))).sqrt()
    return waveform + scale * noise


def room_impulse_response(rt60: float, generator: torch.Generator, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """A statistical room: the direct path, then a Gaussian tail whose energy falls 60 dB in ``rt60`` seconds
    (Polack's model of a diffuse field), ``rt60`` long."""
    t = torch.arange(max(2, round(rt60 * sample_rate))) / sample_rate
    rir = torch.randn(t.numel(), generator=generator) * torch.exp(-3 * math.log(10) * t / rt60)  # 10**(-3 t / rt60)
    rir[0] = 1.0
    return rir / rir.norm()


def reverberate(waveform: Tensor, rir: Tensor) -> Tensor:
    """``waveform`` through the room ``rir``: the same length and power."""
    wet = AF.fftconvolve(waveform, rir)[: waveform.numel()]
    return wet * (_power(waveform) / _power(wet)).sqrt()


def band_limit(waveform: Tensor, rate: int, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """``waveform`` as a channel of ``rate`` Hz passes it (telephone: 8,000): resampled down and back, flat to
    0.88 × rate / 2, nothing (-40 dB) above rate / 2, the same length. torchaudio's default filter (width 6, roll-off
    0.99) lets a tenth of the power through above rate / 2."""
    down = AF.resample(waveform, sample_rate, rate, lowpass_filter_width=24, rolloff=0.94)
    up = AF.resample(down, rate, sample_rate, lowpass_filter_width=24, rolloff=0.94)
    return fit_length(up, waveform.numel())


def gain(waveform: Tensor, db: float) -> Tensor:
    return waveform * 10 ** (db / 20)


def shift_formants(waveform: Tensor, ratio: float, n_fft: int = 512, lifter: int = 48) -> Tensor:
    """A longer or shorter vocal tract with the same pitch: each frame's spectral envelope (its cepstrum below
    ``lifter`` quefrency bins) moved up in frequency by ``ratio`` (> 1: a shorter tract, as from a man to a
    woman), the harmonics left where they are. The same length and power."""
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(waveform, n_fft, n_fft // 4, window=window, return_complex=True)  # (F, frames)
    cepstrum = torch.fft.irfft(spectrum.abs().clamp_min(1e-6).log(), dim=0)  # (n_fft, frames)
    cepstrum[lifter:-lifter + 1] = 0
    envelope = torch.fft.rfft(cepstrum, dim=0).real  # log magnitude, smoothed over frequency
    source = (torch.arange(envelope.shape[0]) / ratio).clamp(max=envelope.shape[0] - 1)
    below = source.floor().long().clamp(max=envelope.shape[0] - 2)
    weight = (source - below)[:, None]
    moved = envelope[below] * (1 - weight) + envelope[below + 1] * weight
    out = torch.istft(spectrum * (moved - envelope).exp(), n_fft, n_fft // 4, window=window, length=waveform.numel())
    return out * (_power(waveform) / _power(out)).sqrt()


@dataclass
class SpeechAugment:
    """What each training clip may go through, with the probability of each; every probability 0 (the default)
    is no augmentation. In a recipe: ``data.init_args.augment: {noise: 0.5, reverb: 0.3, band_limit: 0.2}``.
    Order: formant shift, reverberation, noise, band-limiting, gain (another speaker, in a room, then the noise
    around the microphone, then the channel)."""
    noise: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    babble_voices: int = 3  # other training clips summed into one babble noise
    reverb: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)  # seconds
    band_limit: float = 0.0
    band_rates: tuple[int, ...] = (8000,)  # Hz
    gain: float = 0.0
    gain_db: tuple[float, float] = (-6.0, 6.0)
    formant: float = 0.0
    formant_ratio: tuple[float, float] = (0.85, 1.2)

    def __post_init__(self):
        for name in ("noise", "reverb", "band_limit", "gain", "formant"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"augment {name} is a probability between 0 and 1, got {value!r}")
        for name in ("snr_db", "rt60", "gain_db", "formant_ratio"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(f"augment {name} must be [low, high], got {list(value)!r}")
            setattr(self, name, value)
        if self.rt60[0] <= 0:
            raise ValueError(f"augment rt60 must be positive seconds, got {list(self.rt60)!r}")
        if not (0.5 <= self.formant_ratio[0] and self.formant_ratio[1] <= 2):
            raise ValueError(f"augment formant_ratio must lie within [0.5, 2], got {list(self.formant_ratio)!r}")
        self.noise_kinds, self.band_rates = tuple(self.noise_kinds), tuple(self.band_rates)
        unknown = set(self.noise_kinds) - set(NOISE_KINDS)
        if not self.noise_kinds or unknown:
            raise ValueError(f"augment noise_kinds must be some of {list(NOISE_KINDS)}, got {list(self.noise_kinds)!r}")
        if not self.band_rates or any(not isinstance(r, int) or not 1000 <= r < SAMPLE_RATE for r in self.band_rates):
            raise ValueError(f"augment band_rates must be rates in Hz from 1000 to below {SAMPLE_RATE}, "
                             f"got {list(self.band_rates)!r}")
        if not isinstance(self.babble_voices, int) or self.babble_voices < 1:
            raise ValueError(f"augment babble_voices must be a positive integer, got {self.babble_voices!r}")

    @property
    def active(self) -> bool:
        return any((self.formant, self.noise, self.reverb, self.band_limit, self.gain))

    def __call__(self, waveform: Tensor, rng: random.Random, other_clip: Callable[[], Tensor]) -> Tensor:
        """The clip augmented; ``rng`` draws every choice, ``other_clip()`` gives another training clip (babble)."""
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        if rng.random() < self.formant:
            waveform = shift_formants(waveform, rng.uniform(*self.formant_ratio))
        if rng.random() < self.reverb:
            waveform = reverberate(waveform, room_impulse_response(rng.uniform(*self.rt60), generator))
        if rng.random() < self.noise:
            kind = rng.choice(self.noise_kinds)
            if kind == "babble":
                noise = sum(fit_length(other_clip(), waveform.numel()) for _ in range(self.babble_voices))
            else:
                noise = coloured_noise(waveform.numel(), kind, generator)
            waveform = add_noise(waveform, noise, rng.uniform(*self.snr_db))
        if rng.random() < self.band_limit:
            waveform = band_limit(waveform, rng.choice(self.band_rates))
        if rng.random() < self.gain:
            waveform = gain(waveform, rng.uniform(*self.gain_db))
        return waveform
