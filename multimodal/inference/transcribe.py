"""Transcribe audio files or a whole manifest with a trained SpeechRecognizer; WER / CER for manifests.

Audio longer than the encoder's window (``max_frames`` after the 2x subsampling) is split into windows
at the quietest moment near each boundary and the pieces' transcripts are joined (``long_audio="split"``,
with a warning naming the file), or refused with a message naming the file (``long_audio="refuse"``).
Nothing is ever cut off silently.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torchmetrics.functional.text import char_error_rate, word_error_rate

from multimodal.data.audio import SAMPLE_RATE, load_audio
from multimodal.data.speech import collate_speech, read_manifest, report_skipped
from multimodal.encoders.audio import HOP_LENGTH
from multimodal.errors import InputError
from multimodal.inference.common import batches
from multimodal.tasks import SpeechRecognizer

LONG_AUDIO = ("split", "refuse")


def window_samples(model: SpeechRecognizer) -> int:
    """The most samples the encoder takes at once: (2 * max_frames - 1) mel frames."""
    return (2 * model.encoder.cfg.max_frames - 1) * HOP_LENGTH


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


@dataclass
class _Piece:
    item: int  # index of the file it belongs to
    waveform: Tensor


def transcribe_waveforms(model: SpeechRecognizer, waveforms: list[Tensor], names: list[str],
                         beam_size: int | None = None, batch_size: int = 16, long_audio: str = "split",
                         quiet: bool = False) -> list[dict]:
    """One result per waveform: {"text", "seconds", "windows"}; long ones split (or refused)."""
    if long_audio not in LONG_AUDIO:
        raise InputError(f"long_audio must be one of {LONG_AUDIO}, not {long_audio!r}")
    window = window_samples(model)
    pieces: list[_Piece] = []
    windows = []
    for i, (w, name) in enumerate(zip(waveforms, names)):
        if w.shape[0] > window:
            seconds, limit = w.shape[0] / SAMPLE_RATE, window / SAMPLE_RATE
            if long_audio == "refuse":
                raise InputError(f"{seconds:.1f} s of audio is longer than the model's {limit:.1f} s window "
                                 f"(encoder max_frames={model.encoder.cfg.max_frames}); split it, or allow "
                                 f"splitting (--long-audio split)", name)
            points = split_points(w, window)
            warnings.warn(f"{name}: {seconds:.1f} s is longer than the model's {limit:.1f} s window; "
                          f"transcribed in {len(points) - 1} windows and joined")
            pieces += [_Piece(i, w[a:b]) for a, b in zip(points, points[1:])]
            windows.append(len(points) - 1)
        else:
            pieces.append(_Piece(i, w))
            windows.append(1)
    order = sorted(range(len(pieces)), key=lambda j: pieces[j].waveform.shape[0])  # similar lengths together
    texts: list[str] = [""] * len(pieces)
    for chunk in batches(order, batch_size, "transcribing", quiet):
        wav, lengths, _ = collate_speech([(pieces[j].waveform, "") for j in chunk])
        for j, text in zip(chunk, model.transcribe(wav, lengths, beam_size)):
            texts[j] = text
    joined: list[list[str]] = [[] for _ in waveforms]
    for piece, text in zip(pieces, texts):
        if text:
            joined[piece.item].append(text)
    return [{"text": " ".join(parts), "seconds": round(w.shape[0] / SAMPLE_RATE, 3), "windows": n}
            for parts, w, n in zip(joined, waveforms, windows)]


def transcribe_files(model: SpeechRecognizer, paths: list[str | Path], beam_size: int | None = None,
                     batch_size: int = 16, long_audio: str = "split", quiet: bool = False) -> dict:
    """Transcripts of audio files; unreadable files are skipped, counted and named (all unreadable: refused)."""
    waveforms, kept, skipped = [], [], []
    for path in map(Path, paths):
        try:
            waveforms.append(load_audio(path))
            kept.append(path)
        except InputError as e:
            if len(paths) == 1:
                raise
            skipped.append(e)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s): " + "; ".join(map(str, skipped[:10])))
    if not kept:
        raise skipped[0]
    results = transcribe_waveforms(model, waveforms, [str(p) for p in kept], beam_size, batch_size, long_audio, quiet)
    return {"files": [{"path": str(p), **r} for p, r in zip(kept, results)], "skipped": [str(e) for e in skipped]}


def transcribe_manifest(model: SpeechRecognizer, manifest: str | Path, beam_size: int | None = None,
                        batch_size: int = 16, long_audio: str = "split", quiet: bool = False) -> dict:
    """Transcripts of every good line of a manifest, with WER and CER against its texts; bad lines are
    skipped, counted and named (all bad: refused)."""
    utterances, bad = read_manifest(manifest, skip_bad=True, check_audio=True)
    report_skipped(Path(manifest), bad, len(utterances) + len(bad))
    waveforms = [load_audio(u.audio) for u in utterances]
    results = transcribe_waveforms(model, waveforms, [f"{u.manifest}:{u.line}" for u in utterances], beam_size,
                                   batch_size, long_audio, quiet)
    hypotheses, references = [r["text"] for r in results], [u.text for u in utterances]
    return {"manifest": str(manifest), "utterances": len(utterances),
            "wer": float(word_error_rate(hypotheses, references)),
            "cer": float(char_error_rate(hypotheses, references)),
            "skipped": [str(e) for e in bad],
            "files": [{"path": str(u.audio), "line": u.line, "reference": u.text, **r}
                      for u, r in zip(utterances, results)]}
