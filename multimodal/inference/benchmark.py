"""Side-by-side speed measurements: our models against their references, in one process, same settings.

Timing: warm-up steps excluded, ``torch.cuda.synchronize`` around the timed loop, bf16 autocast and
fused AdamW on a GPU (fp32 and plain AdamW on a CPU). FLOPs come from ``torch.utils.flop_counter``
on one real step, so model FLOP utilisation (MFU) is measured work over the device's peak.
Where a reference can be converted with our interop code (OpenCLIP, Whisper), ours is built from the
reference's random weights, so both run the same architecture with the same numbers.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
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


def measure(step: Callable[[], object], setting: Setting) -> tuple[float, float | None]:
    """Seconds per call of ``step`` over ``setting.steps`` calls after ``setting.warmup`` untimed ones, and
    the peak GPU memory (GiB) of the timed calls (None on a CPU)."""
    cuda = setting.device.type == "cuda"
    for _ in range(setting.warmup):
        step()
    _sync(setting.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(setting.device)
    start = time.perf_counter()
    for _ in range(setting.steps):
        step()
    _sync(setting.device)
    seconds = (time.perf_counter() - start) / setting.steps
    return seconds, torch.cuda.max_memory_allocated(setting.device) / 2**30 if cuda else None


def time_training(model: nn.Module, make_batch: Callable[[], tuple], loss_fn: Callable, setting: Setting,
                  items_per_step: int) -> dict:
    """Throughput (items/s), step time, MFU and peak memory of optimizer steps on fixed random batches.
    ``--compile`` compiles ``loss_fn(model, *batch)`` as a whole, so methods other than forward are compiled too."""
    model = model.to(setting.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=setting.device.type == "cuda")
    step_loss = functools.partial(loss_fn, model)
    if setting.compile:
        step_loss = torch.compile(step_loss)
    batch = make_batch()

    def step():
        with setting.autocast:
            loss = step_loss(*batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        with setting.autocast:
            loss_fn(model, *batch).backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    seconds, memory = measure(step, setting)
    model.cpu()  # the next model's peak memory should not count this one's weights
    peak = peak_flops(setting.device)
    return {"throughput": items_per_step / seconds, "step_ms": seconds * 1e3, "tflops_per_step": flops / 1e12,
            "mfu": flops / seconds / peak if peak else None, "peak_memory_gib": memory}


@torch.no_grad()
def time_decoding(model: nn.Module, decode: Callable[[Tensor], list], features: Tensor, setting: Setting) -> dict:
    """Clips/s and decoded tokens/s of ``decode(features)`` (a batch of clips -> one token sequence each)."""
    model.to(setting.device).eval()
    features, out = features.to(setting.device), []

    def step():
        with setting.autocast:
            out[:] = decode(features)

    seconds, memory = measure(step, setting)
    model.cpu()
    tokens = [len(seq) for seq in out]
    return {"clips_per_s": len(out) / seconds, "tokens_per_s": sum(tokens) / seconds, "step_ms": seconds * 1e3,
            "peak_memory_gib": memory, "tokens_per_clip": sorted(set(tokens))}


def versus(setting: Setting, name: str, ours: Callable[[], dict], reference: Callable[[], dict],
           key: str = "throughput") -> dict:
    """Both rows and ours / reference of ``key``. Under ``--compile`` a row that fails records its error."""
    def attempt(row):
        try:
            return row()
        except Exception as e:  # noqa: BLE001 - a model torch.compile cannot take is a result, not a crash
            if not setting.compile:
                raise
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}

    rows = {"ours": attempt(ours), name: attempt(reference)}
    ok = key in rows["ours"] and key in rows[name]
    return {**rows, "ratio_ours_over_reference": rows["ours"][key] / rows[name][key] if ok else None}


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
    return versus(setting, "timm", lambda: time_training(ours, images, loss, setting, setting.batch),
                  lambda: time_training(reference, images, loss, setting, setting.batch))


def clip_rows(setting: Setting, size: str) -> dict:
    """CLIP training step (both towers, InfoNCE): our ImageTextContrastive converted from an OpenCLIP model
    with random weights ("ViT-B-32": GELU, not QuickGELU) against that model with open_clip's ClipLoss.
    Both take token ids (77, <end_of_text> at a random length, zeros after), so tokenisation is not timed."""
    import open_clip

    from multimodal.interop.open_clip import CLIPTokenizer, clip_configs_from_state, convert_open_clip, skip_init
    from multimodal.interop.weights import load_converted
    from multimodal.tasks import ImageTextContrastive
    from multimodal.tasks.losses import clip_loss

    if size == "base":
        reference = open_clip.create_model("ViT-B-32")
    else:
        reference = open_clip.CLIP(64, vision_cfg=dict(image_size=64, patch_size=32, width=128, layers=2),
                                   text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2))
    state = reference.state_dict()
    cfg = clip_configs_from_state(state, activation="gelu")
    with skip_init():
        ours = ImageTextContrastive(vit=cfg["vit"], text=cfg["text"], embed_dim=cfg["embed_dim"], loss="clip")
        ours.use_tokenizer(CLIPTokenizer())
    load_converted(ours, convert_open_clip(state), "open_clip")
    image_size, context, eot = cfg["vit"]["image_size"], cfg["text"]["context_length"], CLIPTokenizer.eos

    def batch():
        b, dev = setting.batch, setting.device
        lengths = torch.randint(8, context + 1, (b,), device=dev)
        tokens = torch.randint(1, eot - 1, (b, context), device=dev)
        tokens[torch.arange(b, device=dev), lengths - 1] = eot  # open_clip pools at the argmax id: <end_of_text>
        tokens *= torch.arange(context, device=dev) < lengths[:, None]
        return torch.rand(b, 3, image_size, image_size, device=dev), tokens, lengths

    def ours_loss(model, images, tokens, lengths):
        return model.loss(model.encode_image(images), F.normalize(model.text(tokens, lengths).float(), dim=-1))

    reference_loss = lambda model, images, tokens, lengths: open_clip.ClipLoss()(*model(images, tokens))
    return {"image_size": image_size, "context_length": context, "model": "ViT-B-32" if size == "base" else "tiny",
            **versus(setting, "open_clip", lambda: time_training(ours, batch, ours_loss, setting, setting.batch),
                     lambda: time_training(reference, batch, reference_loss, setting, setting.batch))}


class _Whisper(nn.Module):
    """Our AudioEncoder + TextDecoder, loaded from a Whisper state dict: (B, n_mels, F) log-mel features
    and (B, T) tokens -> (B, T, V) logits. No SpecAugment (Whisper has none) and no CTC head."""

    def __init__(self, state: dict[str, Tensor], num_heads: int):
        from multimodal.encoders.audio import AudioEncoder, AudioEncoderConfig
        from multimodal.encoders.text import TextConfig, TextDecoder
        from multimodal.interop.weights import load_converted
        from multimodal.interop.whisper import convert_whisper, whisper_configs_from_state

        super().__init__()
        cfg = whisper_configs_from_state(state, num_heads)
        self.encoder = AudioEncoder(AudioEncoderConfig(**cfg["encoder"], num_masks=0))
        self.decoder = TextDecoder(TextConfig(**cfg["decoder"]), self.encoder.dim)
        converted = convert_whisper(state)
        converted.update({k: v for k, v in self.state_dict().items() if k.startswith("encoder.log_mel.")})
        load_converted(self, converted, "transformers")

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        return self.decoder(tokens, self.encoder.forward_features(mel)[0])


def asr_rows(train: Setting, decode: Setting, size: str, text_tokens: int, new_tokens: int, beam: int = 5) -> dict:
    """Whisper against our encoder-decoder converted from it (identical weights), on the same log-mel features
    (30 s = 3000 frames at base size; feature extraction is timed for neither).
    train: one optimizer step, attention cross-entropy only (no CTC) on ``text_tokens`` tokens for both.
    decode: beam search of ``new_tokens`` tokens per clip, encoder included, for both. <eos> is masked in
    every step for both (HF: ``min_new_tokens``; ours: a logits mask around our decoder), so each produces
    exactly ``new_tokens`` per clip, as ``tokens_per_clip`` shows."""
    import transformers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from multimodal.encoders.text import beam_search

    transformers.logging.set_verbosity_error()
    dims = {"base": dict(d_model=512, layers=6, heads=8, frames=1500),
            "tiny": dict(d_model=64, layers=2, heads=1, frames=50)}[size]
    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=dims["d_model"],
                           encoder_layers=dims["layers"], decoder_layers=dims["layers"],
                           encoder_attention_heads=dims["heads"], decoder_attention_heads=dims["heads"],
                           encoder_ffn_dim=4 * dims["d_model"], decoder_ffn_dim=4 * dims["d_model"],
                           max_source_positions=dims["frames"], max_target_positions=448)
    reference = WhisperForConditionalGeneration(config)
    ours = _Whisper(reference.state_dict(), dims["heads"])
    mel = lambda b: torch.randn(b, 80, 2 * dims["frames"], device=train.device)
    sos, eos = config.decoder_start_token_id, config.eos_token_id

    def no_eos(decoder):  # what HF's MinNewTokensLengthLogitsProcessor does while fewer than min_new_tokens are out
        def masked(*args):
            logits = decoder(*args)
            logits[..., eos] = float("-inf")
            return logits
        return masked

    def decode_rows():
        features = mel(decode.batch)
        encode = torch.compile(ours.encoder.forward_features) if decode.compile else ours.encoder.forward_features
        decoder = no_eos(torch.compile(ours.decoder, dynamic=True) if decode.compile else ours.decoder)
        decode_ours = lambda x: beam_search(decoder, encode(x)[0], None, sos, eos, beam, new_tokens)

        def decode_reference(x):
            return reference.generate(x, num_beams=beam, min_new_tokens=new_tokens, max_new_tokens=new_tokens,
                                      do_sample=False, **({"cache_implementation": "static"} if decode.compile else {}))

        return versus(decode, "transformers", lambda: time_decoding(ours, decode_ours, features, decode),
                      lambda: time_decoding(reference, decode_reference, features, decode), key="tokens_per_s")

    def tokens():
        x = torch.randint(0, eos, (train.batch, text_tokens), device=train.device)
        return mel(train.batch), x[:, :-1], x[:, 1:]

    cross_entropy = lambda logits, targets: F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    ours_loss = lambda model, x, inputs, targets: cross_entropy(model(x, inputs), targets)
    reference_loss = lambda model, x, inputs, targets: cross_entropy(
        model(input_features=x, decoder_input_ids=inputs).logits, targets)
    return {"model": {"d_model": dims["d_model"], "layers": f"{dims['layers']} + {dims['layers']}",
                      "heads": dims["heads"], "mel_frames": 2 * dims["frames"], "vocab": 51865, "context": 448},
            "features": "the same random log-mel features for both (feature extraction not timed)",
            "decode": {"batch": decode.batch, "beam": beam, "new_tokens": new_tokens, **decode_rows(),
                       **({"compiled": "ours: encoder and decoder (dynamic shapes); transformers: a static KV "
                                       "cache, whose decoding step generate() compiles itself on a GPU"}
                          if decode.compile else {})},
            "train": {"batch": train.batch, "text_tokens": text_tokens,
                      "loss": "attention cross-entropy only (no CTC), no label smoothing, for both",
                      **versus(train, "transformers",
                               lambda: time_training(ours, tokens, ours_loss, train, train.batch),
                               lambda: time_training(reference, tokens, reference_loss, train, train.batch))}}


def attention_rows(setting: Setting, lengths: list[int], dim: int = 256, heads: int = 4, window: int = 256,
                   low_rank: int = 256) -> dict:
    """Forward + backward time and peak memory of one attention layer per variant and sequence length, and the
    length from which each variant beats full attention."""
    from multimodal.nn import MultiHeadAttention

    variants = {"full": {}, "local": {"window": window}, "linformer": {"low_rank": low_rank, "max_len": max(lengths)}}
    rows = []
    for length in lengths:
        for name, kwargs in variants.items():
            layer = MultiHeadAttention(dim, heads, **kwargs).to(setting.device)
            x = torch.randn(1, length, dim, device=setting.device, requires_grad=True)

            def step():
                with setting.autocast:
                    layer(x).float().square().mean().backward()

            try:
                seconds, memory = measure(step, setting)
                rows.append({"variant": name, "length": length, "ms": seconds * 1e3,
                             "peak_memory_mib": None if memory is None else memory * 1024})
            except torch.OutOfMemoryError:
                rows.append({"variant": name, "length": length, "ms": None, "peak_memory_mib": None, "error": "out of memory"})
            del layer, x
    return {"dim": dim, "heads": heads, "window": window, "low_rank": low_rank, "rows": rows,
            "faster_than_full_from": {name: crossover(rows, name) for name in variants if name != "full"}}


def crossover(rows: list[dict], variant: str) -> int | None:
    """The shortest measured length from which ``variant`` is faster than full attention at every longer length
    too (full running out of memory counts as slower); None if it never is."""
    ms = {(r["variant"], r["length"]): r["ms"] for r in rows}
    lengths = sorted({r["length"] for r in rows})
    wins = [ms[variant, n] is not None and (ms["full", n] is None or ms[variant, n] < ms["full", n]) for n in lengths]
    start = next((i for i in range(len(lengths)) if all(wins[i:])), None)
    return None if start is None else lengths[start]


def plot_attention(result: dict, path: str) -> None:
    """Time and peak memory against sequence length, one line per variant, log-log."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("ms", "forward + backward (ms)")]
    if any(r["peak_memory_mib"] for r in result["rows"]):
        keys.append(("peak_memory_mib", "peak memory (MiB)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys):
        for variant in dict.fromkeys(r["variant"] for r in result["rows"]):
            points = [(r["length"], r[key]) for r in result["rows"] if r["variant"] == variant and r[key] is not None]
            ax.plot(*zip(*points), marker="o", label=variant)
        ax.set(yscale="log", xlabel="sequence length (tokens)", ylabel=label)
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"one attention layer, dim {result['dim']}, {result['heads']} heads, window {result['window']}, "
                 f"rank {result['low_rank']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
