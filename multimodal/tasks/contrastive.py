"""ImageTextContrastive: a ViT tower and a causal text tower aligned in one embedding space (CLIP / SigLIP).

The BPE tokenizer and the vocabulary-sized text tower depend on the data: ``configure_model`` trains the
tokenizer on the data module's captions and builds the text tower; both are stored in the hyper-parameters
(the tokenizer as its plain ``to_dict``), so a checkpoint runs alone and loads with weights_only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodal.encoders import ViT, ViTConfig
from multimodal.encoders.text import TextConfig, TextEncoder
from multimodal.tasks.base import Task
from multimodal.tasks.losses import clip_loss, siglip_loss
from multimodal.tokenizers import BPETokenizer, Tokenizer

LOSSES = ("clip", "siglip")


def recall_at_k(similarity: Tensor, image_of_text: Sequence[int] | Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Retrieval recall from a (num_texts, num_images) similarity matrix; ``image_of_text[t]`` is text t's image.

    text→image: text t is a hit at k when fewer than k images score strictly higher than its own image.
    image→text: image i is a hit at k when fewer than k texts score strictly higher than the best of *its*
    captions, i.e. any of its captions is in the top k (an image may have several captions; images without
    any are left out). Ties count in the query's favour.
    """
    similarity = similarity.float()
    image_of_text = torch.as_tensor(image_of_text, device=similarity.device).long()
    num_texts, num_images = similarity.shape
    rows = torch.arange(num_texts, device=similarity.device)
    own = similarity[rows, image_of_text]  # (T,)
    t2i_rank = (similarity > own[:, None]).sum(1)  # (T,) images ranked above the text's own image
    owned = F.one_hot(image_of_text, num_images).bool().T  # (I, T): text t belongs to image i
    sim_it = similarity.T  # (I, T)
    best_own = sim_it.masked_fill(~owned, float("-inf")).max(1).values  # (I,)
    has_text = owned.any(1)
    i2t_rank = (sim_it > best_own[:, None]).sum(1)[has_text]
    out = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = (t2i_rank < k).float().mean().item()
        out[f"image_to_text_R@{k}"] = (i2t_rank < k).float().mean().item()
    return out


class ImageTextContrastive(Task):
    """Images (B, 3, H, W) in [0, 1] and captions -> L2-normalised embeddings (B, embed_dim) in one space.

    loss "clip": symmetric InfoNCE with a learnable temperature (logit scale initialised at 1/0.07, clamped
    at 100); "siglip": sigmoid loss, logit scale initialised at 10 and bias at -10.
    ``init_image_tower_from``: an ImageClassifier checkpoint whose ViT (configuration, weights and
    normalisation) becomes the image tower at the start of training; ``lock_image_tower`` freezes it (LiT).
    """

    def __init__(self, vit: ViTConfig, text: TextConfig, embed_dim: int = 128, loss: str = "clip",
                 tokenizer: dict | None = None, tokenizer_vocab_size: int = 1000,
                 init_image_tower_from: str | None = None, lock_image_tower: bool = False, lr: float = 1e-3,
                 weight_decay: float = 0.1, warmup_fraction: float = 0.05, mean: tuple[float, ...] = (0.5,),
                 std: tuple[float, ...] = (0.5,)):
        super().__init__(lr, weight_decay, warmup_fraction)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
        self.save_plain_hyperparameters()
        self.loss_name, self.embed_dim = loss, embed_dim
        self.tokenizer_vocab_size, self.init_image_tower_from = tokenizer_vocab_size, init_image_tower_from
        self.lock_image_tower = lock_image_tower
        self._build_image_tower(ViTConfig(**vit) if isinstance(vit, dict) else vit, mean, std)
        self.text_cfg = TextConfig(**text) if isinstance(text, dict) else text
        self.text_cfg.embed_dim = embed_dim  # the text tower's projection goes straight to the shared space
        self.text: TextEncoder | None = None
        if tokenizer is not None:
            self.use_tokenizer(Tokenizer.from_dict(tokenizer))
        init_scale, init_bias = (math.log(1 / 0.07), None) if loss == "clip" else (math.log(10.0), -10.0)
        self.logit_scale = nn.Parameter(torch.tensor(init_scale))
        self.logit_bias = nn.Parameter(torch.tensor(init_bias)) if init_bias is not None else None
        self._val: list[tuple[Tensor, Tensor]] = []
        self._image_tower_ready = init_image_tower_from is None

    def _build_image_tower(self, cfg: ViTConfig, mean, std) -> None:
        self.vit = ViT(cfg)
        self.image_projection = nn.Linear(self.vit.dim, self.embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=self.vit.dim ** -0.5)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        if self.lock_image_tower:
            self.vit.lock()

    def use_tokenizer(self, tokenizer: Tokenizer) -> None:  # builds the text tower
        self.tokenizer = tokenizer
        self.text_cfg.vocab_size = tokenizer.vocab_size
        self.text = TextEncoder(self.text_cfg)
        self.hparams["tokenizer"] = tokenizer.to_dict()
        self.hparams["text"] = dataclasses.asdict(self.text_cfg)

    def configure_model(self) -> None:
        """Before training: start the image tower from a classifier, train the tokenizer, build the text tower."""
        if not self._image_tower_ready:
            self._image_tower_ready = True
            from multimodal.tasks.classification import ImageClassifier
            classifier = ImageClassifier.load(self.init_image_tower_from)
            cfg = classifier.vit.cfg
            mean, std = tuple(classifier.hparams["mean"]), tuple(classifier.hparams["std"])
            self._build_image_tower(cfg, mean, std)
            self.vit.load_state_dict(classifier.vit.state_dict())
            if self.lock_image_tower:
                self.vit.lock()
            self.hparams.update(vit=dataclasses.asdict(cfg), mean=tuple(mean), std=tuple(std))
        if self.text is None:
            datamodule = self.trainer.datamodule if self._trainer is not None else None
            captions = getattr(datamodule, "captions", None)
            if captions is None:
                raise ValueError("no tokenizer in the model config and the data module gives no captions() to train one")
            self.use_tokenizer(BPETokenizer.train(captions(), self.tokenizer_vocab_size))
        super().configure_model()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.lock_image_tower:
            self.vit.eval()  # a locked tower stays in eval mode (no dropout / drop-path)
        return self

    # --- embeddings -----------------------------------------------------------------------------

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:  # (B, 3, H, W) in [0, 1] -> (B, E)
        x = self.image_projection(self.vit((images - self.mean) / self.std))
        return F.normalize(x.float(), dim=-1) if normalize else x

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> Tensor:  # B texts -> (B, E)
        if self.text is None:
            raise RuntimeError("the text tower is built by configure_model() (training) or from a checkpoint")
        tokens, lengths = self.tokenizer.encode_batch(list(texts), self.text_cfg.context_length)
        x = self.text(tokens.to(self.device), lengths.to(self.device))
        return F.normalize(x.float(), dim=-1) if normalize else x

    def scale(self) -> Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    def forward(self, images: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.encode_image(images), self.encode_text(texts)

    def loss(self, image: Tensor, text: Tensor) -> Tensor:
        if self.loss_name == "clip":
            return clip_loss(image, text, self.scale())
        return siglip_loss(image, text, self.scale(), self.logit_bias)

    # --- training and evaluation ------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, texts, _ = batch
        loss = self.loss(*self(images, texts))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.scale().detach())
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
