"""Transcribe audio files or a whole manifest with a SpeechToText; WER / CER for manifests.

Audio longer than the encoder's window (``max_frames`` after the 2x subsampling) is split into windows
at the quietest moment near each boundary and the pieces' transcripts are joined (``long_audio="split"``,
with a warning naming the file), or refused with a message naming the file (``long_audio="refuse"``).
Nothing is ever cut off silently.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import Tensor
from torchmetrics.functional.text import char_error_rate, word_error_rate

from multimodal.data.audio import load_audio
from multimodal.data.speech import Utterance, read_manifest, report_skipped
from multimodal.errors import InputError
from multimodal.models import SpeechToText


def transcribe_waveforms(model: SpeechToText, waveforms: list[Tensor], names: list[str],
                         beam_size: int | None = None, batch_size: int = 16, long_audio: str = "split",
                         quiet: bool = False) -> list[dict]:
    """One result per waveform: {"text", "seconds", "windows"}; long ones split (or refused)."""
    results = model.transcribe(waveforms, beam_size=beam_size, batch_size=batch_size, long_audio=long_audio,
                               names=names, progress=not quiet)
    return [{"text": r.text, "seconds": r.seconds, "windows": r.windows} for r in results]


def transcribe_files(model: SpeechToText, paths: list[str | Path], beam_size: int | None = None,
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


def error_rates(hypotheses: list[str], references: list[str]) -> dict:
    return {"utterances": len(references), "wer": float(word_error_rate(hypotheses, references)),
            "cer": float(char_error_rate(hypotheses, references))}


def rates_by(key: str, utterances: list[Utterance], hypotheses: list[str]) -> dict[str, dict]:
    """WER / CER of each value of the utterances' ``key`` ("speaker" or "source"), sorted by name; lines
    without it are counted under "(none)"."""
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(utterances):
        groups.setdefault(getattr(u, key) or "(none)", []).append(i)
    return {name: error_rates([hypotheses[i] for i in members], [utterances[i].text for i in members])
            for name, members in sorted(groups.items())}


def transcribe_manifest(model: SpeechToText, manifest: str | Path, beam_size: int | None = None,
                        batch_size: int = 16, long_audio: str = "split", quiet: bool = False) -> dict:
    """Transcripts of every good line of a manifest, with WER and CER against its texts, also per speaker and
    per source when the manifest names them; bad lines are skipped, counted and named (all bad: refused)."""
    utterances, bad = read_manifest(manifest, skip_bad=True, check_audio=True)
    report_skipped(Path(manifest), bad, len(utterances) + len(bad))
    waveforms = [load_audio(u.audio) for u in utterances]
    results = transcribe_waveforms(model, waveforms, [f"{u.manifest}:{u.line}" for u in utterances], beam_size,
                                   batch_size, long_audio, quiet)
    hypotheses = [r["text"] for r in results]
    groups = {f"by_{key}": rates_by(key, utterances, hypotheses) for key in ("source", "speaker")
              if any(getattr(u, key) for u in utterances)}
    return {"manifest": str(manifest), **error_rates(hypotheses, [u.text for u in utterances]), **groups,
            "skipped": [str(e) for e in bad],
            "files": [{"path": str(u.audio), "line": u.line, "reference": u.text, **r}
                      for u, r in zip(utterances, results)]}
