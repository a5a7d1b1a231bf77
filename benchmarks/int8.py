#!/usr/bin/env python
"""What int8 inference (``load_model(..., int8=True)``, the scripts' ``--int8``) costs and gives: each shipped model
scored on its own test data in float32 and in int8, with the wall time of each scoring, on this CPU.

    python benchmarks/int8.py --json                      # every shipped model
    python benchmarks/int8.py mnist-vit shapes-asr
Test data a model needs and this checkout lacks is written first, by the command its registry entry names.
The scores are those `multimodal models build` records (one loader, one model, as a user runs them).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from multimodal.cli.models import BUILDS, ROOT, commit, machine, run, worse_by
from multimodal.loading import load_model
from multimodal.pretrained import available_models


def scored(name: str, int8: bool) -> dict:
    model = load_model(name, int8=int8)
    start = time.perf_counter()
    scores = BUILDS[name].evaluate(model)
    return {"scores": scores, "seconds": time.perf_counter() - start}


def compare(name: str) -> dict:
    spec = BUILDS[name]
    test_data = spec.data[-1]
    if not (ROOT / test_data[2]).exists():
        run(test_data)
    float32, int8 = scored(name, False), scored(name, True)
    return {"float32": float32, "int8": int8, "speed_up": float32["seconds"] / int8["seconds"],
            "int8_worse_by": worse_by(int8["scores"], float32["scores"], spec.higher_is_better),
            "test_data": spec.test_data}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"shipped models (default: all: {', '.join(available_models())})")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(available_models())):
        parser.error(f"no shipped model {', '.join(unknown)}")
    rows = {name: compare(name) for name in args.names or available_models()}
    result = {"commit": commit(), "machine": machine(), "threads": torch.get_num_threads(), "models": rows}
    if not args.json:
        for name, row in rows.items():
            print(f"{name}: int8 {row['speed_up']:.2f}x the float32 speed, worse by {row['int8_worse_by']:.4f} at most")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
