"""Whisper checkpoints, OpenAI format and Hugging Face ``transformers`` format -> our AudioEncoder + TextDecoder
(a SpeechToText; Whisper's tiktoken tokenizer is `multimodal.tokenizers.WhisperTokenizer`).

Both formats hold the same model: two convs, sinusoidal encoder positions, pre-LN blocks whose key
projections have no bias (a key bias only shifts every score of a query by the same amount, so softmax
ignores it: we fill zeros), a final norm per stack, learned decoder positions, and an output layer tied to
the token embedding. The encoder positions are fixed sinusoids in every released checkpoint; we compute
them rather than store them, so a file whose positions differ is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from multimodal.errors import InputError
from multimodal.interop.open_clip import skip_init
from multimodal.interop.weights import read_state_dict
from multimodal.models import SpeechToText, SpeechToTextConfig, load_converted
from multimodal.nn import sinusoids
from multimodal.tokenizers import WhisperTokenizer

# the part of a block after blocks.N. / layers.N. -> ours, per format
_OPENAI = {"attn_ln": "norm1", "attn.out": "attn.proj", "cross_attn_ln": "norm_cross", "cross_attn.out": "cross.proj",
           "mlp_ln": "norm2", "mlp.0": "mlp.0", "mlp.2": "mlp.3"}
_HF = {"self_attn_layer_norm": "norm1", "self_attn.out_proj": "attn.proj", "encoder_attn_layer_norm": "norm_cross",
       "encoder_attn.out_proj": "cross.proj", "final_layer_norm": "norm2", "fc1": "mlp.0", "fc2": "mlp.3"}
_QKV_OPENAI = {"attn": "self", "cross_attn": "cross", "query": "q", "key": "k", "value": "v"}
_QKV_HF = {"self_attn": "self", "encoder_attn": "cross", "q_proj": "q", "k_proj": "k", "v_proj": "v"}




def _with_model_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF ``WhisperModel`` files name their keys without the ``model.`` of WhisperForConditionalGeneration."""
    if "encoder.conv1.weight" in state and "encoder.layer_norm.weight" in state:
        return {f"model.{k}": v for k, v in state.items()}
    return state


def whisper_format(state: dict[str, Tensor]) -> str:
    """"openai" (encoder.blocks.N.attn.query …) or "hf" ([model.]encoder.layers.N.self_attn.q_proj …)."""
    if "encoder.conv1.weight" in state and "encoder.layer_norm.weight" in state:
        return "hf"
    if "encoder.conv1.weight" in state:
        return "openai"
    if "model.encoder.conv1.weight" in state:
        return "hf"
    raise ValueError("not a Whisper state dict (no encoder.conv1.weight or model.encoder.conv1.weight)")


def whisper_configs_from_state(state: dict[str, Tensor], num_heads: int | None = None,
                               decoder_heads: int | None = None) -> dict:
    """SpeechToTextConfig fields (encoder, decoder) from a Whisper state dict of either format.

    Every released Whisper uses 64-dimensional heads; pass ``num_heads`` for other layouts."""
    fmt, state = whisper_format(state), _with_model_prefix(state)
    p = "" if fmt == "openai" else "model."
    blocks, attn, fc = ("blocks", "attn.query", "mlp.0") if fmt == "openai" else ("layers", "self_attn.q_proj", "fc1")

    def depth(stack):
        return 1 + max(int(m.group(1)) for k in state if (m := re.match(rf"{p}{stack}\.{blocks}\.(\d+)\.", k)))

    def stack(name, heads):
        dim = state[f"{p}{name}.{blocks}.0.{attn}.weight"].shape[0]
        return {"dim": dim, "depth": depth(name), "num_heads": heads or max(dim // 64, 1),
                "mlp_ratio": state[f"{p}{name}.{blocks}.0.{fc}.weight"].shape[0] / dim, "activation": "gelu",
                "norm_eps": 1e-5}

    enc_pos = state["encoder.positional_embedding" if fmt == "openai" else "model.encoder.embed_positions.weight"]
    dec_pos = state["decoder.positional_embedding" if fmt == "openai" else "model.decoder.embed_positions.weight"]
    embed = state["decoder.token_embedding.weight" if fmt == "openai" else "model.decoder.embed_tokens.weight"]
    encoder = {"n_mels": state[f"{p}encoder.conv1.weight"].shape[1], "max_frames": enc_pos.shape[0],
               "transformer": stack("encoder", num_heads)}
    decoder = {"vocab_size": embed.shape[0], "context_length": dec_pos.shape[0],
               "transformer": stack("decoder", decoder_heads or num_heads)}
    return {"encoder": encoder, "decoder": decoder}


def _block(prefix: str, key: str, value: Tensor, names: dict, qkv_names: dict, pending: dict, out: dict) -> None:
    parts = key.rsplit(".", 2)  # e.g. ["attn", "query", "weight"] / ["self_attn", "q_proj", "weight"]
    if len(parts) == 3 and parts[0] in qkv_names and parts[1] in qkv_names:
        pending.setdefault((prefix, qkv_names[parts[0]]), {})[(qkv_names[parts[1]], parts[2])] = value
        return
    name, _, kind = key.rpartition(".")
    out[f"{prefix}{names.get(name, name)}.{kind}" if name else prefix + key] = value


def _fuse(pending: dict, out: dict) -> None:
    """q, k, v Linears -> our fused qkv (self-attention) or q + kv (cross-attention); missing key bias = 0."""
    for (prefix, which), parts in pending.items():
        if ("k", "bias") not in parts and ("k", "weight") in parts and ("q", "bias") in parts:
            parts[("k", "bias")] = torch.zeros_like(parts[("q", "bias")])
        try:
            if which == "self":
                for kind in ("weight", "bias"):
                    out[f"{prefix}attn.qkv.{kind}"] = torch.cat([parts[(n, kind)] for n in "qkv"])
            else:
                for kind in ("weight", "bias"):
                    out[f"{prefix}cross.q.{kind}"] = parts[("q", kind)]
                    out[f"{prefix}cross.kv.{kind}"] = torch.cat([parts[(n, kind)] for n in "kv"])
        except KeyError:  # an incomplete attention: leave its pieces under their own names for the strict load
            for (n, kind), v in parts.items():
                out[f"{prefix}{which}_attn.{n}.{kind}"] = v


def convert_whisper(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Whisper state dict (OpenAI or HF format) -> SpeechToText state dict (encoder., decoder.).

    The encoder positions (computed by us) and a head tied to the token embedding are dropped; the
    CTC head, which Whisper has not, and our log-mel buffers are left out (``load_whisper`` adds them)."""
    fmt, state = whisper_format(state), _with_model_prefix(state)
    names, qkv_names = (_OPENAI, _QKV_OPENAI) if fmt == "openai" else (_HF, _QKV_HF)
    out, pending = {}, {}
    for key, value in state.items():
        k = key.removeprefix("model.") if fmt == "hf" else key
        if m := re.match(r"(encoder|decoder)\.(?:blocks|layers)\.(\d+)\.(.+)$", k):
            _block(f"{m.group(1)}.transformer.blocks.{m.group(2)}.", m.group(3), value, names, qkv_names, pending, out)
        elif k in ("encoder.positional_embedding", "encoder.embed_positions.weight"):
            expected = sinusoids(*value.shape)
            if (value.float() - expected).abs().max() > 1e-4:
                out["encoder.positions (not sinusoidal)"] = value  # named by the strict load
        elif k.startswith(("encoder.conv1.", "encoder.conv2.")):
            out[k] = value
        elif re.match(r"encoder\.(ln_post|layer_norm)\.", k):
            out[f"encoder.transformer.norm.{k.rsplit('.', 1)[1]}"] = value
        elif re.match(r"decoder\.(ln|layer_norm)\.", k):
            out[f"decoder.transformer.norm.{k.rsplit('.', 1)[1]}"] = value
        elif k in ("decoder.token_embedding.weight", "decoder.embed_tokens.weight"):
            out["decoder.token_embedding.weight"] = value
        elif k in ("decoder.positional_embedding", "decoder.embed_positions.weight"):
            out["decoder.positions"] = value
        elif key == "proj_out.weight":
            embed = state.get("model.decoder.embed_tokens.weight")
            if embed is None or not torch.equal(embed, value):
                out["proj_out.weight (not tied to the token embedding)"] = value
        else:
            out[key] = value  # left as it is, so that the strict load names it
    _fuse(pending, out)
    return out


def load_whisper(path: str | Path, num_heads: int | None = None, decoder_heads: int | None = None,
                 language: str | None = "en", task: str = "transcribe", state: dict[str, Tensor] | None = None):
    """A SpeechToText with the weights of a Whisper file (OpenAI .pt, or HF model.safetensors /
    pytorch_model.bin), Whisper's tokenizer (multilingual when the vocabulary is, with the number of
    languages it implies) and a decoder that starts from Whisper's prompt. Its CTC head is zero (Whisper
    has none); transcription uses the attention decoder only. ``state``: the file's state dict when it
    was read already."""
    state = read_state_dict(path) if state is None else state
    try:
        cfg = whisper_configs_from_state(state, num_heads, decoder_heads)
    except (ValueError, KeyError) as e:
        raise InputError(str(e), path) from None
    vocab = cfg["decoder"]["vocab_size"]
    # 51864 / 51865 / 51866: English-only; multilingual with 99 languages (before large-v3) or 100
    multilingual = vocab >= 51865
    tokenizer = WhisperTokenizer(multilingual, num_languages=vocab - 51766 if multilingual else 99,
                                 language=language, task=task)
    if tokenizer.vocab_size != vocab:
        raise InputError(f"the decoder has {vocab} tokens, Whisper's tokenizer {tokenizer.vocab_size}", path)
    with skip_init():  # every weight comes from the file (the strict load checks it)
        model = SpeechToText(SpeechToTextConfig(**cfg), tokenizer)  # its decoder starts from tokenizer.prompt
    converted = convert_whisper(state)
    converted["ctc_head.weight"] = torch.zeros_like(model.ctc_head.weight)
    converted["ctc_head.bias"] = torch.zeros_like(model.ctc_head.bias)
    # the log-mel front end's window and filter bank are Whisper's already (computed, not learned)
    converted.update({k: v for k, v in model.state_dict().items() if k.startswith("encoder.log_mel.")})
    load_converted(model, converted, path)
    return model.eval()
