"""Spoken shapes-world captions and digit strings, read by espeak-ng with many voices.

The `espeakng-loader` wheel ships libespeak-ng and its voice data, driven here through ctypes. The
library's output depends on more than its arguments: a time-seeded noise generator (breathy and
Klatt voices), glibc's rand() (Klatt 6 voices) and static state such as the pitch-flutter phase,
which survives espeak_Terminate. So every clip gets a freshly loaded library with both generators
seeded: a clip is a function of (text, variant, rate, pitch, seed) alone, whatever was synthesized
before it. Reloading doubles the cost of a short sentence, from about 4 ms to 8 ms on one core.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import json
import multiprocessing
import random
import threading
from functools import cache
from pathlib import Path

import espeakng_loader
import numpy as np
import soundfile as sf
from tqdm import tqdm

from multimodal.data import shapes
from multimodal.errors import InputError

SYNTH_RATE = 22_050
SPEECH_KINDS = ("shapes", "digits")
_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: call the callback and return when done
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_UTF8 = 1  # espeakCHARS_UTF8

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_chunks: list[np.ndarray] = []
_lock = threading.Lock()  # the library is one global state: one synthesis at a time per process
_libc = ctypes.CDLL(None)


@_CALLBACK
def _collect(wav, n: int, events) -> int:
    if n > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())  # espeak reuses its buffer
    return 0  # 0 = go on


def _load() -> ctypes.CDLL:
    """A fresh copy of the library's state: the previous copy must have been unloaded."""
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate != SYNTH_RATE:
        _unload(lib)
        raise RuntimeError(f"espeak-ng failed to start (espeak_Initialize returned {rate}, expected {SYNTH_RATE})")
    lib.espeak_SetSynthCallback(_collect)
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)  # the next dlopen maps the library anew, statics reset


@cache
def _variant_names() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir()
                        if p.is_file()))


def variants() -> list[str]:
    """Names of the espeak-ng voice variants (files in espeak-ng-data/voices/!v), sorted."""
    return list(_variant_names())


def voice_split() -> tuple[list[str], list[str]]:
    """(train, test) variants: every 5th variant in sorted order is held out for test, the rest train."""
    names = variants()
    return [v for i, v in enumerate(names) if i % 5], names[::5]


def synthesize(text: str, variant: str, rate_wpm: int = 175, pitch: int = 50, seed: int = 0) -> np.ndarray:
    """`text` read by en-us with a voice variant: float32 (T,) in [-1, 1] at SYNTH_RATE. rate_wpm is
    words per minute (80-450), pitch 0-100, seed fixes the breath and aspiration noise."""
    if not text.strip():
        raise InputError("nothing to say: the text is empty")
    if variant not in _variant_names():
        raise InputError(f"unknown espeak-ng voice variant {variant!r}; variants() lists the {len(_variant_names())}")
    encoded = text.encode()
    with _lock:
        lib = _load()
        try:
            lib.espeak_ng_SetRandSeed(seed)
            _libc.srand(seed)  # glibc's generator, used by the Klatt 6 voices
            _chunks.clear()
            if lib.espeak_SetVoiceByName(f"en-us+{variant}".encode()) != 0:
                raise RuntimeError(f"espeak-ng could not select voice en-us+{variant}")
            lib.espeak_SetParameter(_RATE, rate_wpm, 0)
            lib.espeak_SetParameter(_PITCH, pitch, 0)
            if (status := lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _UTF8, None, None)) != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
            samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
            _chunks.clear()
        finally:
            _unload(lib)
    if samples.size == 0:
        raise RuntimeError(f"espeak-ng returned no audio for {text!r} with variant {variant!r}")
    return samples.astype(np.float32) / 32768.0


def _sentence(rng: random.Random, kind: str, split: str) -> str:
    if kind == "digits":
        return shapes.digit_sentence(rng)
    scene = shapes.sample_scene(rng, rng.choice((1, 2)), split)
    return shapes.caption(scene, rng)


def _speak_to_file(job: tuple[str, str, int, int, int, str]) -> None:
    text, variant, rate_wpm, pitch, seed, path = job
    sf.write(path, synthesize(text, variant, rate_wpm, pitch, seed), SYNTH_RATE, subtype="PCM_16")


def make_speech_manifest(out_dir: str | Path, n: int, split: str, seed: int,
                         kinds: tuple[str, ...] = SPEECH_KINDS, quiet: bool = False, workers: int = 1) -> Path:
    """Synthesize n clips into out_dir/clips/{split}_{i:05d}.wav (SYNTH_RATE; load_audio resamples) and
    list them in out_dir/{split}.jsonl as {"audio": "clips/...", "text": ...}; returns the manifest.
    Sentences take turns through `kinds` (shapes-world captions of `split`, digit strings); voices
    come from the split's side of voice_split(), speed 130-210 wpm, pitch 30-70. Same seed, same
    bytes, in any process and for any number of `workers` (each a process with its own espeak-ng)."""
    if unknown := set(kinds) - set(SPEECH_KINDS):
        raise InputError(f"unknown sentence kinds {sorted(unknown)}; choose from {SPEECH_KINDS}")
    if not kinds:
        raise InputError(f"no sentence kinds given; choose from {SPEECH_KINDS}")
    train_voices, test_voices = voice_split()
    voices = {"train": train_voices, "test": test_voices}.get(split)
    if voices is None:
        raise InputError(f"split must be 'train' or 'test', not {split!r}")
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"speech:{split}:{seed}")  # train and test differ even for one seed
    jobs, lines = [], []
    for i in range(n):  # every random choice is drawn here, in order, so workers cannot change the data
        text = _sentence(rng, kinds[i % len(kinds)], split)
        clip = f"clips/{split}_{i:05d}.wav"
        jobs.append((text, rng.choice(voices), rng.randint(130, 210), rng.randint(30, 70), rng.randrange(2**31),
                     str(out_dir / clip)))
        lines.append(json.dumps({"audio": clip, "text": text}))
    progress = tqdm(total=n, desc=f"speaking {split}", unit="clip", disable=quiet)
    with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for _ in (pool.imap_unordered(_speak_to_file, jobs, chunksize=16) if pool else map(_speak_to_file, jobs)):
            progress.update()
    progress.close()
    manifest = out_dir / f"{split}.jsonl"
    manifest.write_text("".join(line + "\n" for line in lines))
    return manifest
