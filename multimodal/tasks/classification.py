"""ImageClassifier: trains a Classifier (a ViT and a linear head) with label smoothing and optional mixup / cutmix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.data import Mixup
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from multimodal.encoders import ViTConfig
from multimodal.models import Classifier, ClassifierConfig
from multimodal.tasks.base import Task


class ImageClassifier(Task):
    """Trains a ``Classifier``: images (B, C, H, W) in [0, 1] -> class logits (B, num_classes).

    ``class_names`` may be left out of a recipe: ``configure_model`` then takes them from the data module, and
    they are saved in the checkpoint so that it runs alone.
    """

    model_class = Classifier
    data_sized = ("model.head.",)  # start_from leaves a head for another number of classes freshly initialised

    def __init__(self, vit: ViTConfig, class_names: list[str] | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_fraction: float = 0.05, label_smoothing: float = 0.1,
                 mixup: float = 0.0, cutmix: float = 0.0, mean: tuple[float, ...] = (0.5,),
                 std: tuple[float, ...] = (0.5,)):
        super().__init__(lr, weight_decay, warmup_fraction)
        self.save_plain_hyperparameters()
        self.config = ClassifierConfig(vit=vit, mean=mean, std=std)
        self.label_smoothing, self.mixup_alpha, self.cutmix_alpha = label_smoothing, mixup, cutmix
        if class_names is not None:
            self.build(class_names)

    def build(self, class_names: list[str]) -> None:
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"duplicate class names: {class_names}")
        self.model = Classifier(self.config, class_names)
        self.hparams["class_names"] = list(class_names)
        n = len(class_names)
        self.mixup = Mixup(mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha, label_smoothing=self.label_smoothing,
                           num_classes=n) if self.mixup_alpha or self.cutmix_alpha else None
        metrics = MetricCollection({"top1": MulticlassAccuracy(n, top_k=1, average="micro"),
                                    "top5": MulticlassAccuracy(n, top_k=min(5, n), average="micro")})
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")
        self.confusion = MulticlassConfusionMatrix(n)

    def adopt(self, source: Classifier) -> None:  # the pretrained model's normalisation
        self.config = dataclasses.replace(self.config, mean=source.config.mean, std=source.config.std)
        self.hparams.update(mean=list(source.config.mean), std=list(source.config.std))
        if self.model is not None:
            self.build(self.model.class_names)

    def configure_model(self) -> None:  # runs before training; also early, from weight-averaging callbacks
        names = getattr(self.trainer.datamodule, "class_names", None)
        if self.model is None:
            if not names:
                raise ValueError("class_names are neither in the model config nor given by the data module")
            self.build(names)
        elif names and list(names) != self.model.class_names:
            raise ValueError(f"the data's classes {names} differ from the model's {self.model.class_names}")
        super().configure_model()

    def forward(self, images: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.model(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)  # soft targets, label smoothing included
            loss = torch.sum(-targets * F.log_softmax(self(images), dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(self(images), labels, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val/loss", F.cross_entropy(logits, labels))
        self.val_metrics.update(logits, labels)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.test_metrics.update(logits, labels)
        self.confusion.update(logits, labels)
        self.log_dict(self.test_metrics)

    def on_test_epoch_end(self) -> None:
        if self.trainer.log_dir and self.trainer.is_global_zero:
            path = Path(self.trainer.log_dir) / "confusion_matrix.png"
            save_confusion_matrix(self.confusion.compute().cpu(), self.model.class_names, path)
            print(f"confusion matrix: {path}")
        self.confusion.reset()

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(dim=-1)


def save_confusion_matrix(matrix: Tensor, class_names: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, n * 0.45 + 2), max(4, n * 0.45 + 1.5)))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(class_names, rotation=90, fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                v = int(matrix[i, j])
                ax.text(j, i, v, ha="center", va="center", fontsize=7, color="white" if v > matrix.max() / 2 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

