"""Evaluation measures shared by training (validation) and inference (``retrieve.py eval``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


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
