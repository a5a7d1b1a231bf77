"""SpeechRecognizer: trains a SpeechToText (audio encoder + attention decoder + a CTC head on the encoder).

Loss = ctc_weight * CTC + (1 - ctc_weight) * label-smoothed cross-entropy of the decoder. Validation and
test decode (greedy, or beam search with ``beam_size`` > 1) and report WER and CER (torchmetrics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.text import CharErrorRate, WordErrorRate

from multimodal.encoders.audio import SAMPLE_RATE, AudioEncoderConfig
from multimodal.encoders.text import TextConfig
from multimodal.errors import InputError
from multimodal.models import SpeechToText, SpeechToTextConfig
from multimodal.tasks.base import Task
from multimodal.tokenizers import CharTokenizer, Tokenizer


class SpeechRecognizer(Task):
    """Trains a ``SpeechToText``: waveforms (B, T) at 16 kHz + lengths (B,) -> transcripts.

    ``tokenizer`` (a ``Tokenizer.to_dict()``) may be left out of a recipe: ``configure_model`` then builds
    a character tokenizer from the training transcripts of the data module; it is saved in the checkpoint
    so that it runs alone. ``decoder.vocab_size`` is always the tokenizer's.
    """

    model_class = SpeechToText

    def __init__(self, encoder: AudioEncoderConfig, decoder: TextConfig, tokenizer: dict | None = None,
                 ctc_weight: float = 0.3, label_smoothing: float = 0.1, beam_size: int = 1,
                 length_penalty: float = 1.0, lr: float = 1e-3, weight_decay: float = 0.01,
                 warmup_fraction: float = 0.05):
        super().__init__(lr, weight_decay, warmup_fraction)
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        self.save_plain_hyperparameters()
        self.config = SpeechToTextConfig(encoder, decoder, beam_size, length_penalty)
        self.ctc_weight, self.label_smoothing = ctc_weight, label_smoothing
        metrics = lambda: nn.ModuleDict({"wer": WordErrorRate(), "cer": CharErrorRate()})  # noqa: E731
        self.val_metrics, self.test_metrics = metrics(), metrics()
        if tokenizer is not None:
            self.use_tokenizer(Tokenizer.from_dict(tokenizer))

    def use_tokenizer(self, tokenizer: Tokenizer) -> None:  # builds the model around its vocabulary
        self.model = SpeechToText(self.config, tokenizer)
        self.hparams["tokenizer"] = tokenizer.to_dict()
        self.hparams["decoder"]["vocab_size"] = tokenizer.vocab_size

    def adopt(self, source: SpeechToText) -> None:
        self.use_tokenizer(source.tokenizer)

    def configure_model(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        fitting = self.trainer.state.fn == "fit"
        # the training transcripts: to build the tokenizer, or to check that it knows their characters
        texts = datamodule.texts() if hasattr(datamodule, "texts") and (self.model is None or fitting) else None
        if self.model is None:
            if not texts:
                raise ValueError("no tokenizer in the model config and no training transcripts from the data module")
            self.use_tokenizer(CharTokenizer.from_texts(texts))
        if fitting and hasattr(datamodule, "longest"):  # a clip the encoder cannot take stops training late
            clip, seconds = datamodule.longest()
            window = self.model.encoder.window_samples / SAMPLE_RATE
            if seconds > window:
                raise InputError(f"audio {clip.audio.name!r} lasts {seconds:.1f} s (at the slowest training speed), "
                                 f"longer than the encoder's {window:.1f} s window; raise encoder.max_frames "
                                 f"(now {self.config.encoder.max_frames}) or split the clip", clip.manifest, clip.line)
        if texts:
            longest = max(texts, key=len)
            for text in texts:  # unknown characters: InputError listing them
                self.tokenizer.encode(text)
            extra = len(self.tokenizer.prompt) + 1
            if len(self.tokenizer.encode(longest)) + extra > self.config.decoder.context_length:
                raise InputError(f"a transcript of {len(self.tokenizer.encode(longest))} tokens (+ {extra} for the "
                                 f"start prompt and <eos>) does not fit decoder.context_length="
                                 f"{self.config.decoder.context_length}: {longest!r}")
        super().configure_model()

    def losses(self, waveforms: Tensor, lengths: Tensor, texts: list[str]) -> dict[str, Tensor]:
        """The CTC, attention and combined losses of a batch."""
        model = self.model
        memory, mask = model.encode(waveforms, lengths)
        prompt = model.decoder.prompt  # (P,) the tokenizer's start prompt, a buffer already on the device
        extra = len(prompt) - 1  # the prompt's tokens after <sos>
        tokens, token_lengths = self.tokenizer.encode_batch(texts, self.config.decoder.context_length - extra)
        tokens, token_lengths = tokens.to(memory.device), token_lengths.to(memory.device)
        # (B, T-1) targets: text <eos>, then -100 (by length: <pad> may be <eos>, as in Whisper)
        position = torch.arange(tokens.shape[1] - 1, device=memory.device)
        targets = tokens[:, 1:].masked_fill(position >= token_lengths[:, None] - 1, -100)
        # the decoder reads the prompt, then the text; the prompt's own tokens are given, not predicted
        inputs = torch.cat([prompt.expand(len(texts), -1), tokens[:, 1:-1]], dim=1)  # (B, extra + T-1)
        targets = torch.cat([targets.new_full((len(texts), extra), -100), targets], dim=1)
        logits = model.decoder(inputs, memory, mask)  # (B, extra + T-1, V)
        attention = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100,
                                    label_smoothing=self.label_smoothing)
        log_probs = model.ctc_head(memory).float().log_softmax(-1).transpose(0, 1)  # (S, B, V)
        ctc = F.ctc_loss(log_probs, tokens[:, 1:], mask.sum(1), token_lengths - 2, blank=self.tokenizer.blank,
                         zero_infinity=True)
        loss = self.ctc_weight * ctc + (1 - self.ctc_weight) * attention
        return {"loss": loss, "ctc": ctc, "attention": attention}

    # ---- Lightning ----
    def training_step(self, batch, batch_idx: int) -> Tensor:
        waveforms, lengths, texts = batch
        losses = self.losses(waveforms, lengths, texts)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(texts))
        return losses["loss"]

    def _evaluate(self, batch, metrics: nn.ModuleDict, prefix: str) -> None:
        waveforms, lengths, texts = batch
        hypotheses = [self.tokenizer.decode(ids) for ids in self.model.decode(waveforms, lengths)]
        for name, metric in metrics.items():
            metric.update(hypotheses, texts)
            self.log(f"{prefix}/{name}", metric, prog_bar=True, batch_size=len(texts))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")
