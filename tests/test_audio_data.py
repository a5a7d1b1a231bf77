import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from multimodal.data import speech_kokoro
from multimodal.data.audio import SAMPLE_RATE, load_audio, write_audio
from multimodal.data.shapes import DIGIT_WORDS
from multimodal.data.speech_synth import (
    SYNTH_RATE,
    make_speech_manifest,
    source,
    split_voices,
    synthesize,
    variants,
    voice_split,
)
from multimodal.errors import InputError


def tone(seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * math.pi * 440 * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1)  # soundfile's (T, C)


@pytest.mark.parametrize("rate,channels,suffix", [(48_000, 2, ".wav"), (8_000, 1, ".flac"), (44_100, 3, ".ogg"),
                                                  (16_000, 1, ".wav")])
def test_load_audio_any_rate_and_channels(tmp_path, rate, channels, suffix):
    path = tmp_path / f"clip{suffix}"
    sf.write(path, tone(0.5, rate, channels), rate)
    waveform = load_audio(path)
    assert waveform.dtype == torch.float32 and waveform.ndim == 1
    assert abs(len(waveform) - SAMPLE_RATE // 2) <= 1  # 0.5 s at 16 kHz
    assert 0.3 < waveform.abs().max() < 0.7


def test_load_audio_averages_channels(tmp_path):
    left = tone(0.2, SAMPLE_RATE)[:, 0]
    sf.write(tmp_path / "lr.wav", np.stack([left, np.zeros_like(left)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert torch.allclose(load_audio(tmp_path / "lr.wav"), torch.from_numpy(left / 2))


def test_write_audio_round_trip(tmp_path):
    wave = torch.from_numpy(tone(0.3, 22_050)[:, 0])
    for suffix in (".wav", ".flac"):
        write_audio(tmp_path / "sub" / f"a{suffix}", wave, 22_050)
        back, rate = sf.read(tmp_path / "sub" / f"a{suffix}", dtype="float32")
        assert rate == 22_050 and np.abs(back - wave.numpy()).max() < 1e-3
    write_audio(tmp_path / "stereo.ogg", torch.stack([wave, wave]), 22_050)  # (C, T)
    assert sf.info(tmp_path / "stereo.ogg").channels == 2
    with pytest.raises(InputError, match="mp3"):
        write_audio(tmp_path / "a.mp3", wave, 22_050)


def bad_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF this is not audio at all" * 10)
    sf.write(tmp_path / "no_samples.wav", np.zeros((0, 1), np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "silent.wav", np.zeros((SAMPLE_RATE, 1), np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "short.flac", tone(0.05, 48_000), 48_000)
    sf.write(tmp_path / "nan.wav", np.full((SAMPLE_RATE, 1), np.nan, np.float32), SAMPLE_RATE, subtype="FLOAT")
    return {"missing.wav": "no such audio file", "empty.wav": "0 bytes", "garbage.wav": "not a readable audio file",
            "no_samples.wav": "0 samples", "silent.wav": "silent", "short.flac": "too short", "nan.wav": "NaN"}


def test_load_audio_bad_files(tmp_path):
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(InputError) as info:
            load_audio(tmp_path / name)
        assert name in str(info.value) and reason in info.value.reason, (name, str(info.value))


def test_voices():
    names = variants()
    assert len(names) > 50 and names == sorted(names)
    train, test = voice_split()
    assert not set(train) & set(test) and sorted(train + test) == names and len(test) >= 10
    assert voice_split() == (train, test)


def test_synthesize():
    audio = synthesize("a small red circle", "Annie")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 < len(audio) / SYNTH_RATE < 5 and 0.05 < np.abs(audio).max() <= 1
    assert np.array_equal(synthesize("seven one", "klatt", 150, 40, seed=1),
                          synthesize("seven one", "klatt", 150, 40, seed=1))
    with pytest.raises(InputError, match="variant"):
        synthesize("a small red circle", "no such voice")
    with pytest.raises(InputError, match="empty"):
        synthesize("  ", "Annie")


@pytest.mark.parametrize("prosody", ["narrow", "wide"])
def test_speech_manifest_is_deterministic(tmp_path, prosody):
    a = make_speech_manifest(tmp_path / "a", 3, "test", seed=7, quiet=True, prosody=prosody)
    synthesize("four four", "m3", 200, 60, seed=9)  # history in between must not matter
    b = make_speech_manifest(tmp_path / "b", 3, "test", seed=7, quiet=True, workers=2, prosody=prosody)  # same bytes
    assert a.name == "test.jsonl" and a.read_text() == b.read_text()
    lines = [json.loads(line) for line in a.read_text().splitlines()]
    assert [line["audio"] for line in lines] == [f"clips/test_{i:05d}.wav" for i in range(3)]
    assert lines[0]["text"].startswith("a ") and lines[1]["text"].split()[0] in DIGIT_WORDS  # kinds take turns
    for line in lines:
        assert (a.parent / line["audio"]).read_bytes() == (b.parent / line["audio"]).read_bytes()
        assert 0.3 < len(load_audio(a.parent / line["audio"])) / SAMPLE_RATE < 6
    with pytest.raises(InputError, match="kinds"):
        make_speech_manifest(tmp_path / "c", 1, "train", 0, kinds=("poems",))


def test_sources_of_speech_are_held_out_whole(tmp_path):
    held_out = ("klatt", "kokoro")
    voices = {split: split_voices(split, held_out_sources=held_out) for split in ("train", "test", "test_klatt")}
    klatt = voices["test_klatt"]
    assert {source(v) for v in klatt} == {"klatt"} and {"klatt", "klatt6", "benjamin"} <= set(klatt)
    assert sorted(voices["train"] + voices["test"] + klatt) == variants()
    assert not set(voices["test"]) & set(voice_split()[0])  # the held-out voices stay held out
    assert split_voices("test_kokoro", held_out_sources=held_out) == speech_kokoro.voices()
    assert len(speech_kokoro.voices()) == 15
    kokoro_train, kokoro_test = speech_kokoro.voice_split()  # Kokoro in training: its male voice held out
    assert set(split_voices("train", ("formant", "kokoro"), ("klatt",))) == {*voices["train"], *kokoro_train}
    assert set(split_voices("test", ("formant", "kokoro"), ("klatt",))) == {*voices["test"], *kokoro_test}
    assert not set(kokoro_train) & set(kokoro_test) and all("jm_kumo" in v for v in kokoro_test)
    made = {}
    for split, n in (("train", 12), ("test_klatt", 6), ("test_kokoro", 2)):
        manifest = make_speech_manifest(tmp_path, n, split, seed=1, quiet=True, held_out_sources=held_out,
                                        prosody="wide")
        made[split] = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {line["source"] for line in made["train"]} == {"espeak-formant"}
    assert {line["source"] for line in made["test_klatt"]} == {"espeak-klatt"}
    assert {line["source"] for line in made["test_kokoro"]} == {"kokoro"}
    assert all(line["speaker"] in klatt for line in made["test_klatt"])
    with pytest.raises(InputError, match="split must be one of"):
        make_speech_manifest(tmp_path, 1, "test_klatt", seed=0)  # no source held out: no such split
    with pytest.raises(InputError, match="no voices for train: every source"):
        make_speech_manifest(tmp_path, 1, "train", seed=0, sources=("kokoro",), held_out_sources=("kokoro",))


def test_kokoro_speaks_english_phonemes_deterministically():
    assert speech_kokoro.kokoro_phonemes("a large yellow diamond") == "ə lˈɑɹʤ jˈɛlO dˈIəmənd"
    audio = speech_kokoro.synthesize("seven three", "jm_kumo", speed=1.0)
    assert audio.dtype == np.float32 and 0.4 < len(audio) / speech_kokoro.KOKORO_RATE < 3 and np.abs(audio).max() > 0.05
    assert np.array_equal(audio, speech_kokoro.synthesize("seven three", "jm_kumo", speed=1.0))
    slow = speech_kokoro.synthesize("seven three", "jm_kumo", speed=0.7)
    assert len(slow) > 1.2 * len(audio)
    assert not np.array_equal(audio[:4000], speech_kokoro.synthesize("seven three", "jf_alpha+jm_kumo")[:4000])
    with pytest.raises(InputError, match="unknown Kokoro voice"):
        speech_kokoro.synthesize("seven", "af_heart")


def test_wide_prosody_varies_pitch_range_and_word_gaps():
    flat = synthesize("one two three four", "m3", 175, 50, seed=0, pitch_range=0)
    lively = synthesize("one two three four", "m3", 175, 50, seed=0, pitch_range=100)
    spaced = synthesize("one two three four", "m3", 175, 50, seed=0, word_gap=5)
    assert not np.array_equal(flat, lively)
    assert len(spaced) / SYNTH_RATE > len(flat) / SYNTH_RATE + 3 * 0.04  # three gaps of 50 ms, at least 40 each
