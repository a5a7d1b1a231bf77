"""SpeechImageContrastive: trains a SpeechCLIP's speech tower into a frozen CLIP's embedding space.

Loss: symmetric InfoNCE between the spoken captions and the CLIP's embeddings of their images (gathered across
processes under DDP as the CLIP loss is), and, weighted ``text_weight``, when every training pair has a written
caption, cross-entropy of each spoken caption against *every* distinct training caption (``caption_bank``). The
text tower is frozen, so the bank's embeddings are computed once and never go stale (a memory bank without
MoCo's drift); it holds the hard negatives that a batch seldom does, the captions one word away ("a red star
left of a blue circle" against "... right of ...", "... a blue square"). Without the bank, the text term is
in-batch InfoNCE as the image term. The CLIP is read from ``clip`` (a shipped name, a checkpoint or an exported folder) and
never trained; the audio encoder may start from a speech-recognition model's (``init_audio_from``), whose
encoder configuration it then takes, and may keep it frozen (``lock_audio_encoder``, SpeechCLIP's frozen HuBERT):
then each clip's encoder features and image embedding are computed once and kept, keyed by the clip and its
length, so the epochs after the first train only the blocks above the encoder. Keep waveform augmentation off
with a locked encoder (a few speeds are fine: each is kept). Validation reports speech→image and speech→text
recall.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from multimodal.config import as_config, plain
from multimodal.encoders.audio import SAMPLE_RATE, AudioEncoderConfig, length_mask
from multimodal.errors import InputError
from multimodal.loading import load_model
from multimodal.metrics import recall_at_k
from multimodal.models import CLIP, SpeechCLIP, SpeechCLIPConfig, SpeechToText
from multimodal.tasks.base import Task
from multimodal.tasks.losses import clip_loss


class SpeechImageContrastive(Task):
    """Trains a ``SpeechCLIP``: waveforms (B, T) at 16 kHz + lengths (B,) -> embeddings in a frozen CLIP's space."""

    model_class = SpeechCLIP

    def __init__(self, clip: str, encoder: AudioEncoderConfig | None = None, init_audio_from: str | None = None,
                 lock_audio_encoder: bool = False, pool_heads: int = 4, pool_depth: int = 0, text_weight: float = 1.0,
                 caption_bank: bool = True, lr: float = 1e-3, weight_decay: float = 0.05,
                 warmup_fraction: float = 0.05):
        super().__init__(lr, weight_decay, warmup_fraction)
        if encoder is None and init_audio_from is None:
            raise ValueError("give the audio encoder's configuration (encoder) or a model to start it from "
                             "(init_audio_from)")
        if not text_weight >= 0:
            raise ValueError(f"text_weight must be 0 or more, got {text_weight}")
        self.save_plain_hyperparameters()
        self.clip_source, self.init_audio_from = clip, init_audio_from
        self.pool_heads, self.pool_depth, self.lock_audio_encoder = pool_heads, pool_depth, lock_audio_encoder
        self._kept: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}  # a locked encoder's features, image embeddings
        self.encoder = None if encoder is None else as_config(AudioEncoderConfig, encoder)
        self.text_weight, self.use_text, self.caption_bank = text_weight, text_weight > 0, caption_bank
        self._bank_captions: dict[str, int] = {}  # caption -> row of the bank
        self._bank: Tensor | None = None  # (C, E) their frozen embeddings, made on the first training step
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []

    def adopt(self, source: SpeechCLIP) -> None:  # --pretrained: its CLIP and its tower's shape
        self.model = SpeechCLIP(source.config, source.tokenizer)
        self.hparams["encoder"], self.init_audio_from = plain(source.config.audio), None

    def configure_model(self) -> None:
        """Before training: load the frozen CLIP, build the tower (from a speech model's encoder), check the data."""
        if self.model is None:
            clip = load_model(self.clip_source, expect=CLIP)
            encoder, speech = self.encoder, None
            if self.init_audio_from is not None:
                speech = load_model(self.init_audio_from, expect=SpeechToText)
                encoder = speech.config.encoder
            self.model = SpeechCLIP(SpeechCLIPConfig(clip.config, encoder, self.pool_heads, self.pool_depth), clip.tokenizer)
            self.model.clip.load_state_dict(clip.state_dict())
            if speech is not None:
                self.model.audio.load_state_dict(speech.encoder.state_dict())
            self.hparams["encoder"] = plain(encoder)
        if self.lock_audio_encoder:
            self.model.lock_audio_encoder()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._trainer is not None and self.trainer.state.fn == "fit" and datamodule is not None:
            if self.use_text and hasattr(datamodule, "captioned") and not datamodule.captioned():
                warnings.warn("some training pairs have no written caption: the speech tower learns the image "
                              "embeddings only", stacklevel=2)
                self.use_text = False
            if self.use_text and self.caption_bank and hasattr(datamodule, "captions"):
                self._bank_captions = {c: i for i, c in enumerate(datamodule.captions())}
            if hasattr(datamodule, "longest"):
                clip, seconds = datamodule.longest()
                window = self.model.audio.window_samples / SAMPLE_RATE
                if seconds > window:
                    raise InputError(f"audio {clip.audio.name!r} lasts {seconds:.1f} s (at the slowest training "
                                     f"speed), longer than the encoder's {window:.1f} s window", clip.manifest,
                                     clip.line)
        super().configure_model()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = (checkpoint.get("multimodal_model") or {}).get("config", {}).get("clip")
        ours = plain(self.model.config.clip)
        if saved is not None and saved != ours:
            path = self._trainer.ckpt_path if self._trainer else None
            raise InputError(f"this checkpoint's speech tower was trained against another CLIP (embed_dim "
                             f"{saved.get('embed_dim')}, the CLIP given now {ours['embed_dim']}): resume with the "
                             f"CLIP it started with", path)

    def embeddings(self, batch, text: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """(B, E) speech, image and (with captions, if ``text``) text embeddings of a batch; the CLIP's without
        gradients."""
        waveforms, lengths, images, captions, keys = batch
        if self.model.audio_locked:
            speech, image = self.from_kept(waveforms, lengths, images, keys)
        else:
            speech = self.model(waveforms, lengths)
            with torch.no_grad():
                image = self.model.clip.encode_image(images)
        with torch.no_grad():
            text = self.model.clip.encode_text(captions) if self.use_text and text else None
        return speech, image, text

    def from_kept(self, waveforms: Tensor, lengths: Tensor, images: Tensor, keys: list[str]) -> tuple[Tensor, Tensor]:
        """Speech and image embeddings with a locked encoder: its features and the image embeddings are computed
        for the clips not seen before and kept (on the model's device)."""
        names = [(key, int(n)) for key, n in zip(keys, lengths.tolist())]
        new = [i for i, name in enumerate(names) if name not in self._kept]
        if new:
            with torch.no_grad():
                features, mask = self.model.audio(waveforms[new], lengths[new])
                embedded = self.model.clip.encode_image(images[new])
            for row, i in enumerate(new):
                self._kept[names[i]] = (features[row, :int(mask[row].sum())], embedded[row])
        features = [self._kept[name][0] for name in names]
        padded = pad_sequence(features, batch_first=True)  # (B, S, D)
        mask = length_mask(torch.tensor([len(f) for f in features], device=padded.device), padded.shape[1])
        return self.model.pool(padded, mask), torch.stack([self._kept[name][1] for name in names])

    def loss(self, speech: Tensor, image: Tensor, text: Tensor | None) -> Tensor:
        loss = clip_loss(speech, image, self.model.scale())
        if text is None:
            return loss
        return (loss + self.text_weight * clip_loss(speech, text, self.model.scale())) / (1 + self.text_weight)

    def bank_loss(self, speech: Tensor, image: Tensor, captions: list[str]) -> Tensor:
        """In-batch InfoNCE with the images, cross-entropy against every training caption for the text."""
        if self._bank is None:
            texts = list(self._bank_captions)
            with torch.no_grad():
                self._bank = torch.cat([self.model.clip.encode_text(texts[i:i + 1024]) for i in range(0, len(texts), 1024)])
        targets = torch.tensor([self._bank_captions[c] for c in captions], device=speech.device)
        text = F.cross_entropy(self.model.scale() * speech @ self._bank.T, targets)
        image = clip_loss(speech, image, self.model.scale())
        return (image + self.text_weight * text) / (1 + self.text_weight)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        if self._bank_captions:
            speech, image, _ = self.embeddings(batch, text=False)
            loss = self.bank_loss(speech, image, batch[3])
        else:
            loss = self.loss(*self.embeddings(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[3]))
        self.log("train/logit_scale", self.model.scale().detach(), batch_size=len(batch[3]))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        speech, image, _ = self.embeddings(batch, text=False)
        text = self.model.clip.encode_text([c or " " for c in batch[3]])
        self.log("val/loss", self.loss(speech, image, None), batch_size=len(speech))
        self._val.append((speech, image, text))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        speech, image, text = (torch.cat(parts) for parts in zip(*self._val))
        self._val.clear()
        if self.trainer.world_size > 1:
            speech, image, text = (self.all_gather(x).flatten(0, 1) for x in (speech, image, text))
        rows = torch.arange(len(speech))
        to_image = recall_at_k(speech @ image.T, rows, ks=(1, 5))
        to_text = recall_at_k(speech @ text.T, rows, ks=(1,))
        self.log_dict({"val/speech_to_image_R@1": to_image["text_to_image_R@1"],
                       "val/speech_to_image_R@5": to_image["text_to_image_R@5"],
                       "val/image_to_speech_R@1": to_image["image_to_text_R@1"],
                       "val/speech_to_text_R@1": to_text["text_to_image_R@1"]}, rank_zero_only=True)
        self.log("val/s2i_R@1", to_image["text_to_image_R@1"], prog_bar=True, rank_zero_only=True)

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end
