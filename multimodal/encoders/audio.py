"""Audio encoder, Whisper's layout: log-mel front end + two convolutions (2x subsampling) + sinusoidal
positions + the shared Transformer. Padded batches give every clip the features it has alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from multimodal.config import as_config
from multimodal.nn import Transformer, TransformerConfig, sinusoids

SAMPLE_RATE, N_FFT, HOP_LENGTH = 16_000, 400, 160  # 25 ms windows every 10 ms, as in Whisper
NORMALIZATIONS = ("whisper", "utterance")  # LogMel's scalings


def length_mask(lengths: Tensor, size: int) -> Tensor:  # (B,) -> (B, size) bool, True = inside the sequence
    return torch.arange(size, device=lengths.device) < lengths[:, None]


def pad_waveforms(waveforms: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(T_i,) waveforms -> (B, max T) zero-padded and (B,) lengths: the encoder's batch."""
    lengths = torch.tensor([w.shape[0] for w in waveforms])
    batch = torch.zeros(len(waveforms), int(lengths.max()))
    for row, w in enumerate(waveforms):
        batch[row, :w.shape[0]] = w
    return batch, lengths


class LogMel(nn.Module):
    """(B, samples) 16 kHz waveforms + (B,) lengths -> (B, n_mels, F) Whisper log-mel, (B,) lengths // 160.

    Whisper's recipe: power mel spectrogram, last frame dropped, log10, floored 8 (80 dB) below the
    clip's max, (x + 4) / 4. So that a clip gets the same frames alone or padded in a batch, the
    samples past its length are zeroed, its end meets zeros rather than its own reflection (Whisper
    pads every clip with zeros to 30 s, so that is what its model saw too), and the max is taken over
    its own frames only.

    ``normalize="utterance"`` then subtracts each mel band's mean over the clip's own frames (ESPnet's
    utterance mean normalisation): what a voice, a microphone or a synthesiser adds to every frame of a
    band, its level and spectral tilt, is gone before the encoder sees the clip.
    """

    def __init__(self, n_mels: int = 80, normalize: str = "whisper"):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"log-mel normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.normalize = normalize
        self.spectrogram = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=n_mels, norm="slaney", mel_scale="slaney",
            power=2.0)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, T = waveforms.shape
        if lengths is None:
            lengths = torch.full((B,), T, device=waveforms.device)
        frames = lengths // HOP_LENGTH
        waveforms = F.pad(waveforms.float() * length_mask(lengths, T), (0, N_FFT // 2))
        with torch.autocast(waveforms.device.type, enabled=False):  # bf16 would lose the quiet bins
            mel = self.spectrogram(waveforms)[..., :T // HOP_LENGTH]  # (B, n_mels, F)
        x = mel.clamp(min=1e-10).log10()
        keep = length_mask(frames, x.shape[-1])[:, None]  # (B, 1, F)
        peak = x.masked_fill(~keep, float("-inf")).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        x = (torch.maximum(x, peak - 8.0) + 4.0) / 4.0
        if self.normalize == "utterance":
            mean = (x * keep).sum(-1, keepdim=True) / frames.clamp(min=1)[:, None, None]  # (B, n_mels, 1)
            x = (x - mean) * keep
        return x, frames


@dataclass
class AudioEncoderConfig:
    n_mels: int = 80
    normalize: str = "whisper"  # the log-mel's scaling: "whisper", or "utterance" (each band's mean removed)
    max_frames: int = 1500  # positions after the 2x subsampling: 1500 frames = 30 s
    # SpecAugment, applied in training only: up to num_masks masks of at most this many mel bins / frames
    # (the paper's LibriSpeech policy uses 27 bins and 100 frames; our clips are a few seconds long)
    freq_mask_param: int = 27
    time_mask_param: int = 40
    num_masks: int = 2
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self):  # a config may come from a damaged file: every field is checked before layers are built
        self.transformer = as_config(TransformerConfig, self.transformer)
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"audio encoder normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        for name, low, high in (("n_mels", 1, N_FFT // 2 + 1), ("max_frames", 1, None), ("freq_mask_param", 0, None),
                                ("time_mask_param", 0, None), ("num_masks", 0, None)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low or (high and value > high):
                raise ValueError(f"audio encoder {name} must be an integer from {low}{f' to {high}' if high else ' up'}, "
                                 f"got {value!r}")


class AudioEncoder(nn.Module):
    """(B, samples) waveforms + (B,) lengths -> (B, S, D) features + (B, S) mask (True = a real frame)."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.dim = dim = cfg.transformer.dim
        self.log_mel = LogMel(cfg.n_mels, cfg.normalize)
        masks = [torchaudio.transforms.FrequencyMasking(cfg.freq_mask_param, iid_masks=True)] * cfg.num_masks
        masks += [torchaudio.transforms.TimeMasking(cfg.time_mask_param, iid_masks=True)] * cfg.num_masks
        self.spec_augment = nn.Sequential(*masks)  # stateless: one instance of each serves every mask
        self.conv1 = nn.Conv1d(cfg.n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(cfg.max_frames, dim), persistent=False)
        self.transformer = Transformer(cfg.transformer)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mel, frames = self.log_mel(waveforms, lengths)
        return self.forward_features(mel, None if lengths is None else frames)

    def forward_features(self, mel: Tensor, frame_lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, n_mels, F) log-mel (ours or Whisper's) + (B,) frame lengths -> (B, S, D), (B, S); S = ceil(F / 2)."""
        B, _, T = mel.shape
        S = (T + 1) // 2  # the stride-2 conv's output length
        if S > self.cfg.max_frames:
            raise ValueError(f"audio of {T} mel frames ({T * HOP_LENGTH / SAMPLE_RATE:.1f} s) is longer than the "
                             f"encoder's max_frames={self.cfg.max_frames} after 2x subsampling; cut it or "
                             f"raise max_frames")
        if self.training:
            mel = self.spec_augment(mel)
        lengths = torch.full((B,), T, device=mel.device) if frame_lengths is None else frame_lengths
        keep = length_mask(lengths, T)[:, None]  # (B, 1, F)
        # The convs' zero padding must meet zeros past a clip's end in a batch too. Zero before both
        # convs: the stride-2 conv's last window of an odd-length clip reaches one frame past its end.
        x = F.gelu(self.conv1(mel * keep))  # (B, D, F)
        x = F.gelu(self.conv2(x * keep)).transpose(1, 2)  # (B, S, D)
        mask = length_mask((lengths + 1) // 2, S)  # (B, S)
        # without lengths there is no padding: no mask lets SDPA pick the flash kernel
        x = self.transformer(x + self.positions[:S], key_padding_mask=None if frame_lengths is None else mask)
        return x, mask

    @property
    def window_samples(self) -> int:
        """The most samples it takes at once: (2 * max_frames - 1) mel frames."""
        return (2 * self.cfg.max_frames - 1) * HOP_LENGTH

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.set_grad_checkpointing(enable)

    def lock(self) -> None:
        """Freeze every parameter (a pretrained encoder kept fixed)."""
        self.requires_grad_(False)
        self.eval()

