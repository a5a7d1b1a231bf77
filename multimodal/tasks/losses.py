"""Contrastive image–text losses, apart from the models (as in OpenCLIP).

Under DDP each process embeds its own slice of the batch. The features of all processes are
gathered *with gradients*, and each process scores its own rows against every column, so N
processes give the same loss and, after DDP's gradient averaging, the same gradients as one
process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """(b, D) local features -> (N*b, D) features of all processes, and this process's first row."""
    if not _distributed():
        return x, 0
    from torch.distributed.nn.functional import all_gather  # its backward sends each gradient home

    return torch.cat(all_gather(x), dim=0), dist.get_rank() * x.shape[0]


def clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE. image, text: (b, D) L2-normalised, row i of each a matching pair."""
    all_image, offset = gather_with_grad(image)
    all_text, _ = gather_with_grad(text)
    labels = torch.arange(image.shape[0], device=image.device) + offset
    image_to_text = logit_scale * image @ all_text.T  # (b, N*b)
    text_to_image = logit_scale * text @ all_image.T
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


def siglip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """Sigmoid loss (Zhai et al. 2023): every image–text pair is its own binary decision."""
    all_text, offset = gather_with_grad(text)
    logits = logit_scale * image @ all_text.T + logit_bias  # (b, N*b)
    targets = -torch.ones_like(logits)
    targets[torch.arange(image.shape[0]), torch.arange(image.shape[0]) + offset] = 1.0
    return -F.logsigmoid(targets * logits).sum() / image.shape[0]
