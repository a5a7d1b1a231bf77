"""int8 inference on a CPU: every ``nn.Linear`` of a model as a dynamically quantized one (weights int8 per output
channel, activations quantized per batch as they come, fbgemm / oneDNN int8 matmuls), everything else float32."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (on the CPU, in eval mode) for inference with its linear layers in int8; the model's
    own methods run unchanged. Training, saving and other devices need the float model."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, whose CPU int8 linear ran 40x slower
        # here (0.6 against 24 ViT-B/32 images/s, torchao 0.18, eager and compiled alike): the working path stays.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, inplace=True)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
