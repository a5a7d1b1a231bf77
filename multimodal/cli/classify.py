"""Classify images with an image classifier.

    multimodal classify --checkpoint runs/vit_mnist/checkpoints/last.ckpt digit.png more_digits/
A folder with one sub-folder per class of the checkpoint (e.g. test/7/*.png) also reports accuracy.
"""

import argparse
import sys

from multimodal.inference.classify import classify, collect
from multimodal.inference.common import (
    CHECKPOINT_HELP,
    INT8_HELP,
    device,
    device_name,
    format_scores,
    positive,
    print_json,
    print_predictions,
    script_main,
)
from multimodal.loading import load_model
from multimodal.models import Classifier


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=f"an image classifier: {CHECKPOINT_HELP}")
    parser.add_argument("paths", nargs="+", help="image files or folders")
    parser.add_argument("--top-k", type=positive, default=5, help="labels to show per image (default 5)")
    parser.add_argument("--batch-size", type=positive, default=64)
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, … (default: cuda when available)")
    parser.add_argument("--int8", action="store_true", help=INT8_HELP)
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)

    model = load_model(args.checkpoint, device(args.device, args.int8), expect=Classifier, int8=args.int8)
    result = classify(model, collect(args.paths, model.class_names), args.top_k, args.batch_size, quiet=args.json)
    if args.json:
        print_json(result)
        return 0
    print_predictions(result)
    if "accuracy" in result:
        print(format_scores(result["accuracy"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
