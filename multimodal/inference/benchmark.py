"""Side-by-side speed measurements: our models against their references, in one process, same settings.

Timing: warm-up steps excluded, ``torch.cuda.synchronize`` around the timed loop, bf16 autocast and
fused AdamW on a GPU (fp32 and plain AdamW on a CPU). FLOPs come from ``torch.utils.flop_counter``
on one real step, so model FLOP utilisation (MFU) is measured work over the device's peak.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# dense bf16 tensor-core peaks (FLOP/s), for MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass
class Setting:
    device: torch.device
    batch: int
    steps: int
    warmup: int
    compile: bool

    @property
    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model: nn.Module, make_batch: Callable[[], tuple], loss_fn: Callable, setting: Setting,
                  items_per_step: int) -> dict:
    """Throughput (items/s), step time, MFU and peak memory of optimizer steps on fixed random batches."""
    model = model.to(setting.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=setting.device.type == "cuda")
    step_model = torch.compile(model) if setting.compile else model
    batch = make_batch()

    def step():
        with setting.autocast:
            loss = loss_fn(step_model, *batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        with setting.autocast:
            loss_fn(model, *batch).backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    for _ in range(setting.warmup):
        step()
    _sync(setting.device)
    if setting.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setting.device)
    start = time.perf_counter()
    for _ in range(setting.steps):
        step()
    _sync(setting.device)
    seconds = (time.perf_counter() - start) / setting.steps
    peak = peak_flops(setting.device)
    return {"throughput": items_per_step / seconds, "step_ms": seconds * 1e3, "tflops_per_step": flops / 1e12,
            "mfu": flops / seconds / peak if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated(setting.device) / 2**30
            if setting.device.type == "cuda" else None}


def vit_rows(setting: Setting, image_size: int, size: str) -> dict:
    """Our ImageClassifier's ViT against timm's VisionTransformer of the same shape."""
    import timm

    from multimodal.tasks import ImageClassifier

    dims = {"base": dict(dim=768, depth=12, num_heads=12), "tiny": dict(dim=192, depth=4, num_heads=3)}[size]
    ours = ImageClassifier(vit={"image_size": image_size, "patch_size": 16,
                                "transformer": {**dims, "norm_eps": 1e-6}}, class_names=[str(i) for i in range(1000)])
    reference = timm.models.VisionTransformer(img_size=image_size, patch_size=16, embed_dim=dims["dim"],
                                              depth=dims["depth"], num_heads=dims["num_heads"], num_classes=1000)
    images = lambda: (torch.rand(setting.batch, 3, image_size, image_size, device=setting.device),
                      torch.randint(0, 1000, (setting.batch,), device=setting.device))
    loss = lambda model, x, y: F.cross_entropy(model(x), y)
    rows = {"ours": time_training(ours, images, loss, setting, setting.batch),
            "timm": time_training(reference, images, loss, setting, setting.batch)}
    rows["ratio_ours_over_reference"] = rows["ours"]["throughput"] / rows["timm"]["throughput"]
    return rows


def attention_rows(setting: Setting, lengths: list[int], dim: int = 256, heads: int = 4, window: int = 256,
                   low_rank: int = 256) -> list[dict]:
    """Forward + backward time and peak memory of one attention layer per variant and sequence length."""
    from multimodal.nn import MultiHeadAttention

    variants = {"full": {}, "local": {"window": window}, "linformer": {"low_rank": low_rank, "max_len": max(lengths)}}
    rows = []
    for length in lengths:
        for name, kwargs in variants.items():
            layer = MultiHeadAttention(dim, heads, **kwargs).to(setting.device)
            x = torch.randn(1, length, dim, device=setting.device, requires_grad=True)
            try:
                for i in range(setting.warmup + setting.steps):
                    if i == setting.warmup:
                        _sync(setting.device)
                        if setting.device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(setting.device)
                        start = time.perf_counter()
                    with setting.autocast:
                        layer(x).float().square().mean().backward()
                _sync(setting.device)
                ms = (time.perf_counter() - start) / setting.steps * 1e3
                memory = (torch.cuda.max_memory_allocated(setting.device) / 2**20
                          if setting.device.type == "cuda" else None)
                rows.append({"variant": name, "length": length, "ms": ms, "peak_memory_mib": memory})
            except torch.OutOfMemoryError:
                rows.append({"variant": name, "length": length, "ms": None, "peak_memory_mib": None, "error": "out of memory"})
            del layer, x
    return rows
