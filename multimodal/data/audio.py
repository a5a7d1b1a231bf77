"""Reading and writing speech clips: wav / flac / ogg at any rate and channel count, with clear errors.

soundfile, not torchaudio.load: torchaudio 2.11 reads files only through torchcodec and FFmpeg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from multimodal.data import find_files
from multimodal.encoders.audio import SAMPLE_RATE  # the encoder's rate; read from here too
from multimodal.errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MIN_SECONDS = 0.1
SILENCE = 1e-4  # peak amplitude below which a clip holds nothing to transcribe


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """A clip as float32 mono (T,) at sample_rate, or InputError naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such audio file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes), not audio", path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = getattr(e, "error_string", None) or str(e)  # libsndfile's own words, without the path again
        raise InputError(f"not a readable audio file: {reason}", path) from None
    if data.shape[0] == 0:
        raise InputError("no audio in the file (0 samples)", path)
    if data.shape[0] < MIN_SECONDS * rate:
        raise InputError(f"too short: {data.shape[0] / rate:.3f} s, at least {MIN_SECONDS} s needed", path)
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise InputError("the audio contains NaN or infinite samples", path)
    if np.abs(mono).max() < SILENCE:
        raise InputError(f"silent: every sample is below {SILENCE:g} in magnitude", path)
    waveform = torch.from_numpy(mono)
    return waveform if rate == sample_rate else AF.resample(waveform, rate, sample_rate)


def find_audio(root: str | Path) -> list[Path]:
    """All audio files under root, sorted (find_images' counterpart); raises InputError when root is missing."""
    return find_files(root, AUDIO_SUFFIXES)


def write_audio(path: str | Path, waveform: Tensor | np.ndarray, sample_rate: int) -> None:
    """Write a mono (T,) or multichannel (C, T) waveform in [-1, 1]; the format follows the suffix."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise InputError(f"cannot write audio as {path.suffix or 'a file without suffix'!r}; "
                         f"use one of {', '.join(AUDIO_SUFFIXES)}", path)
    data = waveform.detach().cpu().numpy() if isinstance(waveform, Tensor) else np.asarray(waveform)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32).T, sample_rate)  # soundfile wants (T, C)
