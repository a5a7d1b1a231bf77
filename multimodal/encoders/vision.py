"""Vision transformer: patch embedding + positions + the shared Transformer + pooling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimodal.config import as_config
from multimodal.nn import Transformer, TransformerConfig, resize_grid_positions


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    pool: str = "cls"  # "cls": the class token; "mean": the mean of the patch tokens
    pre_norm: bool = False  # a LayerNorm before the blocks, as in CLIP's image tower
    # "patch": one strided convolution per patch (ViT, CLIP); "conv": stride-2 3x3 convolutions down to the patch
    # grid (Xiao et al. 2021, "Early convolutions help transformers see better"): far fewer images to learn from
    stem: str = "patch"
    # "stem": the stem sees the colour channels, so it may learn a shape in the colours it was shown it in; "apart":
    # the stem sees each pixel's largest channel, reading a shape alike in every colour, and each patch's colour (the
    # mean and the largest value of each channel over the patch) is embedded apart and added to its token
    color: str = "stem"
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self):  # a config may come from a damaged file: every field is checked before layers are built
        self.transformer = as_config(TransformerConfig, self.transformer)
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"vit {name} must be a positive integer, got {value!r}")
        if not isinstance(self.channels, int) or isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise ValueError(f"vit channels must be 1 (gray) or 3 (RGB), as the image readers give, got {self.channels!r}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"vit stem must be 'patch' or 'conv', got {self.stem!r}")
        if self.color not in ("stem", "apart"):
            raise ValueError(f"vit color must be 'stem' or 'apart', got {self.color!r}")
        if self.color == "apart" and self.channels != 3:
            raise ValueError(f"vit color 'apart' needs 3 channels, got {self.channels!r}")
        if self.stem == "conv" and (self.patch_size & (self.patch_size - 1) or self.patch_size < 2):
            raise ValueError(f"a conv stem halves the image down to the patch grid: patch_size must be a power of 2, "
                             f"got {self.patch_size}")
        if not isinstance(self.pre_norm, bool):
            raise ValueError(f"vit pre_norm must be true or false, got {self.pre_norm!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


def conv_stem(channels: int, dim: int, patch_size: int) -> nn.Sequential:
    """3x3 convolutions of stride 2 (BatchNorm, GELU) from the image to the patch grid, widening to dim / 2, then
    a 1x1 convolution to dim: (B, C, H, W) -> (B, D, H / patch, W / patch)."""
    layers, width = [], channels
    for _ in range(patch_size.bit_length() - 1):
        layers += [nn.Conv2d(width, dim // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dim // 2), nn.GELU()]
        width = dim // 2
    return nn.Sequential(*layers, nn.Conv2d(width, dim, 1))


class ViT(nn.Module):
    """(B, C, H, W) images -> (B, D) pooled features; ``forward_tokens`` gives all (B, N, D) tokens."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.transformer.dim
        stem_channels = 1 if cfg.color == "apart" else cfg.channels
        self.patch_embed = (nn.Conv2d(stem_channels, dim, cfg.patch_size, stride=cfg.patch_size) if cfg.stem == "patch"
                            else conv_stem(stem_channels, dim, cfg.patch_size))
        self.color_embed = nn.Conv2d(2 * cfg.channels, dim, 1) if cfg.color == "apart" else None
        self.num_prefix = 1 if cfg.pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.pool == "cls" else None
        grid = cfg.image_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_prefix + grid * grid, dim) * 0.02)
        self.norm_pre = nn.LayerNorm(dim, eps=cfg.transformer.norm_eps) if cfg.pre_norm else nn.Identity()
        self.transformer = Transformer(cfg.transformer)
        self.dim = dim
        self.apply(_init_weights)
        for m in self.modules():  # the fused qkv is three (dim, dim) maps, initialised as such (timm's "jax" mode)
            if isinstance(getattr(m, "qkv", None), nn.Linear):
                bound = math.sqrt(3.0 / dim)  # xavier_uniform's bound for a square map
                nn.init.uniform_(m.qkv.weight, -bound, bound)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def embed_patches(self, images: Tensor) -> Tensor:  # (B, C, H, W) -> (B, D, H/p, W/p)
        if self.color_embed is None:
            return self.patch_embed(images)
        p = self.cfg.patch_size
        color = torch.cat([F.avg_pool2d(images, p), F.max_pool2d(images, p)], dim=1)  # (B, 2C, H/p, W/p)
        return self.patch_embed(images.amax(dim=1, keepdim=True)) + self.color_embed(color)

    def forward_tokens(self, images: Tensor) -> Tensor:  # (B, C, H, W) -> (B, prefix + N, D)
        x = self.embed_patches(images)  # (B, D, H/p, W/p)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + resize_grid_positions(self.pos_embed, grid, self.num_prefix)
        return self.transformer(self.norm_pre(x))

    def pool(self, tokens: Tensor) -> Tensor:  # (B, prefix + N, D) -> (B, D)
        return tokens[:, 0] if self.cfg.pool == "cls" else tokens.mean(dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return self.pool(self.forward_tokens(images))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.set_grad_checkpointing(enable)

    def lock(self) -> None:
        """Freeze every parameter (LiT: a locked image tower)."""
        self.requires_grad_(False)
        self.eval()


def _init_weights(m: nn.Module) -> None:
    # Xavier-uniform, as the original ViT (big_vision): the scale follows the width. timm's default, std 0.02, suits
    # 768-wide models but leaves narrow ones (the 64-wide MNIST recipe) with near-zero attention logits at the start.
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
