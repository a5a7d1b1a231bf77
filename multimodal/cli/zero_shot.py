"""Zero-shot image classification with a CLIP: name the classes in words.

    multimodal zero-shot --checkpoint runs/clip_shapes/checkpoints/last.ckpt \
        --images photo.png more/ --classes "red circle,blue star"
    multimodal zero-shot --checkpoint CKPT --images data/shapes_pairs/zero_shot/train_pairs \
        data/shapes_pairs/zero_shot/held_out          # classes = the sub-folder names; accuracy per folder
A folder with one sub-folder per class (underscores read as spaces, e.g. red_star/) is labelled and its
top-1 / top-k accuracy reported. A class's embedding averages the prompts of all templates.
"""

import argparse
import sys

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
from multimodal.inference.zero_shot import check_classes, check_templates, read_lines, zero_shot
from multimodal.loading import load_model
from multimodal.models import CLIP, DEFAULT_TEMPLATES


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=f"a CLIP: {CHECKPOINT_HELP}")
    parser.add_argument("--images", nargs="+", required=True, help="image files or folders")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--classes", help='comma-separated class names, e.g. "red circle,blue star"')
    group.add_argument("--classes-file", help="a text file with one class name per line")
    parser.add_argument("--templates", help=f"a text file with one prompt template per line, {{}} for the class "
                                            f"(default: {', '.join(map(repr, DEFAULT_TEMPLATES))})")
    parser.add_argument("--top-k", type=positive, default=5, help="labels to show per image (default 5)")
    parser.add_argument("--batch-size", type=positive, default=64)
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, … (default: cuda when available)")
    parser.add_argument("--int8", action="store_true", help=INT8_HELP)
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)

    classes = None
    if args.classes is not None:
        classes = check_classes(args.classes.split(","), "--classes")
    elif args.classes_file:
        classes = check_classes(read_lines(args.classes_file, "class"), args.classes_file)
    templates = check_templates(read_lines(args.templates, "template"), args.templates) if args.templates \
        else DEFAULT_TEMPLATES
    model = load_model(args.checkpoint, device(args.device, args.int8), expect=CLIP, int8=args.int8)
    result = zero_shot(model, args.images, classes, templates, args.top_k, args.batch_size, quiet=args.json)
    if args.json:
        print_json(result)
        return 0
    print_predictions(result)
    for name, acc in [("all", result.get("accuracy")), *result.get("accuracy_per_input", {}).items()]:
        if acc:
            print(f"{name}: {format_scores(acc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
