#!/usr/bin/env python
"""Measure our models against their references in one process and print JSON.

    python scripts/benchmark.py --task vit            # ViT-B/16 training step vs timm (GPU: batch 256, 224 px)
    python scripts/benchmark.py --task clip           # CLIP ViT-B/32 training step vs OpenCLIP (GPU: batch 512)
    python scripts/benchmark.py --task asr            # Whisper-base-sized training step (batch 64, 30 s) and
                                                      # beam-5 decoding (batch 16) vs transformers
    python scripts/benchmark.py --task attention --plot attention.png
                                                      # full vs local vs linformer attention, 1k-32k tokens
Without a GPU it runs small CPU sizes and says so in the output ("device" and "sizes").
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from multimodal.inference.benchmark import Setting, asr_rows, attention_rows, clip_rows, plot_attention, vit_rows
from multimodal.inference.common import device, script_main


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["vit", "clip", "asr", "attention", "all"], default="all")
    parser.add_argument("--compile", action="store_true", help="torch.compile both our model and the reference")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 10 on CPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="JSON only (it is always printed; this drops the notes)")
    parser.add_argument("--plot", metavar="PNG", help="with --task attention or all: time and memory against length")
    args = parser.parse_args(argv)
    if args.plot and args.task not in ("attention", "all"):
        parser.error("--plot draws the attention rows: use it with --task attention or all")

    dev = device(args.device)
    gpu = dev.type == "cuda"
    steps = args.steps or (20 if gpu else 10)
    report = {"device": torch.cuda.get_device_name(dev) if gpu else "cpu", "torch": torch.__version__,
              "compile": args.compile, "sizes": "full" if gpu else "small CPU sizes (no GPU found)", "results": {}}
    if args.task in ("vit", "all"):
        setting = Setting(dev, batch=256 if gpu else 4, steps=steps, warmup=5 if gpu else 1, compile=args.compile)
        report["results"]["vit"] = {"batch": setting.batch, "image_size": 224 if gpu else 64,
                                    **vit_rows(setting, 224 if gpu else 64, "base" if gpu else "tiny")}
    if args.task in ("clip", "all"):
        setting = Setting(dev, batch=512 if gpu else 4, steps=steps, warmup=5 if gpu else 1, compile=args.compile)
        report["results"]["clip"] = {"batch": setting.batch, **clip_rows(setting, "base" if gpu else "tiny")}
    if args.task in ("asr", "all"):
        train = Setting(dev, batch=64 if gpu else 2, steps=steps, warmup=5 if gpu else 1, compile=args.compile)
        decode = Setting(dev, batch=16 if gpu else 2, steps=max(1, steps // 5), warmup=1, compile=args.compile)
        report["results"]["asr"] = asr_rows(train, decode, "base" if gpu else "tiny", text_tokens=448 if gpu else 16,
                                            new_tokens=128 if gpu else 4)
    if args.task in ("attention", "all"):
        lengths = [1024, 2048, 4096, 8192, 16384, 32768] if gpu else [256, 512, 1024]
        setting = Setting(dev, batch=1, steps=steps, warmup=3 if gpu else 1, compile=False)
        report["results"]["attention"] = attention_rows(setting, lengths)
        if args.plot:
            plot_attention(report["results"]["attention"], args.plot)
    print(json.dumps(report, indent=2))
    if not args.json and not gpu:
        print("note: CPU sizes only; run on a GPU for the figures docs/PERFORMANCE.md records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
