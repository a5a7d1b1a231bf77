"""What every model shares: a dataclass config plus what the data decided (class names, a tokenizer), a
description that rebuilds it, and the conversion of what users pass (paths, PIL images, arrays, tensors)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from PIL import Image
from torch import Tensor, nn

from multimodal.config import plain
from multimodal.data.audio import SAMPLE_RATE, load_audio
from multimodal.data.images import EvalTransform, load_image
from multimodal.errors import InputError

ImageInput = str | Path | Image.Image | np.ndarray | Tensor
AudioInput = str | Path | np.ndarray | Tensor


@dataclass
class Classification:
    """The top classes of one input, best first, with their probabilities."""
    labels: list[str]
    scores: list[float]

    @property
    def label(self) -> str:
        return self.labels[0]


@dataclass
class Transcription:
    text: str
    tokens: list[int]  # the decoder's output ids of the first window (long audio: see ``windows``)
    seconds: float
    windows: int = 1  # audio longer than the encoder's window is transcribed in pieces and joined


class Model(nn.Module):
    """A plain ``nn.Module`` rebuilt from ``describe()`` (``multimodal.models.build``): its config and the
    data-decided parts. Subclasses set ``config`` and implement ``describe``."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def describe(self) -> dict:
        """{"model": class name, "config": ..., and the data-decided parts}, plain Python (JSON-able)."""
        raise NotImplementedError

    def _description(self, **extra) -> dict:
        return {"model": type(self).__name__, "config": plain(self.config), **extra}


def normalisation(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A config's per-channel ``mean`` and ``std`` as tuples, checked (a config may come from a damaged file):
    finite numbers, one or ``channels`` of each, every std above 0. ValueError otherwise."""
    values = []
    for name, numbers in (("mean", mean), ("std", std)):
        if isinstance(numbers, (str, bytes)) or not isinstance(numbers, Sequence):
            raise ValueError(f"{name} must be a list of numbers, got {numbers!r:.200}")
        if (len(numbers) not in (1, channels)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers)):
            raise ValueError(f"{name} must be 1 or {channels} finite numbers (one per channel), got {list(numbers)!r:.200}")
        values.append(tuple(numbers))
    if any(x <= 0 for x in values[1]):
        raise ValueError(f"std must be above 0, got {list(values[1])}")
    return values[0], values[1]


class ImagePreprocess:
    """Paths, PIL images, (H, W[, C]) uint8 arrays or float tensors in [0, 1] -> a (B, C, S, S) batch, the
    model's evaluation preprocessing (shorter side to ``image_size``, centre crop). A (B, C, H, W) tensor is
    taken as a batch that is preprocessed already."""

    def __init__(self, image_size: int, channels: int):
        self.transform, self.channels = EvalTransform(image_size), channels

    def image(self, item: ImageInput) -> Tensor:
        if isinstance(item, (str, Path)):
            return self.transform(load_image(item, self.channels))
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3):
                raise InputError(f"an image array must be (H, W) or (H, W, C) uint8, not {item.dtype} {item.shape}")
            item = Image.fromarray(item)
        if isinstance(item, Image.Image):
            return self.transform(item.convert("RGB" if self.channels == 3 else "L"))
        if isinstance(item, Tensor) and item.ndim == 3:
            return item.float()
        raise InputError(f"not an image: {type(item).__name__} (give a path, a PIL image, an array or a tensor)")

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> tuple[Tensor, bool]:
        if isinstance(images, Tensor) and images.ndim == 4:
            return images.float(), False
        single = isinstance(images, (str, Path, Image.Image, np.ndarray, Tensor))
        items = [images] if single else list(images)
        if not items:
            raise InputError("no images given")
        return torch.stack([self.image(item) for item in items]), single


def waveform(audio: AudioInput, sample_rate: int | None = None) -> Tensor:
    """A path (read and resampled) or a mono waveform at ``sample_rate`` (default 16 kHz) -> (T,) at 16 kHz."""
    if isinstance(audio, (str, Path)):
        return load_audio(audio)
    samples = torch.as_tensor(audio, dtype=torch.float32)
    if samples.ndim == 2:
        samples = samples.mean(0)  # (C, T) -> mono
    if samples.ndim != 1 or samples.numel() == 0:
        raise InputError(f"audio must be a (T,) or (C, T) waveform, not of shape {tuple(samples.shape)}")
    if sample_rate not in (None, SAMPLE_RATE):
        samples = AF.resample(samples, sample_rate, SAMPLE_RATE)
    return samples


def load_converted(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """load_state_dict(strict) that refuses a mismatch with one message listing every missing,
    unexpected and wrongly-shaped key, instead of torch's traceback."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own.keys() & state.keys()
             if own[k].shape != state[k].shape]
    problems = [f"{label}: {', '.join(items[:12])}{' …' if len(items) > 12 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("wrong shapes (file vs model)", wrong)) if items]
    if problems:
        raise InputError("weights do not fit the model; " + "; ".join(problems), source)
    parameters = dict(module.named_parameters())  # buffers may hold -inf by design (masks); weights may not
    broken = [k for k, v in state.items() if k in parameters and v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise InputError(f"weights hold NaN or infinite values (a training that diverged?): "
                         f"{', '.join(broken[:12])}{' …' if len(broken) > 12 else ''}", source)
    module.load_state_dict(state)
