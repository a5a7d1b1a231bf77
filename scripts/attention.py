#!/usr/bin/env python
"""Draw what a trained model attends to, one PNG per input.

    python scripts/attention.py --checkpoint runs/vit_mnist/checkpoints/last.ckpt digit.png --out maps/
For an image classifier each PNG shows the image, the attention rollout through all layers and the
last layer's attention of the pooled position. --json adds the raw maps.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from multimodal.data.images import eval_transform, find_images, load_image
from multimodal.errors import InputError
from multimodal.inference.attention_maps import save_image_maps, vit_attention_maps
from multimodal.inference.common import batches, print_json, script_main
from multimodal.tasks import ImageClassifier, Task


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--out", type=Path, default=Path("attention_maps"), help="folder for the PNGs")
    parser.add_argument("--json", action="store_true", help="print the maps as JSON")
    args = parser.parse_args(argv)

    model = Task.load(args.checkpoint)
    if not isinstance(model, ImageClassifier):
        raise InputError(f"attention maps are drawn for ImageClassifier checkpoints; this is a {type(model).__name__}",
                         args.checkpoint)
    paths = [p for item in args.inputs for p in find_images(item)]
    if not paths:
        raise InputError("no image files found", ", ".join(args.inputs))
    transform, channels = eval_transform(model.vit.cfg.image_size), model.vit.cfg.channels
    results = []
    for chunk in batches(paths, 32, "attention maps", quiet=args.json):
        images = [load_image(p, channels) for p in chunk]
        pixels = torch.stack([transform(im) for im in images])
        maps = vit_attention_maps(model.vit, (pixels - model.mean) / model.std)
        for i, (path, image) in enumerate(zip(chunk, images)):
            out = args.out / f"{path.stem}_attention.png"
            one = {name: m[i] for name, m in maps.items()}
            save_image_maps(out, image.resize((model.vit.cfg.image_size,) * 2), one)
            results.append({"input": str(path), "png": str(out), **({k: v.tolist() for k, v in one.items()} if args.json else {})})
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['input']} -> {r['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
