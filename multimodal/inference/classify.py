"""Classify image files and folders with a Classifier; accuracy for labelled folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from multimodal.data.images import collect_images
from multimodal.inference.common import image_batches
from multimodal.models import Classifier


@dataclass
class LabelledImages:
    """Images and, where a folder has one sub-folder per class of the model, their true labels."""
    paths: list[Path]
    labels: list[int | None]


def collect(inputs: list[str | Path], class_names: list[str]) -> LabelledImages:
    """Image files and folders -> paths; a folder whose sub-folders are all model classes is labelled."""
    paths, labels, _ = collect_images(inputs, class_names)
    return LabelledImages(paths, labels)


@torch.no_grad()
def classify(model: Classifier, images: LabelledImages, top_k: int = 5, batch_size: int = 64,
             quiet: bool = False) -> dict:
    """Top-k predictions for every readable image; unreadable ones are skipped, counted and named."""
    top_k = min(top_k, len(model.class_names))
    results, skipped = [], []
    for batch, kept in image_batches(model.preprocess, images.paths, batch_size, "classifying", quiet, skipped):
        for i, top in zip(kept, model.classify(batch, top_k)):
            result = {"path": str(images.paths[i]), "top": [{"label": c, "prob": p} for c, p in zip(top.labels, top.scores)]}
            if images.labels[i] is not None:
                result["true"] = model.class_names[images.labels[i]]
                result["correct"] = top.label == result["true"]
                result["correct_top_k"] = result["true"] in top.labels
            results.append(result)
    summary = {"images": len(results), "skipped": skipped, "predictions": results}
    labelled = [r for r in results if "true" in r]
    if labelled:
        summary["accuracy"] = {"top1": sum(r["correct"] for r in labelled) / len(labelled),
                               f"top{top_k}": sum(r["correct_top_k"] for r in labelled) / len(labelled),
                               "labelled_images": len(labelled)}
    return summary
