"""ImageTextContrastive: trains a CLIP (a ViT tower and a causal text tower aligned in one embedding space) with
the CLIP or the SigLIP loss.

The BPE tokenizer and the vocabulary-sized text tower depend on the data: ``configure_model`` trains the
tokenizer on the data module's captions and builds the model; the tokenizer is stored in the hyper-parameters
(as its plain ``to_dict``), so a checkpoint runs alone and loads with weights_only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from multimodal.config import plain
from multimodal.encoders import TextConfig, ViTConfig
from multimodal.loading import load_model
from multimodal.metrics import recall_at_k
from multimodal.models import CLIP, Classifier, CLIPConfig
from multimodal.tasks.base import Task
from multimodal.tasks.losses import clip_loss, siglip_loss
from multimodal.tokenizers import BPETokenizer, Tokenizer

LOSSES = ("clip", "siglip")


class ImageTextContrastive(Task):
    """Trains a ``CLIP``: images (B, 3, H, W) in [0, 1] and captions -> L2-normalised embeddings in one space.

    loss "clip": symmetric InfoNCE with a learnable temperature (logit scale initialised at 1/0.07, clamped
    at 100); "siglip": sigmoid loss, logit scale initialised at 10 and bias at -10.
    ``init_image_tower_from``: an ImageClassifier checkpoint whose ViT (configuration, weights and
    normalisation) becomes the image tower at the start of training; ``lock_image_tower`` freezes it (LiT).
    """

    model_class = CLIP

    def __init__(self, vit: ViTConfig, text: TextConfig, embed_dim: int = 128, loss: str = "clip",
                 tokenizer: dict | None = None, tokenizer_vocab_size: int = 1000,
                 init_image_tower_from: str | None = None, lock_image_tower: bool = False, lr: float = 1e-3,
                 weight_decay: float = 0.1, warmup_fraction: float = 0.05, mean: tuple[float, ...] = (0.5,),
                 std: tuple[float, ...] = (0.5,)):
        super().__init__(lr, weight_decay, warmup_fraction)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
        self.save_plain_hyperparameters()
        self.loss_name = loss
        self.config = CLIPConfig(vit=vit, text=text, embed_dim=embed_dim, mean=mean, std=std,
                                 init_logit_scale=math.log(1 / 0.07) if loss == "clip" else math.log(10.0),
                                 init_logit_bias=None if loss == "clip" else -10.0)
        self.tokenizer_vocab_size, self.init_image_tower_from = tokenizer_vocab_size, init_image_tower_from
        self.lock_image_tower = lock_image_tower
        self._val: list[tuple[Tensor, Tensor]] = []
        self._image_tower_ready = init_image_tower_from is None
        if tokenizer is not None:
            self.use_tokenizer(Tokenizer.from_dict(tokenizer))

    def use_tokenizer(self, tokenizer: Tokenizer) -> None:  # builds the model around its vocabulary
        self.model = CLIP(self.config, tokenizer)
        if self.lock_image_tower:
            self.model.lock_image_tower()
        self.hparams["tokenizer"] = tokenizer.to_dict()
        self.hparams["text"] = plain(self.model.config.text)

    def adopt(self, source: CLIP) -> None:  # the pretrained model's normalisation and tokenizer
        self.config = dataclasses.replace(self.config, mean=source.config.mean, std=source.config.std)
        self.hparams.update(mean=list(source.config.mean), std=list(source.config.std))
        self.use_tokenizer(source.tokenizer)

    def configure_model(self) -> None:
        """Before training: train the tokenizer and build the model, start the image tower from a classifier."""
        if self.model is None:
            datamodule = self.trainer.datamodule if self._trainer is not None else None
            captions = getattr(datamodule, "captions", None)
            if captions is None:
                raise ValueError("no tokenizer in the model config and the data module gives no captions() to train one")
            self.use_tokenizer(BPETokenizer.train(captions(), self.tokenizer_vocab_size))
        if not self._image_tower_ready:
            self._image_tower_ready = True
            classifier = load_model(self.init_image_tower_from, expect=Classifier)
            cfg = classifier.config
            self.model.build_image_tower(cfg.vit, cfg.mean, cfg.std)
            self.model.vit.load_state_dict(classifier.vit.state_dict())
            if self.lock_image_tower:
                self.model.lock_image_tower()
            self.config = self.model.config
            self.hparams.update(vit=plain(cfg.vit), mean=list(cfg.mean), std=list(cfg.std))
        super().configure_model()

    def forward(self, images: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.model(images, texts)

    def loss(self, image: Tensor, text: Tensor) -> Tensor:
        if self.loss_name == "clip":
            return clip_loss(image, text, self.model.scale())
        return siglip_loss(image, text, self.model.scale(), self.model.logit_bias)

    # --- training and evaluation ------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, texts, _ = batch
        loss = self.loss(*self(images, texts))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.model.scale().detach())
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, texts, _ = batch
        image, text = self(images, texts)
        self.log("val/loss", self.loss(image, text), batch_size=len(texts))
        self._val.append((image.detach(), text.detach()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        image = torch.cat([i for i, _ in self._val])
        text = torch.cat([t for _, t in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:
            image, text = self.all_gather(image).flatten(0, 1), self.all_gather(text).flatten(0, 1)
        metrics = recall_at_k(text @ image.T, torch.arange(len(text)), ks=(1, 5))
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=False, rank_zero_only=True)
        self.log("val/t2i_R@1", metrics["text_to_image_R@1"], prog_bar=True, rank_zero_only=True)

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end
