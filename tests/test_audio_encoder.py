import pytest
import torch
import torchaudio

from multimodal.encoders.audio import AudioEncoder, AudioEncoderConfig, LogMel
from multimodal.nn import TransformerConfig

torch.manual_seed(0)
CFG = AudioEncoderConfig(n_mels=80, max_frames=64, transformer=dict(dim=32, depth=2, num_heads=4))


def whisper_log_mel(audio: torch.Tensor) -> torch.Tensor:
    """whisper.audio.log_mel_spectrogram written out: (samples,) -> (80, samples // 160)."""
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    filters = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, norm="slaney", mel_scale="slaney")
    log_spec = (filters.T @ magnitudes).clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def clip(samples: int, gain: float) -> torch.Tensor:
    """A chirp in noise that ends in 0.02 s of silence, as recorded speech does: there Whisper's reflection at
    the end and our zeros agree, so the reference needs no change."""
    t = torch.arange(samples) / 16000
    x = gain * (torch.sin(2 * torch.pi * (200 + 1500 * t) * t) + 0.1 * torch.randn(samples))
    x[-320:] = 0
    return x


def test_log_mel_matches_whisper_recipe_per_clip_in_a_batch():
    quiet, loud = clip(4000, 0.01), clip(6400, 1.0)  # different levels: each clip floors at its own max - 8
    # a click in its last 60 samples, which only the first frame past its end holds: that frame must not set the max
    swell = torch.zeros(4100)  # its silence floors at max - 8
    swell[:2000], swell[-60:] = 0.01 * torch.randn(2000), torch.randn(60)
    batch = torch.stack([torch.cat([quiet, torch.randn(2400)]), loud, torch.cat([swell, torch.randn(2300)])])
    log_mel = LogMel()
    mel, frames = log_mel(batch, torch.tensor([4000, 6400, 4100]))  # noise as padding must not matter
    assert mel.shape == (3, 80, 40) and frames.tolist() == [25, 40, 25]
    torch.testing.assert_close(mel[0, :, :25], whisper_log_mel(quiet), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mel[1], whisper_log_mel(loud), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mel[2, :, :25], log_mel(swell[None])[0][0], atol=1e-5, rtol=1e-5)


def test_utterance_normalisation_removes_what_every_frame_of_a_band_shares():
    speech = clip(6400, 0.3) * torch.linspace(0.2, 1.0, 6400)  # a swell, so the frames differ
    louder_and_darker = torchaudio.functional.lowpass_biquad(4.0 * speech, 16_000, 2000.0, Q=0.5)
    log_mel = LogMel(normalize="utterance")
    batch = torch.stack([speech, torch.cat([louder_and_darker[:4800], torch.randn(1600)])])
    mel, frames = log_mel(batch, torch.tensor([6400, 4800]))
    assert frames.tolist() == [40, 30] and mel[1, :, 30:].eq(0).all()  # padding stays zero
    torch.testing.assert_close(mel[0, :, :40].mean(-1), torch.zeros(80), atol=1e-5, rtol=0)  # each band centred
    torch.testing.assert_close(mel[1, :, :30], log_mel(louder_and_darker[None, :4800])[0][0], atol=1e-5, rtol=1e-5)
    whisper = LogMel()  # without it the gain and the filter shift every band; with it the frames nearly agree
    moved = (whisper(louder_and_darker[None])[0] - whisper(speech[None])[0]).abs().mean()
    kept = (log_mel(louder_and_darker[None])[0] - log_mel(speech[None])[0])[:, :40].abs().mean()
    assert moved > 0.1 and kept < moved / 4, (moved, kept)
    with pytest.raises(ValueError, match="normalize"):
        AudioEncoderConfig(normalize="cmvn")
    with pytest.raises(ValueError, match="normalize"):  # used on its own too: a typo must not mean Whisper's
        LogMel(normalize="cmvn")


@pytest.mark.parametrize("short", [3200, 3360])  # 20 mel frames and 21 (odd: the stride-2 conv reaches past)
def test_encoder_gives_the_same_features_padded_and_alone(short):
    encoder = AudioEncoder(CFG).eval()
    a, b = torch.randn(short), torch.randn(5000)
    batch = torch.stack([torch.cat([a, torch.randn(5000 - short)]), b])
    features, mask = encoder(batch, torch.tensor([short, 5000]))
    alone, alone_mask = encoder(a[None])
    S = (short // 160 + 1) // 2
    assert features.shape == (2, 16, 32) and mask.sum(1).tolist() == [S, 16] and alone.shape == (1, S, 32)
    assert alone_mask.all()
    torch.testing.assert_close(features[0, :S], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features[1], encoder(b[None])[0][0], atol=1e-5, rtol=1e-5)


def test_mel_input_and_spec_augment_and_length_limit():
    encoder = AudioEncoder(CFG)
    mel = torch.randn(2, 80, 30)
    assert not torch.allclose(encoder.forward_features(mel)[0], encoder.forward_features(mel)[0])  # random masks
    encoder.eval()
    torch.testing.assert_close(encoder.forward_features(mel)[0], encoder.forward_features(mel)[0])
    with pytest.raises(ValueError, match="max_frames=64"):
        encoder.forward_features(torch.randn(1, 80, 129))
    encoder.lock()
    assert not any(p.requires_grad for p in encoder.parameters())


def test_config_accepts_a_dict():
    assert isinstance(CFG.transformer, TransformerConfig)
