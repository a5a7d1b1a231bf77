"""Zero-shot image classification with a CLIP: classes named in words.

A class's embedding is the normalised mean of the normalised embeddings of its prompts (one per template,
e.g. "a small {}"). A folder with one sub-folder per class (underscores read as spaces) is labelled, and
accuracy is reported for it, overall and per folder given.
"""

from __future__ import annotations

from pathlib import Path

import torch

from multimodal.data import read_text, split_lines
from multimodal.data.images import collect_images, subfolders
from multimodal.errors import InputError
from multimodal.inference.common import image_batches
from multimodal.models.clip import CLIP, DEFAULT_TEMPLATES


def folder_class(name: str) -> str:
    return name.replace("_", " ")


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty, stripped lines of a text file (classes or templates), "#" comments left out; read as every
    text file is (``read_text``: UTF-8, a byte-order mark dropped, InputError naming the file)."""
    path = Path(path)
    lines = [line.strip() for line in split_lines(read_text(path, what))]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise InputError(f"no {what} in the file", path)
    return lines


def check_classes(classes: list[str], source: str | Path) -> list[str]:
    classes = [c.strip() for c in classes]
    if not classes or any(not c for c in classes):
        raise InputError("empty class name", source)
    seen, duplicates = set(), []
    for c in classes:
        if c.lower() in seen and c not in duplicates:
            duplicates.append(c)
        seen.add(c.lower())
    if duplicates:
        raise InputError(f"duplicate class name(s): {', '.join(map(repr, duplicates))}", source)
    return classes


def check_templates(templates: list[str], source: str | Path) -> list[str]:
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise InputError(f"a template needs exactly one {{}} for the class name: {bad[0]!r}", source)
    return templates


def collect(inputs: list[str | Path], classes: list[str] | None) -> tuple[list[str] | None, list[tuple[Path, int | None, str]]]:
    """(classes, [(image path, label or None, input it came from)]).

    Without ``classes``, every input folder must have class sub-folders, and the classes are their names
    (underscores read as spaces) over all inputs. With ``classes``, a folder whose sub-folders are all
    classes is labelled; any other folder or file is not.
    """
    if classes is None:
        items = [Path(p) for p in inputs]
        for item in items:
            if not item.exists():
                raise InputError("no such file or folder", item)
        for item in items:
            if not subfolders(item):
                raise InputError("no classes given (--classes / --classes-file) and no class sub-folders here", item)
        names = sorted({folder_class(d.name) for item in items for d in subfolders(item)})
        classes = check_classes(names, ", ".join(map(str, items)))
    paths, labels, sources = collect_images(inputs, classes, folder_class)
    return classes, list(zip(paths, labels, sources))


@torch.no_grad()
def embed_images(model: CLIP, paths: list[Path], batch_size: int = 64, quiet: bool = False,
                 desc: str = "embedding images") -> tuple[torch.Tensor, list[Path], list[str]]:
    """(N, E) normalised embeddings of the readable images, those images, and why the others were skipped."""
    out, kept, skipped = [], [], []
    for batch, indices in image_batches(model.preprocess, paths, batch_size, desc, quiet, skipped):
        out.append(model.encode_image(batch).cpu())
        kept += [paths[i] for i in indices]
    return (torch.cat(out) if out else torch.empty(0, model.embed_dim)), kept, skipped


def _accuracy(results: list[dict], k: int) -> dict:
    return {"top1": sum(r["correct"] for r in results) / len(results),
            f"top{k}": sum(r["correct_top_k"] for r in results) / len(results), "images": len(results)}


@torch.no_grad()
def zero_shot(model: CLIP, inputs: list[str | Path], classes: list[str] | None = None,
              templates: list[str] | tuple[str, ...] = DEFAULT_TEMPLATES, top_k: int = 5, batch_size: int = 64,
              quiet: bool = False) -> dict:
    """Top-k classes of every image; accuracy (top-1 / top-k) over the labelled ones, overall and per input."""
    classes, found = collect(inputs, classes)
    top_k = max(1, min(top_k, len(classes)))
    weights = model.class_embeddings(classes, templates).cpu()  # (C, E)
    index = {path: (label, source) for path, label, source in found}
    image_emb, kept, skipped = embed_images(model, [p for p, _, _ in found], batch_size, quiet)
    probs = model.zero_shot_probs(image_emb, weights)  # (N, C)
    values, indices = probs.topk(top_k, dim=-1)
    results = []
    for path, v, i in zip(kept, values.tolist(), indices.tolist()):
        label, source = index[path]
        r = {"path": str(path), "top": [{"label": classes[c], "prob": round(p, 4)} for p, c in zip(v, i)]}
        if label is not None:
            r.update(true=classes[label], correct=i[0] == label, correct_top_k=label in i, input=source)
        results.append(r)
    summary = {"classes": classes, "templates": list(templates), "images": len(results), "skipped": skipped,
               "predictions": results}
    labelled = [r for r in results if "true" in r]
    if labelled:
        summary["accuracy"] = _accuracy(labelled, top_k)
        sources = sorted({r["input"] for r in labelled})
        if len(sources) > 1:
            summary["accuracy_per_input"] = {s: _accuracy([r for r in labelled if r["input"] == s], top_k)
                                             for s in sources}
    return summary
