"""OpenCLIP ViT checkpoints (both towers, logit scale) -> CLIP, with the CLIP BPE tokenizer that open_clip
ships (``multimodal.tokenizers.CLIPTokenizer``).

Layout of an OpenCLIP (and OpenAI CLIP) ViT state dict:
- image tower ``visual.``: conv1 (no bias), class_embedding (D,), positional_embedding (1 + N, D), ln_pre,
  transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_post, proj (D, E)
- text tower (top level): token_embedding, positional_embedding (T, D), the same causal resblocks, ln_final,
  text_projection (D, E), read at the end-of-text token (the last real token), and logit_scale.
The weights do not say which activation the blocks use: OpenAI-pretrained weights (and ``*-quickgelu``
configs) use QuickGELU, the other OpenCLIP configs GELU; pass ``activation`` accordingly.
OpenAI's original TorchScript ``.pt`` archives cannot be read with weights_only; use their state dicts as
open_clip / Hugging Face redistribute them (.safetensors / .bin).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from multimodal.errors import InputError
from multimodal.interop.weights import read_state_dict
from multimodal.models import CLIP, CLIPConfig, load_converted
from multimodal.tokenizers import CLIPTokenizer

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_BLOCK = {"ln_1": "norm1", "attn.out_proj": "attn.proj", "ln_2": "norm2", "mlp.c_fc": "mlp.0", "mlp.c_proj": "mlp.3"}


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Build modules without their random initialisation (seconds for a ViT-B), for weights that a strict
    load overwrites entirely next: torch.nn.init's fill-in functions do nothing inside this block."""
    names = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "zeros_", "ones_", "constant_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)




def clip_configs_from_state(state: dict[str, Tensor], activation: str = "quick_gelu",
                            text_heads: int | None = None, vision_heads: int | None = None) -> dict:
    """The CLIPConfig fields (vit, text, embed_dim) read off an OpenCLIP state dict's
    shapes. Heads are 64-dimensional in every OpenCLIP ViT config; pass the counts for other layouts."""
    if "visual.conv1.weight" not in state or "text_projection" not in state:
        raise ValueError("not an OpenCLIP ViT state dict (no visual.conv1.weight / text_projection)")
    if "visual.attn_pool.query" in state or "text.cls_emb" in state or "text_projection.weight" in state:
        raise ValueError("OpenCLIP models with attention pooling, a text class token or an HF text tower "
                         "are not supported")

    def depth(prefix):
        return 1 + max(int(m.group(1)) for k in state if (m := re.match(prefix + r"resblocks\.(\d+)\.", k)))

    width, channels, patch, _ = state["visual.conv1.weight"].shape
    grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
    text_width = state["token_embedding.weight"].shape[1]
    vision = {"dim": width, "depth": depth("visual.transformer."), "num_heads": vision_heads or max(width // 64, 1),
              "mlp_ratio": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
              "activation": activation, "norm_eps": 1e-5}
    text = {"dim": text_width, "depth": depth("transformer."), "num_heads": text_heads or max(text_width // 64, 1),
            "mlp_ratio": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
            "activation": activation, "norm_eps": 1e-5}
    embed_dim = state["text_projection"].shape[1]
    return {"vit": {"image_size": grid * patch, "patch_size": patch, "channels": channels, "pool": "cls",
                    "pre_norm": True, "transformer": vision},
            "text": {"vocab_size": state["token_embedding.weight"].shape[0],
                     "context_length": state["positional_embedding"].shape[0], "embed_dim": embed_dim,
                     "transformer": text},
            "embed_dim": embed_dim}


def _blocks(key: str, value: Tensor, ours: str, out: dict) -> None:
    """One resblock tensor (the part after ``resblocks.N.``) -> ours under ``ours`` (``...blocks.N.``)."""
    if key.startswith("attn.in_proj_"):
        out[f"{ours}attn.qkv.{key.rsplit('_', 1)[1]}"] = value  # q, k, v stacked as in our fused qkv
        return
    name, kind = key.rsplit(".", 1)
    out[f"{ours}{_BLOCK.get(name, name)}.{kind}"] = value


def convert_open_clip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenCLIP ViT state dict -> CLIP state dict (vit., image_projection., text., logit_scale)."""
    out = {}
    for key, value in state.items():
        if m := re.match(r"visual\.transformer\.resblocks\.(\d+)\.(.+)$", key):
            _blocks(m.group(2), value, f"vit.transformer.blocks.{m.group(1)}.", out)
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", key):
            _blocks(m.group(2), value, f"text.transformer.blocks.{m.group(1)}.", out)
        elif key == "visual.conv1.weight":
            out["vit.patch_embed.weight"] = value
            out["vit.patch_embed.bias"] = value.new_zeros(value.shape[0])  # CLIP's patch embedding has no bias
        elif key == "visual.class_embedding":
            out["vit.cls_token"] = value.reshape(1, 1, -1)
        elif key == "visual.positional_embedding":
            out["vit.pos_embed"] = value.unsqueeze(0)
        elif key.startswith("visual.ln_pre."):
            out[f"vit.norm_pre.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("visual.ln_post."):
            out[f"vit.transformer.norm.{key.rsplit('.', 1)[1]}"] = value
        elif key == "visual.proj":
            out["image_projection.weight"] = value.T.contiguous()
        elif key == "token_embedding.weight":
            out["text.token_embedding.weight"] = value
        elif key == "positional_embedding":
            out["text.positions"] = value
        elif key.startswith("ln_final."):
            out[f"text.transformer.norm.{key.rsplit('.', 1)[1]}"] = value
        elif key == "text_projection":
            out["text.projection.weight"] = value.T.contiguous()
        elif key == "attn_mask":  # a buffer in old OpenAI CLIP files: the causal mask, which we do not store
            continue
        else:
            out[key] = value  # logit_scale; anything else is left as it is so that the strict load names it
    return out


def load_open_clip(path: str | Path, activation: str = "quick_gelu", mean: tuple[float, ...] = OPENAI_MEAN,
                   std: tuple[float, ...] = OPENAI_STD, text_heads: int | None = None,
                   vision_heads: int | None = None, state: dict[str, Tensor] | None = None) -> CLIP:
    """A CLIP with the weights of an OpenCLIP / OpenAI CLIP ViT file (.safetensors / .pt /
    .bin) and open_clip's CLIP tokenizer. ``activation``: "quick_gelu" for OpenAI-pretrained weights and
    ``*-quickgelu`` configs, "gelu" for the other OpenCLIP configs. ``state``: the file's state dict when it
    was read already."""
    state = read_state_dict(path) if state is None else state
    try:
        cfg = clip_configs_from_state(state, activation, text_heads, vision_heads)
    except (ValueError, KeyError) as e:
        raise InputError(str(e), path) from None
    tokenizer = CLIPTokenizer()
    if tokenizer.vocab_size != cfg["text"]["vocab_size"]:
        raise InputError(f"the text tower has {cfg['text']['vocab_size']} tokens, the CLIP tokenizer "
                         f"{tokenizer.vocab_size}", path)
    with skip_init():  # every weight comes from the file (the strict load checks it)
        model = CLIP(CLIPConfig(**cfg, mean=mean, std=std), tokenizer)
    load_converted(model, convert_open_clip(state), path)
    return model.eval()


def logits(model, images: Tensor, texts: list[str]) -> Tensor:
    """(num_images, num_texts) CLIP logits: scale * cosine similarity, as open_clip computes them."""
    with torch.no_grad():
        image, text = model(images, texts)
    return model.scale() * image @ text.T
