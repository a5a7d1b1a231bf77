"""Speech augmentation: each transform does what it says (SNR, spectrum slope, decay time, bandwidth, gain, formant
frequencies), keeps the clip's length, is seeded, and reaches training clips only."""

import json
import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from multimodal.data.audio import SAMPLE_RATE, load_audio
from multimodal.data.speech import SpeechManifestData
from multimodal.data.speech_augment import (
    SpeechAugment,
    add_noise,
    band_limit,
    coloured_noise,
    gain,
    reverberate,
    room_impulse_response,
    shift_formants,
)


def voice_like(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Harmonics of 150 Hz up to 3 kHz under a syllable-rate envelope: enough of a voice for these checks."""
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    g = torch.Generator().manual_seed(seed)
    tone = sum(torch.sin(2 * math.pi * 150 * k * t + torch.rand(1, generator=g) * 6) / k for k in range(1, 21))
    return 0.3 * tone * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t))


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    return 10 * math.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())


def band_energy(x: torch.Tensor, low: float, high: float) -> float:
    spectrum = torch.fft.rfft(x).abs().pow(2)
    f = torch.fft.rfftfreq(x.numel(), 1 / SAMPLE_RATE)
    return float(spectrum[(f >= low) & (f < high)].sum())


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
@pytest.mark.parametrize("target", [0.0, 10.0, 25.0])
def test_noise_is_added_at_the_snr_asked_for(kind, target):
    clean = voice_like()
    g = torch.Generator().manual_seed(1)
    noise = voice_like(0.37, seed=2) + voice_like(0.37, seed=3) if kind == "babble" else coloured_noise(5000, kind, g)
    noisy = add_noise(clean, noise, target)  # shorter noise is repeated to the clip's length
    assert noisy.shape == clean.shape and abs(snr_db(clean, noisy) - target) < 0.5


def test_coloured_noise_has_its_spectral_slope():
    """Power per octave: flat rises 3 dB an octave for white, stays flat for pink, falls 3 dB for brown."""
    g = torch.Generator().manual_seed(0)
    for kind, per_octave_db in (("white", 3.0), ("pink", 0.0), ("brown", -3.0)):
        noise = coloured_noise(2 * SAMPLE_RATE, kind, g)
        assert abs(noise.pow(2).mean() - 1) < 1e-3
        octaves = [10 * math.log10(band_energy(noise, f, 2 * f)) for f in (250, 500, 1000, 2000)]
        slope = np.polyfit(range(4), octaves, 1)[0]
        assert abs(slope - per_octave_db) < 1.0, (kind, slope)


@pytest.mark.parametrize("rt60", [0.2, 0.6])
def test_room_impulse_response_decays_60_db_in_rt60(rt60):
    rir = room_impulse_response(rt60, torch.Generator().manual_seed(0))
    assert rir.numel() == round(rt60 * SAMPLE_RATE) and abs(rir.norm() - 1) < 1e-5
    # Schroeder's backward integration: the energy left after t; the time from -5 dB to -25 dB, times 3 (T20)
    left = rir[1:].pow(2).flip(0).cumsum(0).flip(0)
    decay_db = 10 * torch.log10(left / left[0])
    t5, t25 = [int((decay_db > -level).sum()) / SAMPLE_RATE for level in (5, 25)]
    assert abs(3 * (t25 - t5) - rt60) < 0.15 * rt60


def test_reverberation_keeps_length_and_power_and_smears_in_time():
    clean = voice_like()
    clean[SAMPLE_RATE // 2:] = 0  # silence after half a second: the room's tail must fill it
    wet = reverberate(clean, room_impulse_response(0.5, torch.Generator().manual_seed(0)))
    assert wet.shape == clean.shape and abs(wet.pow(2).mean() / clean.pow(2).mean() - 1) < 1e-3
    tail = slice(SAMPLE_RATE // 2 + 800, SAMPLE_RATE // 2 + 2400)  # 50-150 ms after the voice stopped
    assert wet[tail].pow(2).mean() > 1e-3 * wet.pow(2).mean()


def test_band_limit_removes_what_the_channel_cannot_carry():
    clean = voice_like() + 0.1 * coloured_noise(SAMPLE_RATE, "white", torch.Generator().manual_seed(0))
    phone = band_limit(clean, 8000)
    assert phone.shape == clean.shape
    assert band_energy(phone, 4000, 8000) < 1e-4 * band_energy(clean, 4000, 8000)
    assert abs(band_energy(phone, 100, 3400) / band_energy(clean, 100, 3400) - 1) < 0.01


def test_gain_scales_by_the_decibels_asked():
    clean = voice_like()
    assert torch.allclose(gain(clean, -6.0).abs().max() / clean.abs().max(), torch.tensor(10 ** (-6 / 20)))


def vowel(excitation: torch.Tensor, formants=((700, 80), (1800, 100))) -> torch.Tensor:
    """``excitation`` through two-pole resonators at the formants (Hz, bandwidth Hz), peak 0.5."""
    for frequency, bandwidth in formants:
        r, theta = math.exp(-math.pi * bandwidth / SAMPLE_RATE), 2 * math.pi * frequency / SAMPLE_RATE
        excitation = AF.lfilter(excitation, torch.tensor([1.0, -2 * r * math.cos(theta), r * r]),
                                torch.tensor([1.0, 0.0, 0.0]), clamp=False)
    return 0.5 * excitation / excitation.abs().max()


def spectral_peak(x: torch.Tensor, low: float, high: float) -> float:
    """The frequency (Hz) of the largest mean power between low and high, smoothed over 80 Hz."""
    power = torch.stft(x, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().pow(2).mean(1)
    power = torch.nn.functional.avg_pool1d(power[None, None], 5, 1, 2)[0, 0]
    f = torch.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
    band = (f > low) & (f < high)
    return f[band][power[band].argmax()].item()


def pitch_hz(x: torch.Tensor) -> float:
    correlation = torch.fft.irfft(torch.fft.rfft(x, n=2 * x.numel()).abs().pow(2))
    shortest, longest = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    return SAMPLE_RATE / (shortest + correlation[shortest:longest].argmax().item())


@pytest.mark.parametrize("ratio", [0.85, 1.2])
def test_formant_shift_moves_the_formants_and_keeps_the_pitch(ratio):
    whispered = vowel(torch.randn(2 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0)))
    shifted = shift_formants(whispered, ratio)
    assert shifted.shape == whispered.shape and shifted.pow(2).mean() == pytest.approx(whispered.pow(2).mean())
    assert spectral_peak(whispered, 300, 1200) == pytest.approx(700, abs=40)
    assert spectral_peak(shifted, 300, 1200) == pytest.approx(700 * ratio, abs=40)
    assert spectral_peak(shifted, 1200, 2600) == pytest.approx(1800 * ratio, abs=60)
    pulses = torch.zeros(2 * SAMPLE_RATE)
    pulses[:: SAMPLE_RATE // 125] = 1.0  # 125 Hz
    voiced = vowel(pulses)
    assert pitch_hz(shift_formants(voiced, ratio)) == pytest.approx(pitch_hz(voiced), rel=0.01)
    assert torch.allclose(shift_formants(voiced, 1.0), voiced, atol=1e-5)


def test_augment_is_seeded_and_off_by_default():
    clean, other = voice_like(), lambda: voice_like(0.5, seed=9)
    augment = SpeechAugment(noise=1.0, reverb=1.0, band_limit=1.0, gain=1.0, formant=1.0)
    a, b = augment(clean, random.Random(3), other), augment(clean, random.Random(3), other)
    assert torch.equal(a, b) and a.shape == clean.shape and not torch.allclose(a, clean)
    assert not torch.equal(a, augment(clean, random.Random(4), other))
    assert not SpeechAugment().active and torch.equal(SpeechAugment()(clean, random.Random(0), other), clean)


@pytest.mark.parametrize("bad, match", [
    ({"noise": 1.5}, "noise is a probability"), ({"snr_db": [30, 5]}, r"snr_db must be \[low, high\]"),
    ({"rt60": [0.0, 0.5]}, "rt60 must be positive"), ({"noise_kinds": ["violet"]}, "noise_kinds must be some of"),
    ({"band_rates": [22050]}, "band_rates must be rates"), ({"babble_voices": 0}, "babble_voices"),
    ({"formant_ratio": [0.3, 1.2]}, "formant_ratio must lie within"), ({"formant": -0.1}, "formant is a probability"),
])
def test_a_bad_augment_setting_is_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        SpeechAugment(**bad)


def test_only_training_clips_are_augmented(tmp_path):
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", voice_like(0.5, seed=i).numpy(), SAMPLE_RATE)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"{i}.wav", "text": "a red star"}) + "\n" for i in range(3)))
    data = SpeechManifestData(train_manifest=str(manifest), test_manifest=str(manifest), speeds=[1.0],
                              augment={"noise": 1.0, "reverb": 1.0})  # as a recipe gives it
    data.setup("fit")
    data.setup("test")
    clean = load_audio(tmp_path / "0.wav")
    assert torch.equal(data.sets["val"][0][0], clean) and torch.equal(data.sets["test"][0][0], clean)
    random.seed(0)
    first = data.sets["train"][0][0]
    assert first.shape == clean.shape and snr_db(clean, first) < 30
    random.seed(0)
    assert torch.equal(data.sets["train"][0][0], first)  # seeded by the global seed, as Lightning's workers are
