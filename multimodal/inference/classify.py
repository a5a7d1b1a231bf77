"""Classify image files and folders with a trained ImageClassifier; accuracy for labelled folders."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from multimodal.data.images import IMAGE_SUFFIXES, EvalTransform, find_images, load_image
from multimodal.errors import InputError
from multimodal.inference.common import batches
from multimodal.tasks import ImageClassifier


@dataclass
class LabelledImages:
    """Images and, where a folder has one sub-folder per class of the model, their true labels."""
    paths: list[Path]
    labels: list[int | None]


def collect(inputs: list[str | Path], class_names: list[str]) -> LabelledImages:
    """Image files and folders -> paths; a folder whose sub-folders are all model classes is labelled."""
    paths, labels = [], []
    for item in map(Path, inputs):
        if not item.exists():
            raise InputError("no such file or folder", item)
        subdirs = sorted(d for d in item.iterdir() if d.is_dir()) if item.is_dir() else []
        if subdirs and all(d.name in class_names for d in subdirs):
            for d in subdirs:
                found = find_images(d)
                if not found:
                    warnings.warn(f"class folder {d} has no images")
                paths += found
                labels += [class_names.index(d.name)] * len(found)
        else:
            found = find_images(item)
            if item.is_file() and item.suffix.lower() not in IMAGE_SUFFIXES:
                found = [item]  # the user named it: try it, and say clearly if it is not an image
            paths += found
            labels += [None] * len(found)
    if not paths:
        raise InputError("no image files found", ", ".join(map(str, inputs)))
    return LabelledImages(paths, labels)


@torch.no_grad()
def classify(model: ImageClassifier, images: LabelledImages, top_k: int = 5, batch_size: int = 64,
             quiet: bool = False) -> dict:
    """Top-k predictions for every readable image; unreadable ones are skipped, counted and named."""
    cfg, transform = model.vit.cfg, EvalTransform(model.vit.cfg.image_size)
    top_k = min(top_k, len(model.class_names))
    results, skipped = [], []
    pairs = list(zip(images.paths, images.labels))
    for chunk in batches(pairs, batch_size, "classifying", quiet):
        tensors, kept = [], []
        for path, label in chunk:
            try:
                tensors.append(transform(load_image(path, cfg.channels)))
                kept.append((path, label))
            except InputError as e:
                skipped.append(str(e))
        if not tensors:
            continue
        probs = model(torch.stack(tensors).to(model.device)).softmax(-1).cpu()
        values, indices = probs.topk(top_k, dim=-1)
        for (path, label), v, i in zip(kept, values.tolist(), indices.tolist()):
            result = {"path": str(path), "top": [{"label": model.class_names[c], "prob": round(p, 4)} for p, c in zip(v, i)]}
            if label is not None:
                result["true"] = model.class_names[label]
                result["correct"] = i[0] == label
                result["correct_top_k"] = label in i
            results.append(result)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): " + "; ".join(skipped[:5]))
    summary = {"images": len(results), "skipped": skipped, "predictions": results}
    labelled = [r for r in results if "true" in r]
    if labelled:
        summary["accuracy"] = {"top1": sum(r["correct"] for r in labelled) / len(labelled),
                               f"top{top_k}": sum(r["correct_top_k"] for r in labelled) / len(labelled),
                               "labelled_images": len(labelled)}
    return summary
