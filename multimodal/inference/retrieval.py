"""Cross-modal retrieval with a CLIP or a SpeechCLIP: an index of image embeddings, text, image or spoken queries
against it, and recall@k on an image–caption or a spoken-caption pairs file.

An index is one safetensors file: the (N, E) normalised embeddings, and as metadata the image paths and a
fingerprint of the CLIP's weights and tokenizer, so an index is never queried with another CLIP. A SpeechCLIP's
index is its frozen CLIP's: one index serves both.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor

from multimodal.data.images import find_images, load_image
from multimodal.data.pairs import read_pairs
from multimodal.data.spoken import read_spoken_pairs
from multimodal.errors import InputError
from multimodal.inference.common import batches
from multimodal.inference.zero_shot import embed_images
from multimodal.metrics import recall_at_k
from multimodal.models import CLIP, SpeechCLIP
from multimodal.outputs import atomic_write

INDEX_FORMAT = "multimodal-retrieval-index/1"


def image_space(model: CLIP | SpeechCLIP) -> CLIP:
    """The CLIP whose image embeddings an index holds: the model itself, or a SpeechCLIP's frozen CLIP."""
    return model.clip if isinstance(model, SpeechCLIP) else model


def fingerprint(model) -> str:
    """sha256 (first 16 hex digits) of the model's weights and tokenizer: the same for the same weights in any file."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        # an int8 model's linear layers hold (int8 weight, bias) pairs and their dtype: their numbers count
        for tensor in value if isinstance(value, tuple) else [value] if isinstance(value, Tensor) else []:
            if tensor is not None:
                tensor = tensor.dequantize() if tensor.is_quantized else tensor
                h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(model.tokenizer.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def build_index(model, inputs: list[str | Path], out: str | Path, batch_size: int = 64, quiet: bool = False) -> dict:
    from safetensors.torch import save

    model = image_space(model)
    paths = []
    for item in inputs:
        paths += find_images(item)
    if not paths:
        raise InputError("no image files found", ", ".join(map(str, inputs)))
    embeddings, kept, skipped = embed_images(model, paths, batch_size, quiet)
    metadata = {"format": INDEX_FORMAT, "fingerprint": fingerprint(model),
                "paths": json.dumps([str(p.resolve()) for p in kept])}
    with atomic_write(out) as temporary:
        temporary.write_bytes(save({"embeddings": embeddings.contiguous()}, metadata=metadata))
    return {"index": str(out), "images": len(kept), "skipped": skipped, "fingerprint": metadata["fingerprint"]}


def load_index(path: str | Path, model) -> tuple[torch.Tensor, list[str]]:
    """(N, E) embeddings and image paths; refuses a file that is not an index or was built by another model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError("no such index file", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            embeddings = f.get_tensor("embeddings")
    except Exception as e:
        raise InputError(f"not a retrieval index ({type(e).__name__})", path) from None
    if metadata.get("format") != INDEX_FORMAT:
        raise InputError("not a retrieval index written by retrieve.py index", path)
    expected = fingerprint(image_space(model))
    if metadata.get("fingerprint") != expected:
        raise InputError(f"this index was built with another checkpoint (fingerprint {metadata.get('fingerprint')}, "
                         f"this checkpoint's is {expected}; int8 and float32 differ): rebuild it with retrieve.py "
                         "index", path)
    try:
        paths = json.loads(metadata["paths"])
    except (KeyError, ValueError):
        paths = None
    if not isinstance(paths, list) or len(paths) != len(embeddings) or embeddings.ndim != 2:
        raise InputError("damaged retrieval index: its image paths do not match its embeddings", path)
    return embeddings, paths


@torch.no_grad()
def query(model, index: str | Path, text: str | None = None, image: str | Path | None = None,
          audio: str | Path | None = None, top_k: int = 5) -> dict:
    """The top-k images of the index for a text, an image or (a SpeechCLIP) a spoken query, best first, with
    cosine similarities."""
    if sum(q is not None for q in (text, image, audio)) != 1:
        raise ValueError("give exactly one of text, image and audio")
    if audio is not None and not isinstance(model, SpeechCLIP):
        raise InputError(f"a {type(model).__name__} has no speech tower: query by voice with a SpeechCLIP "
                         f"(trained with SpeechImageContrastive)")
    embeddings, paths = load_index(index, model)
    if text is not None:
        if not text.strip():
            raise InputError("empty query text")
        q = model.encode_text([text]).cpu()
    elif image is not None:
        q, _, _ = embed_images(image_space(model), [Path(image)], quiet=True)
    else:
        q = model.encode_audio([str(audio)])
    scores = (q @ embeddings.float().T)[0]
    values, indices = scores.topk(min(top_k, len(paths)))
    return {"query": text if text is not None else str(image if image is not None else audio),
            "results": [{"path": paths[i], "score": round(v, 4)} for v, i in zip(values.tolist(), indices.tolist())]}


@torch.no_grad()
def evaluate(model, pairs_file: str | Path, ks: tuple[int, ...] = (1, 5, 10), batch_size: int = 64,
             quiet: bool = False) -> dict:
    """Recall@k both ways on a pairs file (checked strictly: a bad row is an error naming its line); for a
    SpeechCLIP, on a spoken-caption pairs file (``evaluate_spoken``)."""
    if isinstance(model, SpeechCLIP):
        return evaluate_spoken(model, pairs_file, ks, batch_size, quiet)
    pairs = read_pairs(pairs_file)
    image_emb, kept, skipped = embed_images(model, pairs.images, batch_size, quiet)
    if skipped:
        raise InputError(f"unreadable image: {skipped[0]}", pairs_file)
    repeated = sum(len(captions) - len(set(captions)) for captions in pairs.captions)
    if repeated:  # a caption counted twice would weigh twice in recall
        warnings.warn(f"{pairs_file}: {repeated} repeated (image, caption) row(s) counted once")
        pairs.captions = [list(dict.fromkeys(captions)) for captions in pairs.captions]
    texts, image_of_text = pairs.flat()
    text_emb = torch.cat([model.encode_text(texts[i:i + batch_size]).cpu() for i in range(0, len(texts), batch_size)])
    recall = recall_at_k(text_emb @ image_emb.T, image_of_text, ks)
    return {"pairs": str(pairs_file), "images": len(kept), "captions": len(texts),
            "text_to_image": {f"R@{k}": recall[f"text_to_image_R@{k}"] for k in ks},
            "image_to_text": {f"R@{k}": recall[f"image_to_text_R@{k}"] for k in ks}}


def embed_audio(model: SpeechCLIP, paths: list[Path], batch_size: int = 32, quiet: bool = False) -> torch.Tensor:
    """(N, E) normalised speech embeddings of audio files, with a progress bar."""
    return torch.cat([model.encode_audio([str(p) for p in chunk], batch_size=batch_size)
                      for chunk in batches(paths, batch_size, "embedding audio", quiet)])


@torch.no_grad()
def evaluate_spoken(model: SpeechCLIP, pairs_file: str | Path, ks: tuple[int, ...] = (1, 5, 10),
                    batch_size: int = 64, quiet: bool = False) -> dict:
    """Recall@k on a spoken-caption pairs file: speech→image and image→speech against the frozen CLIP's image
    embeddings, and where every line has a written caption, speech→text (among the file's distinct captions) and
    the CLIP's own text→image on those captions, the figure the speech tower is measured against; speech→image
    R@1 per ``source`` when the lines name theirs."""
    pairs = read_spoken_pairs(pairs_file)
    images = list(dict.fromkeys(p.image for p in pairs))
    position = {image: i for i, image in enumerate(images)}
    image_of = [position[p.image] for p in pairs]
    image_emb, _, skipped = embed_images(image_space(model), images, batch_size, quiet)
    if skipped:
        raise InputError(f"unreadable image: {skipped[0]}", pairs_file)
    speech = embed_audio(model, [p.audio for p in pairs], batch_size, quiet)
    similarity = speech @ image_emb.T
    recall = recall_at_k(similarity, image_of, ks)
    result = {"pairs": str(pairs_file), "clips": len(pairs), "images": len(images),
              "speech_to_image": {f"R@{k}": recall[f"text_to_image_R@{k}"] for k in ks},
              "image_to_speech": {f"R@{k}": recall[f"image_to_text_R@{k}"] for k in ks}}
    if all(p.text for p in pairs):
        texts = list(dict.fromkeys(p.text for p in pairs))
        text_emb = torch.cat([model.encode_text(list(chunk)).cpu() for chunk in batches(texts, batch_size, "", True)])
        row_of_text = {text: i for i, text in enumerate(texts)}
        text_of = [row_of_text[p.text] for p in pairs]
        to_text = recall_at_k(speech @ text_emb.T, text_of, ks)
        written = recall_at_k(text_emb[text_of] @ image_emb.T, image_of, ks)
        result["speech_to_text"] = {f"R@{k}": to_text[f"text_to_image_R@{k}"] for k in ks}
        result["text_to_image"] = {f"R@{k}": written[f"text_to_image_R@{k}"] for k in ks}
    sources = sorted({p.source for p in pairs if p.source is not None})
    if sources:
        result["speech_to_image_R@1_by_source"] = {}
        for name in sources:
            rows = [i for i, p in enumerate(pairs) if p.source == name]
            result["speech_to_image_R@1_by_source"][name] = recall_at_k(
                similarity[rows], [image_of[i] for i in rows], (1,))["text_to_image_R@1"]
    return result


def contact_sheet(result: dict, out: str | Path, thumb: int = 96) -> Path:
    """A PNG row of the top results, each with its rank and score under it."""
    from PIL import Image, ImageDraw

    items = result["results"]
    sheet = Image.new("RGB", (max(1, len(items)) * (thumb + 8) + 8, thumb + 40), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 2), str(result["query"])[:80], fill=(0, 0, 0))
    for n, item in enumerate(items):
        x = 8 + n * (thumb + 8)
        sheet.paste(load_image(item["path"]).resize((thumb, thumb)), (x, 16))
        draw.text((x, thumb + 20), f"{n + 1}: {item['score']:.3f}", fill=(0, 0, 0))
    with atomic_write(out) as temporary:
        sheet.save(temporary, format="PNG")
    return Path(out)
