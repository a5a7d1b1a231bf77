"""CLIP: a ViT image tower and a causal text tower projected into one embedding space, with the learned
temperature (and, for SigLIP, bias) that turns cosine similarities into logits."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodal.config import as_config
from multimodal.encoders import TextConfig, TextEncoder, ViT, ViTConfig
from multimodal.errors import InputError
from multimodal.models.base import Classification, ImageInput, ImagePreprocess, Model, normalisation
from multimodal.tokenizers import Tokenizer

# the shapes world's own phrasing: a class name such as "red star" or "circle" fills the gap
DEFAULT_TEMPLATES = ("a {}", "a small {}", "a large {}")


@dataclass
class CLIPConfig:
    vit: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=TextConfig)  # its vocab_size is the tokenizer's, its embed_dim ours
    embed_dim: int = 128
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP's; SigLIP starts at log(10)
    init_logit_bias: float | None = None  # SigLIP: -10; CLIP has no bias
    mean: tuple[float, ...] = (0.5,)  # per channel, applied to images in [0, 1]
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self):
        self.vit, self.text = as_config(ViTConfig, self.vit), as_config(TextConfig, self.text)
        self.mean, self.std = normalisation(self.mean, self.std, self.vit.channels)
        if not isinstance(self.embed_dim, int) or isinstance(self.embed_dim, bool) or self.embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {self.embed_dim!r}")
        for name in ("init_logit_scale", "init_logit_bias"):
            value = getattr(self, name)
            if not (value is None and name == "init_logit_bias") and (
                    not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")


class CLIP(Model):
    """Images (B, 3, H, W) in [0, 1] and captions -> L2-normalised embeddings (B, embed_dim) in one space;
    ``encode_image`` and ``zero_shot`` take files, PIL images and arrays too."""

    def __init__(self, config: CLIPConfig, tokenizer: Tokenizer):
        super().__init__()
        config = as_config(CLIPConfig, config)
        self.config = dataclasses.replace(config, text=dataclasses.replace(
            config.text, vocab_size=tokenizer.vocab_size, embed_dim=config.embed_dim))
        self.tokenizer = tokenizer
        self.build_image_tower(self.config.vit, self.config.mean, self.config.std)
        self.text = TextEncoder(self.config.text)
        self.logit_scale = nn.Parameter(torch.tensor(self.config.init_logit_scale))
        bias = self.config.init_logit_bias
        self.logit_bias = nn.Parameter(torch.tensor(bias)) if bias is not None else None
        self.image_tower_locked = False

    def build_image_tower(self, vit: ViTConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """A fresh image tower (ViT, projection, normalisation) of this configuration."""
        self.config = dataclasses.replace(self.config, vit=vit, mean=tuple(mean), std=tuple(std))
        self.vit = ViT(vit)
        self.image_projection = nn.Linear(self.vit.dim, self.config.embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=self.vit.dim ** -0.5)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.preprocess = ImagePreprocess(vit.image_size, vit.channels)

    def describe(self) -> dict:
        return self._description(tokenizer=self.tokenizer.to_dict())

    def lock_image_tower(self) -> None:
        """Freeze the ViT (LiT: the projection still trains); it stays in eval mode (no dropout, no drop-path)."""
        self.vit.requires_grad_(False)
        self.image_tower_locked = True
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.image_tower_locked:
            self.vit.eval()
        return self

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def encode_image(self, images: ImageInput | Sequence[ImageInput], normalize: bool = True) -> Tensor:
        """(B, E) embeddings of a (B, 3, H, W) batch in [0, 1], or of image files, PIL images or arrays
        ((E,) for one image)."""
        batch, single = self.preprocess(images)
        x = self.image_projection(self.vit((batch.to(self.device) - self.mean) / self.std))
        x = F.normalize(x.float(), dim=-1) if normalize else x
        return x[0] if single else x

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> Tensor:  # B texts -> (B, E)
        single = isinstance(texts, str)
        tokens, lengths = self.tokenizer.encode_batch([texts] if single else list(texts), self.config.text.context_length)
        x = self.text(tokens.to(self.device), lengths.to(self.device))
        x = F.normalize(x.float(), dim=-1) if normalize else x
        return x[0] if single else x

    def scale(self) -> Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    def forward(self, images: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.encode_image(images), self.encode_text(texts)

    @torch.no_grad()
    def class_embeddings(self, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> Tensor:
        """(C, E): for each class, the normalised mean of its normalised prompt embeddings (one per template)."""
        bad = [t for t in templates if t.count("{}") != 1]
        if bad or not templates:
            raise InputError(f"a template needs exactly one {{}} for the class name: {(bad or [''])[0]!r}")
        prompts = [t.format(c) for c in classes for t in templates]
        embeddings = self.encode_text(prompts).view(len(classes), len(templates), -1)
        return F.normalize(embeddings.mean(dim=1), dim=-1)

    @torch.no_grad()
    def zero_shot(self, images: ImageInput | Sequence[ImageInput], classes: Sequence[str],
                  templates: Sequence[str] = DEFAULT_TEMPLATES, top_k: int = 5) -> Classification | list[Classification]:
        """The ``top_k`` of ``classes`` (named in words) for each image: one result per image, or one for one."""
        classes = list(classes)
        if not classes:
            raise InputError("no classes given")
        probs = self.zero_shot_probs(self.encode_image(images), self.class_embeddings(classes, templates))
        single = probs.ndim == 1
        values, indices = probs.view(-1, len(classes)).cpu().topk(max(1, min(top_k, len(classes))), dim=-1)
        results = [Classification([classes[c] for c in i], [round(p, 4) for p in v])
                   for v, i in zip(values.tolist(), indices.tolist())]
        return results[0] if single else results

    def zero_shot_probs(self, image_embeddings: Tensor, class_embeddings: Tensor) -> Tensor:
        """(..., C) class probabilities of (..., E) image embeddings against (C, E) class embeddings."""
        scale = self.scale().detach().to(image_embeddings.device)
        return (scale * image_embeddings @ class_embeddings.to(image_embeddings.device).T).softmax(dim=-1)
