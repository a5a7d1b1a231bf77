"""Classifier: a ViT and a linear head over named classes, with its own input normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from multimodal.config import as_config
from multimodal.encoders import ViT, ViTConfig
from multimodal.models.base import Classification, ImageInput, ImagePreprocess, Model, normalisation


@dataclass
class ClassifierConfig:
    vit: ViTConfig = field(default_factory=ViTConfig)
    mean: tuple[float, ...] = (0.5,)  # per channel, applied to images in [0, 1]
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self):
        self.vit = as_config(ViTConfig, self.vit)
        self.mean, self.std = normalisation(self.mean, self.std, self.vit.channels)


class Classifier(Model):
    """Images (B, C, H, W) in [0, 1] -> class logits (B, len(class_names)); ``classify`` takes files too."""

    def __init__(self, config: ClassifierConfig, class_names: Sequence[str]):
        super().__init__()
        if (isinstance(class_names, str) or not isinstance(class_names, Sequence)
                or not all(isinstance(c, str) for c in class_names)):
            raise TypeError(f"class_names must be a list of strings, not {class_names!r:.200}")
        if not class_names or len(set(class_names)) != len(class_names):
            raise ValueError(f"class names must be distinct and at least one: {list(class_names)!r:.200}")
        self.config, self.class_names = as_config(ClassifierConfig, config), list(class_names)
        self.vit = ViT(self.config.vit)
        self.head = nn.Linear(self.vit.dim, len(self.class_names))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor(self.config.mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.config.std).view(-1, 1, 1), persistent=False)
        self.preprocess = ImagePreprocess(self.config.vit.image_size, self.config.vit.channels)

    def describe(self) -> dict:
        return self._description(class_names=self.class_names)

    def forward(self, images: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.vit((images - self.mean) / self.std))

    @torch.no_grad()
    def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5) -> Classification | list[Classification]:
        """The ``top_k`` classes of each image (paths, PIL images, arrays or tensors): one result per image,
        or one result for one image."""
        batch, single = self.preprocess(images)
        probs = self(batch.to(self.device)).softmax(-1).cpu()
        values, indices = probs.topk(max(1, min(top_k, len(self.class_names))), dim=-1)
        results = [Classification([self.class_names[c] for c in i], [round(p, 4) for p in v])
                   for v, i in zip(values.tolist(), indices.tolist())]
        return results[0] if single else results
