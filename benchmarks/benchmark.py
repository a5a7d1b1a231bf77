#!/usr/bin/env python
"""Measure our models against their references in one process and print JSON.

    python benchmarks/benchmark.py --task vit         # ViT-B/16 training step vs timm (GPU: batch 256, 224 px)
    python benchmarks/benchmark.py --task clip        # CLIP ViT-B/32 training step vs OpenCLIP (GPU: batch 512)
    python benchmarks/benchmark.py --task asr         # Whisper-base-sized training step (batch 64, 30 s) and
                                                      # beam-5 decoding (batch 16) vs transformers
    python benchmarks/benchmark.py --task inference   # image embedding vs OpenCLIP, ViT vs timm, transcription vs
                                                      # openai-whisper (greedy, beam 5), as their users run them
    python benchmarks/benchmark.py --task inference --precision int8   # ours with int8 linear layers
    python benchmarks/benchmark.py --task attention --plot attention.png
                                                      # full vs local vs linformer attention, 1k-32k tokens
Without a GPU it runs small CPU sizes and says so in the output ("device" and "sizes"), and measures each model
of a pair three times, alternating with the other (``--repeats``): the median counts. ``--sizes recipe`` runs the
training rows at the models and batches of the CPU recipes (vit_mnist.yaml, clip_shapes_cpu.yaml,
asr_shapes_cpu.yaml).

Timing: warm-up steps excluded, torch.cuda.synchronize around the timed loop, bf16 autocast and fused
AdamW on a GPU (fp32 and plain AdamW on a CPU; ``--precision bf16`` autocasts there too, as a recipe's
``precision: bf16-mixed`` does, and ``--batch`` sets the training rows' batch, e.g. a CPU recipe's). FLOPs
come from torch.utils.flop_counter on one real step, so model FLOP utilisation (MFU) is measured work over
the device's peak. Where a reference can be converted with our interop code (OpenCLIP, Whisper), ours is
built from the reference's random weights, so both run the same architecture with the same numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from multimodal.inference.common import device, device_name, positive, script_main
from multimodal.outputs import atomic_write, output_file

# dense bf16 tensor-core peaks (FLOP/s), for MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass
class Setting:
    device: torch.device
    batch: int
    steps: int
    warmup: int
    compile: bool
    bf16: bool
    repeats: int = 1  # measurements of each model, alternated with the other's; the median counts
    int8: bool = False  # inference rows: ours with its linear layers in int8 (quantize_int8), on the CPU

    @property
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()


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

    runs = {"ours": [], name: []}
    for _ in range(setting.repeats):  # alternated, so that a slow spell of a shared machine falls on both
        runs["ours"].append(attempt(ours))
        runs[name].append(attempt(reference))
    rows = {side: median_run(r, key) for side, r in runs.items()}
    ok = key in rows["ours"] and key in rows[name]
    return {**rows, "ratio_ours_over_reference": rows["ours"][key] / rows[name][key] if ok else None}


def median_run(runs: list[dict], key: str) -> dict:
    """The run of median ``key`` (the lower one of an even count), with every run's ``key`` beside it."""
    if len(runs) == 1 or not all(key in r for r in runs):
        return runs[0]
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(runs) - 1) // 2], f"{key}_of_each_run": [r[key] for r in runs]}


def normalised_as(model: nn.Module, device: torch.device) -> Callable[[Tensor], Tensor]:
    """The input normalisation ``model`` applies inside its forward, for a reference that takes normalised images
    (timm, OpenCLIP): both sides then do the same work from the same raw images."""
    mean, std = model.mean.to(device), model.std.to(device)
    return lambda x: (x - mean) / std


# per --sizes: the ViT both sides of the pair build; "recipe" is the model of vit_mnist.yaml
VIT_SIZES = {"full": dict(image_size=224, patch_size=16, channels=3, dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                          classes=1000),
             "small": dict(image_size=64, patch_size=16, channels=3, dim=192, depth=4, num_heads=3, mlp_ratio=4.0,
                           classes=1000),
             "recipe": dict(image_size=28, patch_size=4, channels=1, dim=64, depth=6, num_heads=4, mlp_ratio=2.0,
                            classes=10)}  # vit_mnist.yaml with a patch stem (timm has no conv stem)


def vit_rows(setting: Setting, size: str) -> dict:
    """Our Classifier (ViT + linear head) against timm's VisionTransformer of the same shape."""
    import timm

    from multimodal.models import Classifier

    s = VIT_SIZES[size]
    ours = Classifier({"vit": {"image_size": s["image_size"], "patch_size": s["patch_size"], "channels": s["channels"],
                               "transformer": {"dim": s["dim"], "depth": s["depth"], "num_heads": s["num_heads"],
                                               "mlp_ratio": s["mlp_ratio"], "norm_eps": 1e-6}}},
                      class_names=[str(i) for i in range(s["classes"])])
    reference = timm.models.VisionTransformer(img_size=s["image_size"], patch_size=s["patch_size"],
                                              in_chans=s["channels"], embed_dim=s["dim"], depth=s["depth"],
                                              num_heads=s["num_heads"], mlp_ratio=s["mlp_ratio"],
                                              num_classes=s["classes"])
    images = lambda: (torch.rand(setting.batch, s["channels"], s["image_size"], s["image_size"], device=setting.device),
                      torch.randint(0, s["classes"], (setting.batch,), device=setting.device))
    loss = lambda model, x, y: F.cross_entropy(model(x), y)
    standardized = normalised_as(ours, setting.device)
    standardized_loss = lambda model, x, y: loss(model, standardized(x), y)
    return {"image_size": s["image_size"], "model": {k: v for k, v in s.items() if k != "image_size"},
            **versus(setting, "timm", lambda: time_training(ours, images, loss, setting, setting.batch),
                     lambda: time_training(reference, images, standardized_loss, setting, setting.batch))}


def clip_rows(setting: Setting, size: str) -> dict:
    """CLIP training step (both towers, InfoNCE): our CLIP converted from an OpenCLIP model
    with random weights ("ViT-B-32": GELU, not QuickGELU) against that model with open_clip's ClipLoss.
    Both take token ids (77, <end_of_text> at a random length, zeros after), so tokenisation is not timed."""
    import open_clip

    from multimodal.interop.open_clip import clip_configs_from_state, convert_open_clip, skip_init
    from multimodal.models import CLIP, load_converted
    from multimodal.tasks.losses import clip_loss
    from multimodal.tokenizers import SPECIALS, CharTokenizer, CLIPTokenizer

    tokenizer = CLIPTokenizer()
    if size == "full":
        reference = open_clip.create_model("ViT-B-32")
    elif size == "small":
        reference = open_clip.CLIP(64, vision_cfg=dict(image_size=64, patch_size=32, width=128, layers=2),
                                   text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2))
    else:  # clip_shapes_cpu.yaml with a patch stem (OpenCLIP has no conv stem) and a 1,000-token vocabulary
        tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(1000 - len(SPECIALS))])
        reference = open_clip.CLIP(128, vision_cfg=dict(image_size=64, patch_size=8, width=128, layers=4),
                                   text_cfg=dict(context_length=16, vocab_size=tokenizer.vocab_size, width=128,
                                                 heads=2, layers=3))
    state = reference.state_dict()
    cfg = clip_configs_from_state(state, activation="gelu")
    with skip_init():
        ours = CLIP(cfg, tokenizer)
    load_converted(ours, convert_open_clip(state), "open_clip")
    # open_clip pools at the largest id, its <end_of_text>; ours at the length
    image_size, context, eot = cfg["vit"]["image_size"], cfg["text"]["context_length"], tokenizer.vocab_size - 1

    def batch():
        b, dev = setting.batch, setting.device
        lengths = torch.randint(min(8, context), context + 1, (b,), device=dev)
        tokens = torch.randint(1, eot - 1, (b, context), device=dev)
        tokens[torch.arange(b, device=dev), lengths - 1] = eot  # open_clip pools at the argmax id: <end_of_text>
        tokens *= torch.arange(context, device=dev) < lengths[:, None]
        return torch.rand(b, 3, image_size, image_size, device=dev), tokens, lengths

    def ours_loss(model, images, tokens, lengths):  # token ids straight into the text tower: no tokenisation
        text = F.normalize(model.text(tokens, lengths).float(), dim=-1)
        return clip_loss(model.encode_image(images), text, model.scale())

    normalized = normalised_as(ours, setting.device)
    reference_loss = lambda model, images, tokens, lengths: open_clip.ClipLoss()(*model(normalized(images), tokens))
    return {"image_size": image_size, "context_length": context,
            "model": "ViT-B-32" if size == "full" else {
                "patch_size": cfg["vit"]["patch_size"], "image_layers": cfg["vit"]["transformer"]["depth"],
                "text_layers": cfg["text"]["transformer"]["depth"], "width": cfg["vit"]["transformer"]["dim"],
                "embed_dim": cfg["embed_dim"], "vocab": cfg["text"]["vocab_size"]},
            **versus(setting, "open_clip", lambda: time_training(ours, batch, ours_loss, setting, setting.batch),
                     lambda: time_training(reference, batch, reference_loss, setting, setting.batch))}


def whisper_speech_to_text(state: dict[str, Tensor], num_heads: int, tokenizer) -> nn.Module:
    """Our SpeechToText with the weights of a Whisper state dict, as ``load_whisper`` builds it, set to do the
    work Whisper does: no SpecAugment (Whisper has none) and no CTC head (Whisper has none; the benchmark's
    loss does not use it, and its vocab x dim weights would only add to our peak memory)."""
    from multimodal.interop.open_clip import skip_init
    from multimodal.interop.whisper import convert_whisper, whisper_configs_from_state
    from multimodal.models import SpeechToText, SpeechToTextConfig, load_converted

    cfg = whisper_configs_from_state(state, num_heads)
    cfg["encoder"]["num_masks"] = 0
    with skip_init():  # every weight comes from the state dict (the strict load checks it)
        model = SpeechToText(SpeechToTextConfig(**cfg), tokenizer)
    del model.ctc_head
    converted = convert_whisper(state)
    converted.update({k: v for k, v in model.state_dict().items() if k.startswith("encoder.log_mel.")})
    load_converted(model, converted, "transformers")
    return model


def asr_rows(train: Setting, decode: Setting, size: str, text_tokens: int, new_tokens: int, beam: int = 5) -> dict:
    """Whisper against our SpeechToText converted from it (identical weights), on the same log-mel features
    (30 s = 3000 frames at base size; feature extraction is timed for neither).
    train: one optimizer step, attention cross-entropy only (no CTC) on ``text_tokens`` tokens for both.
    decode: beam search of ``new_tokens`` tokens per clip, encoder included, for both. <eos> is masked in
    every step for both (HF: ``min_new_tokens``; ours: a logits mask around our decoder), so each produces
    exactly ``new_tokens`` per clip, as ``tokens_per_clip`` shows. A bare WhisperConfig gives ``generate`` no
    language or task tokens, so it starts from ``decoder_start_token_id`` alone; ours starts from that one token
    too, not from the four-token Whisper prompt (<|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>)
    that its tokenizer gives its decoder."""
    import transformers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from multimodal.encoders.text import beam_search
    from multimodal.tokenizers import CharTokenizer, WhisperTokenizer

    transformers.logging.set_verbosity_error()
    dims = {"full": dict(d_model=512, layers=(6, 6), heads=8, frames=1500, context=448),
            "small": dict(d_model=64, layers=(2, 2), heads=1, frames=50, context=448),
            # asr_shapes_cpu.yaml: its encoder and decoder, 3-s clips, a character vocabulary
            "recipe": dict(d_model=128, layers=(4, 2), heads=2, frames=150, context=96)}[size]
    if size == "recipe":
        tokenizer = CharTokenizer.from_texts(["abcdefghijklmnopqrstuvwxyz '"])
        tokens = dict(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad, bos_token_id=tokenizer.sos,
                      decoder_start_token_id=tokenizer.sos, eos_token_id=tokenizer.eos, begin_suppress_tokens=None)
    else:
        tokenizer, tokens = WhisperTokenizer(num_languages=99), dict(vocab_size=51865)  # multilingual
    config = WhisperConfig(num_mel_bins=80, d_model=dims["d_model"], **tokens,
                           encoder_layers=dims["layers"][0], decoder_layers=dims["layers"][1],
                           encoder_attention_heads=dims["heads"], decoder_attention_heads=dims["heads"],
                           encoder_ffn_dim=4 * dims["d_model"], decoder_ffn_dim=4 * dims["d_model"],
                           max_source_positions=dims["frames"], max_target_positions=dims["context"])
    reference = WhisperForConditionalGeneration(config)
    ours = whisper_speech_to_text(reference.state_dict(), dims["heads"], tokenizer)
    ours.decoder.prompt = ours.decoder.prompt[:0]  # start from sos alone, as generate() does here
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

    text_ids = (tokenizer.eos + 1, config.vocab_size) if size == "recipe" else (0, eos)  # no specials

    def tokens():
        x = torch.randint(*text_ids, (train.batch, text_tokens), device=train.device)
        return mel(train.batch), x[:, :-1], x[:, 1:]

    cross_entropy = lambda logits, targets: F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    ours_loss = lambda model, x, inputs, targets: cross_entropy(
        model.decoder(inputs, model.encoder.forward_features(x)[0]), targets)
    reference_loss = lambda model, x, inputs, targets: cross_entropy(
        model(input_features=x, decoder_input_ids=inputs).logits, targets)
    return {"model": {"d_model": dims["d_model"], "layers": "{} + {}".format(*dims["layers"]), "heads": dims["heads"],
                      "mel_frames": 2 * dims["frames"], "vocab": config.vocab_size, "context": dims["context"]},
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


def time_inference(run: Callable[[], object], setting: Setting, items: int) -> dict:
    """Items/s of ``run()`` (one batch of ``items``) under torch.inference_mode and the setting's autocast."""
    with torch.inference_mode(), setting.autocast:
        seconds, _ = measure(run, setting)
    return {"items_per_s": items / seconds, "batch_ms": seconds * 1e3}


MATRIX_PRODUCTS = ("addmm", "mm", "bmm")


def cpu_matmul_rate(n: int = 2048, tries: int = 5) -> float:
    """FLOP/s of this CPU's float32 matrix product on a large square one, the best of ``tries``: what its BLAS
    reaches at best, the peak for the bound below."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def matmul_bound(run: Callable[[], object], calls: int = 3) -> dict:
    """``calls`` calls of ``run`` on the CPU, profiled: the share of their time in matrix products, the products'
    FLOP rate against the machine's best (``cpu_matmul_rate``, the best of tries before and after, as a shared
    machine drifts), and so the most kernel work could speed ``run`` up: with every product at that best rate and
    the rest as it is, with the rest taking no time and the products as they are, and with both. Two models that
    compute the same products share the bounds."""
    rate = cpu_matmul_rate()
    with torch.inference_mode():
        run()
        with FlopCounterMode(display=False) as counter:
            run()
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # else the profiler logs an error for the missing GPU
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], acc_events=True) as profile:
            for _ in range(calls):
                run()
    rate = max(rate, cpu_matmul_rate())
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / calls
    products = sum(e.self_cpu_time_total for e in events
                   if e.key.removeprefix("aten::") in MATRIX_PRODUCTS) / 1e6 / calls
    flops = sum(n for op, n in counter.get_flop_counts()["Global"].items()
                if str(op).removeprefix("aten.") in MATRIX_PRODUCTS)
    return {"matmul_share": products / total, "matmul_gflop_per_s": flops / products / 1e9,
            "machine_matmul_gflop_per_s": rate / 1e9,
            "speedup_with_products_at_best_rate": total / (total - products + flops / rate),
            "speedup_with_the_rest_free": total / products, "speedup_with_both": total / (flops / rate)}


def inference_rows(setting: Setting, clips: int = 8, new_tokens: int = 24, size: str = "small") -> dict:
    """What a user who only runs models sees, ours against the tool they would otherwise use, each model built
    from the reference's random weights (so both compute the same function: checked) and run as that tool runs it,
    float32 on this device (``--precision bf16``: both image rows under the same bf16 autocast; transcription stays
    float32, the only precision openai-whisper decodes on a CPU; ``--precision int8``: ours quantized by
    ``quantize_int8``, against the float32 reference as its users run it and, for the image rows, against the
    reference quantized the same way, "against_NAME_int8"). In float32 on a CPU the image rows also bound what
    kernel work could gain on ours ("ours_matmul_bound", ``matmul_bound``).
    image_embedding: OpenCLIP ViT-B-32 ``encode_image`` against our CLIP's, 224 px, normalisation included.
    vit_classification: timm ``vit_small_patch16_224`` forward against our Classifier's, 224 px, standardisation
    included.
    transcription: ``clips`` clips of 2-6 s through a Whisper-tiny-sized model, ``new_tokens`` tokens each (end of
    text and the special tokens suppressed for both, as openai-whisper suppresses them), log-mel included: ours on
    each clip's own length (`SpeechToText`'s way), openai-whisper ``decode`` on clips padded to 30 s (Whisper's
    way; beam search one clip at a time, as its ``transcribe`` runs); "ours_padded" runs ours on the same 30-s
    log-mel, the decoders alone compared. ``size="tiny"``: 2-layer models at 64 px, for the tests."""
    import open_clip
    import timm
    import whisper
    from whisper.decoding import DecodingOptions

    from multimodal.encoders.audio import pad_waveforms
    from multimodal.encoders.text import beam_search, greedy_decode
    from multimodal.interop.open_clip import load_open_clip
    from multimodal.interop.timm import load_timm_vit
    from multimodal.interop.whisper import load_whisper
    from multimodal.nn.quantize import quantize_int8

    rows, dev, b, tiny = {}, setting.device, setting.batch, size == "tiny"
    quantized = quantize_int8 if setting.int8 else (lambda model: model)

    def against(name: str, ours_row: Callable[[], dict], reference: nn.Module,
                reference_row: Callable[[nn.Module], dict]) -> dict:
        pair = versus(setting, name, ours_row, lambda: reference_row(reference), key="items_per_s")
        if setting.int8:
            reference = quantize_int8(reference)
            pair[f"against_{name}_int8"] = versus(setting, f"{name}_int8", ours_row, lambda: reference_row(reference),
                                                  key="items_per_s")
        return pair
    # float32 on a CPU: how far kernel work alone could take ours (the reference runs the same products)
    bounded = dev.type == "cpu" and not (setting.int8 or setting.bf16)

    def bound(run: Callable[[], object]) -> dict:
        return {"ours_matmul_bound": matmul_bound(run)} if bounded else {}
    image_size = 64 if tiny else 224
    images = torch.rand(b, 3, image_size, image_size, device=dev)

    if tiny:
        reference = open_clip.CLIP(64, vision_cfg=dict(image_size=64, patch_size=32, width=128, layers=2),
                                   text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2))
    else:
        reference = open_clip.create_model("ViT-B-32")
    reference.to(dev).eval()
    ours = quantized(load_open_clip("open_clip ViT-B-32", activation="gelu", state=reference.state_dict()).to(dev))
    normalized = normalised_as(ours, dev)  # OpenAI's mean and std, as the converted model holds them
    with torch.inference_mode():
        agree = F.cosine_similarity(ours.encode_image(images), reference.encode_image(normalized(images), normalize=True))
    rows["image_embedding"] = {"model": "tiny" if tiny else "ViT-B-32, 224 px", "batch": b,
                               "min_cosine_ours_vs_reference": agree.min().item(),
                               **against("open_clip", lambda: time_inference(lambda: ours.encode_image(images), setting, b),
                                         reference, lambda model: time_inference(
                                             lambda: model.encode_image(normalized(images), normalize=True), setting, b)),
                               **bound(lambda: ours.encode_image(images))}

    vit = dict(img_size=64, embed_dim=64, depth=2, num_heads=1) if tiny else {}
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, **vit).to(dev).eval()
    ours = quantized(load_timm_vit("timm vit_small_patch16_224", state=reference.state_dict()).to(dev).eval())
    standardized = normalised_as(ours, dev)  # timm's models take standardized images; ours, [0, 1]
    with torch.inference_mode():
        difference = (ours(images) - reference(standardized(images))).abs().max().item()
    rows["vit_classification"] = {"model": "tiny" if tiny else "vit_small_patch16_224, 224 px", "batch": b,
                                  "max_logit_difference": difference,
                                  **against("timm", lambda: time_inference(lambda: ours(images), setting, b), reference,
                                            lambda model: time_inference(lambda: model(standardized(images)), setting, b)),
                                  **bound(lambda: ours(images))}

    width, layers = (64, 1) if tiny else (384, 4)
    reference = whisper.model.Whisper(whisper.model.ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=width, n_audio_head=width // 64, n_audio_layer=layers,
        n_vocab=51865, n_text_ctx=448, n_text_state=width, n_text_head=width // 64, n_text_layer=layers)).to(dev).eval()
    with torch.no_grad():  # openai-whisper leaves it torch.empty for its checkpoints to fill: NaN at times
        reference.decoder.positional_embedding.normal_(std=0.01)
    ours = quantized(load_whisper("openai-whisper tiny-sized", state=reference.state_dict()).to(dev))
    tokenizer = whisper.tokenizer.get_tokenizer(True, language="en", task="transcribe")
    suppressed = torch.tensor([tokenizer.eot, tokenizer.transcribe, tokenizer.translate, tokenizer.sot,
                               tokenizer.sot_prev, tokenizer.sot_lm, tokenizer.no_speech], device=dev)
    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(int(16_000 * (2 + 4 * torch.rand(1, generator=g).item())), generator=g)
             for _ in range(clips)]

    def suppressing(decoder):
        def step(*args):
            logits = decoder(*args)
            logits[..., suppressed] = float("-inf")
            return logits
        return step

    def decode_ours(memory, mask, beam):  # as SpeechToText.decode: greedy_decode for beam 1
        tok, decoder = ours.tokenizer, suppressing(ours.decoder)
        if beam == 1:
            return greedy_decode(decoder, memory, mask, tok.sos, tok.eos, new_tokens)
        return beam_search(decoder, memory, mask, tok.sos, tok.eos, beam, new_tokens)

    def ours_own_length(beam):
        batch, lengths = pad_waveforms(waves)
        return decode_ours(*ours.encode(batch.to(dev), lengths.to(dev)), beam)

    def whisper_mel():
        return torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(w)) for w in waves]).to(dev)

    def ours_padded(beam):
        return decode_ours(ours.encoder.forward_features(whisper_mel())[0], None, beam)

    def openai(beam):  # beam search one clip at a time: batched, openai-whisper 20250625 fails (its PR #2197)
        options = DecodingOptions(language="en", without_timestamps=True, beam_size=beam if beam > 1 else None,
                                  sample_len=new_tokens, suppress_tokens=[tokenizer.eot], suppress_blank=False,
                                  fp16=False)
        mel = whisper_mel()
        batches = [mel] if beam == 1 else mel.split(1)
        return [r.tokens for batch in batches for r in whisper.decode(reference, batch, options)]

    with torch.inference_mode():
        mel = whisper_mel()
        encoder_difference = (ours.encoder.forward_features(mel)[0] - reference.encoder(mel)).abs().max().item()
        same = ours_padded(1) == openai(1)
    rows["transcription"] = {"model": f"Whisper, {layers} + {layers} layers, {width} wide, random weights", "clips": clips,
                             "seconds_of_audio": round(sum(len(w) for w in waves) / 16_000, 1),
                             "new_tokens_per_clip": new_tokens, "max_encoder_difference": encoder_difference,
                             "greedy_tokens_identical_on_30s_mel": same,
                             "precision": "ours int8, openai-whisper fp32" if setting.int8 else "fp32"}
    # openai-whisper decodes float32 or float16 features only (bf16 autocast makes its DecodingTask fail)
    setting = dataclasses.replace(setting, bf16=False)
    timed = lambda decode, beam: time_inference(lambda: decode(beam), setting, clips)
    for beam in (1, 5):
        pair = versus(setting, "openai_whisper", functools.partial(timed, ours_own_length, beam),
                      functools.partial(timed, openai, beam), key="items_per_s")
        pair["ours_padded"] = timed(ours_padded, beam)
        pair["ratio_ours_padded_over_reference"] = pair["ours_padded"]["items_per_s"] / pair["openai_whisper"]["items_per_s"]
        rows["transcription"]["greedy" if beam == 1 else f"beam{beam}"] = pair
    return rows


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

            def step(layer=layer, x=x):
                with setting.autocast:
                    layer(x).float().square().mean().backward()

            try:
                seconds, memory = measure(step, setting)
                rows.append({"variant": name, "length": length, "ms": seconds * 1e3,
                             "peak_memory_mib": None if memory is None else memory * 1024})
            except torch.OutOfMemoryError:
                rows.append({"variant": name, "length": length, "ms": None, "peak_memory_mib": None, "error": "out of memory"})
            del layer, x, step  # free this length's tensors before the next
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
    with atomic_write(path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    plt.close(fig)


@dataclass(frozen=True)
class RunSize:
    """What ``--sizes`` sets besides the models: the training rows' batches and the Whisper rows' lengths."""
    label: str
    vit_batch: int
    clip_batch: int
    asr_batch: int
    decode_batch: int
    text_tokens: int  # per training sequence
    new_tokens: int  # decoded per clip


RUN_SIZES = {"full": RunSize("full", 256, 512, 64, 16, 448, 128),
             "small": RunSize("small CPU sizes", 4, 4, 2, 2, 16, 4),
             "recipe": RunSize("the CPU recipes' models", 32, 256, 32, 8, 56, 48)}


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["vit", "clip", "asr", "attention", "inference", "all"], default="all")
    parser.add_argument("--compile", action="store_true", help="torch.compile both our model and the reference")
    parser.add_argument("--steps", type=positive, default=None, help="timed steps (default: 20 on GPU, 10 on CPU)")
    parser.add_argument("--device", type=device_name, default=None)
    parser.add_argument("--precision", choices=["bf16", "fp32", "int8"], default=None,
                        help="autocast to bf16 or not, both models alike (default: bf16 on a GPU, fp32 on a CPU); int8: "
                             "the inference rows with ours quantized (quantize_int8), on a CPU")
    parser.add_argument("--sizes", choices=["full", "small", "recipe"], default=None,
                        help="full: ViT-B, CLIP ViT-B/32, Whisper-base (default on a GPU); small: tiny models that show "
                             "the rows run (default on a CPU); recipe: the training rows at the models and batches of "
                             "the CPU recipes (vit_mnist.yaml, clip_shapes_cpu.yaml, asr_shapes_cpu.yaml)")
    parser.add_argument("--batch", type=positive, default=None,
                        help="batch of the vit / clip / asr training rows (default: 256 / 512 / 64 at full sizes, "
                             "4 / 4 / 2 small, 32 / 256 / 32 at the recipes')")
    parser.add_argument("--repeats", type=positive, default=None,
                        help="measure each model this many times, alternating with its reference, and report the "
                             "median (default: 3 on a CPU, whose shared cores drift, 1 on a GPU)")
    parser.add_argument("--json", action="store_true", help="JSON only (it is always printed; this drops the notes)")
    parser.add_argument("--plot", metavar="PNG", help="with --task attention or all: time and memory against length")
    args = parser.parse_args(argv)
    if args.plot and args.task not in ("attention", "all"):
        parser.error("--plot draws the attention rows: use it with --task attention or all")
    if args.plot:
        output_file(args.plot)  # before minutes of measuring

    dev = device(args.device, args.precision == "int8")
    gpu = dev.type == "cuda"
    if args.precision == "int8" and (args.task != "inference" or dev.type != "cpu"):
        parser.error("--precision int8 measures CPU inference: use it with --task inference, on the CPU")
    steps = args.steps or (20 if gpu else 10)
    bf16 = (args.precision or ("bf16" if gpu else "fp32")) == "bf16"
    repeats = args.repeats or (1 if gpu else 3)
    setting = functools.partial(Setting, dev, steps=steps, compile=args.compile, bf16=bf16, repeats=repeats,
                                int8=args.precision == "int8")
    sizes = args.sizes or ("full" if gpu else "small")
    run = RUN_SIZES[sizes]
    warmup = 5 if gpu else 1
    report = {"device": torch.cuda.get_device_name(dev) if gpu else "cpu", "torch": torch.__version__,
              "compile": args.compile, "precision": "bf16 autocast" if bf16 else args.precision or "fp32", "repeats": repeats,
              "sizes": run.label, "results": {}}
    if args.task in ("vit", "all"):
        vit = setting(batch=args.batch or run.vit_batch, warmup=warmup)
        report["results"]["vit"] = {"batch": vit.batch, **vit_rows(vit, sizes)}
    if args.task in ("clip", "all"):
        clip = setting(batch=args.batch or run.clip_batch, warmup=warmup)
        report["results"]["clip"] = {"batch": clip.batch, **clip_rows(clip, sizes)}
    if args.task in ("asr", "all"):
        train = setting(batch=args.batch or run.asr_batch, warmup=warmup)
        decode = setting(batch=run.decode_batch, steps=max(1, steps // 5), warmup=1)
        report["results"]["asr"] = asr_rows(train, decode, sizes, run.text_tokens, run.new_tokens)
    if args.task in ("inference", "all"):
        report["results"]["inference"] = inference_rows(setting(batch=16, steps=max(1, steps // 2), warmup=1,
                                                                compile=False))
    if args.task in ("attention", "all"):
        lengths = [1024, 2048, 4096, 8192, 16384, 32768] if gpu else [256, 512, 1024]
        report["results"]["attention"] = attention_rows(setting(batch=1, warmup=3 if gpu else 1, compile=False), lengths)
        if args.plot:
            plot_attention(report["results"]["attention"], args.plot)
    print(json.dumps(report, indent=2))
    if not args.json and sizes == "small":
        print("note: CPU sizes only; run on a GPU for the figures docs/PERFORMANCE.md records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
