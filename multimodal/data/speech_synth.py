"""Spoken shapes-world captions and digit strings, read by espeak-ng with many voices.

The `espeakng-loader` wheel ships libespeak-ng and its voice data, driven here through ctypes. The
library's output depends on more than its arguments: a time-seeded noise generator (breathy and
Klatt voices), glibc's rand() (Klatt 6 voices) and static state such as the pitch-flutter phase,
which survives espeak_Terminate. So every clip gets a freshly loaded library with both generators
seeded: a clip is a function of (text, variant, prosody, seed) alone, whatever was synthesized
before it. Reloading doubles the cost of a short sentence, from about 4 ms to 8 ms on one core.

Three sources of speech: espeak-ng's own formant synthesizer, its Klatt cascade / parallel formant synthesizer
(the variants that name a ``klatt`` version), and Kokoro, a neural model (``speech_kokoro``); espeak-ng's two by
default. ``make_speech_manifest(sources=..., held_out_sources=("klatt",))`` keeps a source out of training and
speaks a test set with it alone: a test of generalisation to a way of making speech the model never heard.
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
RATE_WPM = 175  # espeak-ng's default speaking rate, words per minute; Kokoro's speed 1.0
SPEECH_KINDS = ("shapes", "digits")
SOURCES = ("formant", "klatt", "kokoro")  # espeak-ng's two synthesis methods, and a neural engine
ESPEAK_SOURCES = ("formant", "klatt")
# Per-utterance prosody: the ranges synthesize()'s arguments are drawn from; "narrow" leaves pitch range and
# word gap at espeak-ng's defaults
PROSODY = {"narrow": {"rate_wpm": (130, 210), "pitch": (30, 70)},
           "wide": {"rate_wpm": (100, 260), "pitch": (10, 90), "pitch_range": (0, 100), "word_gap": (0, 5)}}
_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: call the callback and return when done
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7  # espeak_PARAMETER
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
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
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


@cache
def source(voice: str) -> str:
    """The source of a voice: "kokoro" for a Kokoro voice; for an espeak-ng variant "klatt" when its file selects
    a Klatt synthesizer, else "formant"."""
    from multimodal.data import speech_kokoro

    if voice in speech_kokoro.voices():
        return "kokoro"
    text = (Path(espeakng_loader.get_data_path()) / "voices" / "!v" / voice).read_text(errors="replace")
    return "klatt" if any(line.split()[:1] == ["klatt"] for line in text.splitlines()) else "formant"


def split_voices(split: str, sources: tuple[str, ...] = ESPEAK_SOURCES, held_out_sources: tuple[str, ...] = ()) -> list[str]:
    """The voices of a split: "train" / "test" are the train / test sides of each source in ``sources`` but not in
    ``held_out_sources`` (espeak-ng's: voice_split(); Kokoro's: speech_kokoro.voice_split()); "test_SOURCE" is
    every voice of a held-out source."""
    from multimodal.data import speech_kokoro

    if unknown := (set(sources) | set(held_out_sources)) - set(SOURCES):
        raise InputError(f"unknown sources {sorted(unknown)}; choose from {SOURCES}")
    if split in ("train", "test"):
        side = 0 if split == "train" else 1
        voices = voice_split()[side] + (speech_kokoro.voice_split()[side] if "kokoro" in sources else [])
        voices = [v for v in voices if source(v) in sources and source(v) not in held_out_sources]
        if not voices:
            raise InputError(f"no voices for {split}: every source of {list(sources)} is held out")
        return voices
    held_out = split.removeprefix("test_")
    if held_out in held_out_sources:
        return [v for v in variants() + speech_kokoro.voices() if source(v) == held_out]
    allowed = ["train", "test", *(f"test_{s}" for s in held_out_sources)]
    raise InputError(f"split must be one of {allowed}, not {split!r}")


def synthesize(text: str, variant: str, rate_wpm: int = RATE_WPM, pitch: int = 50, seed: int = 0,
               pitch_range: int = 50, word_gap: int = 0) -> np.ndarray:
    """`text` read by en-us with a voice variant: float32 (T,) in [-1, 1] at SYNTH_RATE. rate_wpm is
    words per minute (80-450), pitch 0-100, pitch_range 0-100 (0: monotone), word_gap the pause between
    words in 10 ms units, seed fixes the breath and aspiration noise."""
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
            lib.espeak_SetParameter(_RANGE, pitch_range, 0)
            lib.espeak_SetParameter(_WORDGAP, word_gap, 0)
            if (status := lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _UTF8, None, None)) != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
            samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
            _chunks.clear()
        finally:
            _unload(lib)
    if samples.size == 0:
        raise RuntimeError(f"espeak-ng returned no audio for {text!r} with variant {variant!r}")
    return samples.astype(np.float32) / 32768.0


def phonemes(text: str, tie: str = "^") -> str:
    """en-us IPA of ``text`` as espeak-ng reads it, ``tie`` joining the letters of one phoneme (e.g. "e^ɪ")."""
    mode = 0x02 | 0x80 | (ord(tie) << 8)  # bit 1: IPA; bit 7: bits 8-23 hold the tie character
    with _lock:
        lib = _load()
        try:
            if lib.espeak_SetVoiceByName(b"en-us") != 0:
                raise RuntimeError("espeak-ng could not select voice en-us")
            remaining = ctypes.c_char_p(text.encode())
            clauses = []
            while remaining.value:  # one clause per call; the pointer moves on
                clauses.append(lib.espeak_TextToPhonemes(ctypes.pointer(remaining), _UTF8, mode).decode())
        finally:
            _unload(lib)
    return " ".join(clauses)


def _sentence(rng: random.Random, kind: str, split: str) -> str:
    if kind == "digits":
        return shapes.digit_sentence(rng)
    scene = shapes.sample_scene(rng, rng.choice((1, 2)), split)
    return shapes.caption(scene, rng)


def _speak_to_file(job: tuple[str, dict]) -> None:
    path, arguments = job
    if source(arguments["variant"]) == "kokoro":  # speed from the rate drawn; no pitch control
        from multimodal.data import speech_kokoro
        audio = speech_kokoro.synthesize(arguments["text"], arguments["variant"], arguments["rate_wpm"] / RATE_WPM)
        sf.write(path, audio, speech_kokoro.KOKORO_RATE, subtype="PCM_16")
    else:
        sf.write(path, synthesize(**arguments), SYNTH_RATE, subtype="PCM_16")


def speech_job(rng: random.Random, text: str, voices: list[str], prosody: str) -> dict:
    """synthesize()'s arguments for ``text``: a voice from ``voices`` and a prosody from PROSODY[prosody], drawn
    from ``rng`` in a fixed order."""
    voice = rng.choice(voices)
    draws = {name: rng.randint(*PROSODY[prosody][name]) for name in ("rate_wpm", "pitch")}
    draws["seed"] = rng.randrange(2**31)
    draws |= {name: rng.randint(*bounds) for name, bounds in PROSODY[prosody].items() if name not in draws}
    return dict(text=text, variant=voice, **draws)


def speaker_fields(voice: str) -> dict[str, str]:
    """A manifest line's "speaker" and "source" for a voice."""
    kind = source(voice)
    return {"speaker": voice, "source": kind if kind == "kokoro" else f"espeak-{kind}"}


def speak(jobs: list[tuple[str, dict]], desc: str, quiet: bool = False, workers: int = 1) -> None:
    """Write each (path, speech_job) as a 16-bit wav, in ``workers`` processes; the bytes do not depend on them."""
    progress = tqdm(total=len(jobs), desc=desc, unit="clip", disable=quiet)
    with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for _ in (pool.imap_unordered(_speak_to_file, jobs, chunksize=16) if pool else map(_speak_to_file, jobs)):
            progress.update()
    progress.close()


def make_speech_manifest(out_dir: str | Path, n: int, split: str, seed: int,
                         kinds: tuple[str, ...] = SPEECH_KINDS, quiet: bool = False, workers: int = 1,
                         sources: tuple[str, ...] = ESPEAK_SOURCES, held_out_sources: tuple[str, ...] = (),
                         prosody: str = "narrow") -> Path:
    """Synthesize n clips into out_dir/clips/{split}_{i:05d}.wav (SYNTH_RATE, Kokoro's at KOKORO_RATE;
    load_audio resamples) and
    list them in out_dir/{split}.jsonl as {"audio": "clips/...", "text": ..., "speaker": VOICE, "source":
    "espeak-formant", "espeak-klatt" or "kokoro"}; returns the manifest. Sentences take turns through `kinds`
    (shapes-world captions, digit strings); voices come from split_voices(split, sources, held_out_sources), rate, pitch,
    pitch range and word gap from PROSODY[prosody], drawn per clip. Same seed, same bytes, in any process and
    for any number of `workers` (each a process with its own espeak-ng)."""
    if unknown := set(kinds) - set(SPEECH_KINDS):
        raise InputError(f"unknown sentence kinds {sorted(unknown)}; choose from {SPEECH_KINDS}")
    if not kinds:
        raise InputError(f"no sentence kinds given; choose from {SPEECH_KINDS}")
    if prosody not in PROSODY:
        raise InputError(f"unknown prosody {prosody!r}; choose from {list(PROSODY)}")
    voices = split_voices(split, tuple(sources), tuple(held_out_sources))
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"speech:{split}:{seed}")  # train and test differ even for one seed
    jobs, lines = [], []
    for i in range(n):  # every random choice is drawn here, in order, so workers cannot change the data
        text = _sentence(rng, kinds[i % len(kinds)], "train" if split == "train" else "test")
        clip = f"clips/{split}_{i:05d}.wav"
        job = speech_job(rng, text, voices, prosody)
        jobs.append((str(out_dir / clip), job))
        lines.append(json.dumps({"audio": clip, "text": text, **speaker_fields(job["variant"])}))
    speak(jobs, f"speaking {split}", quiet, workers)
    manifest = out_dir / f"{split}.jsonl"
    manifest.write_text("".join(line + "\n" for line in lines))
    return manifest
