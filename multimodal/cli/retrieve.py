"""Cross-modal retrieval with a CLIP, or by voice with a SpeechCLIP (a speech tower in a CLIP's space).

    multimodal retrieve index --checkpoint CKPT --images data/shapes_pairs/images --out runs/shapes.index
    multimodal retrieve query --checkpoint CKPT --index runs/shapes.index --text "a small red star" [--sheet top.png]
    multimodal retrieve query --checkpoint CKPT --index runs/shapes.index --image photo.png
    multimodal retrieve eval  --checkpoint CKPT --pairs data/shapes_pairs/two_object_test.jsonl
    multimodal retrieve query --checkpoint SPEECH_CKPT --index runs/shapes.index --audio question.wav
    multimodal retrieve eval  --checkpoint SPEECH_CKPT --pairs data/spoken_shapes/two_object_test.jsonl
An index remembers the CLIP it was built with and refuses to be queried with another; a SpeechCLIP queries the
indexes of its frozen CLIP. eval reports recall@1/5/10 text→image and image→text (an image is a hit if any of its
captions is in the top k); with a SpeechCLIP, on spoken-caption pairs, speech→image, image→speech, speech→text
and the CLIP's own text→image on the written captions.
"""

import argparse
import sys

from multimodal.errors import InputError, a
from multimodal.inference.common import CHECKPOINT_HELP, INT8_HELP, device, device_name, positive, print_json, script_main
from multimodal.inference.retrieval import build_index, contact_sheet, evaluate, query
from multimodal.loading import load_model
from multimodal.models import CLIP, SpeechCLIP
from multimodal.outputs import output_file


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True, help=f"a CLIP or a SpeechCLIP: {CHECKPOINT_HELP}")
    common.add_argument("--batch-size", type=positive, default=64)
    common.add_argument("--device", type=device_name, default=None, help="cpu, cuda, … (default: cuda when available)")
    common.add_argument("--int8", action="store_true", help=INT8_HELP)
    common.add_argument("--json", action="store_true", help="print machine-readable results")
    p = sub.add_parser("index", parents=[common], help="embed every image under the folders into an index file")
    p.add_argument("--images", nargs="+", required=True, help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="the index file to write (safetensors)")
    p = sub.add_parser("query", parents=[common], help="the images of an index closest to a text or an image")
    p.add_argument("--index", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help='e.g. "a small red star"')
    what.add_argument("--image", help="an image file")
    what.add_argument("--audio", help="a spoken query, an audio file (a SpeechCLIP checkpoint)")
    p.add_argument("--top-k", type=positive, default=5)
    p.add_argument("--sheet", help="also write a contact sheet PNG of the top results")
    p = sub.add_parser("eval", parents=[common], help="recall@1/5/10 both ways on an image–caption pairs file, or "
                                                       "on a spoken-caption pairs file with a SpeechCLIP")
    p.add_argument("--pairs", required=True, help="CSV or JSONL with image and caption; JSONL with audio, image and "
                                                  "caption for a SpeechCLIP")
    args = parser.parse_args(argv)

    for path in (getattr(args, "out", None), getattr(args, "sheet", None)):
        if path:
            output_file(path)  # before the model is loaded and the images embedded
    model = load_model(args.checkpoint, device(args.device, args.int8), int8=args.int8)
    if not isinstance(model, (CLIP, SpeechCLIP)):
        raise InputError(f"this is {a(type(model).__name__)}; a CLIP or a SpeechCLIP is needed here", args.checkpoint)
    if args.command == "index":
        result = build_index(model, args.images, args.out, args.batch_size, quiet=args.json)
        text = f"indexed {result['images']} images into {result['index']}"
    elif args.command == "query":
        result = query(model, args.index, args.text, args.image, args.audio, args.top_k)
        if args.sheet:
            result["sheet"] = str(contact_sheet(result, args.sheet))
        text = "\n".join(f"{n + 1:3d}  {r['score']:.4f}  {r['path']}" for n, r in enumerate(result["results"]))
        if args.sheet:
            text += f"\ncontact sheet: {result['sheet']}"
    else:
        result = evaluate(model, args.pairs, batch_size=args.batch_size, quiet=args.json)
        ways = [way for way in ("speech_to_image", "image_to_speech", "speech_to_text", "text_to_image", "image_to_text")
                if way in result]
        text = "\n".join(f"{way.replace('_', ' ')}: " + " ".join(f"{k}={v:.4f}" for k, v in result[way].items())
                         for way in ways)
        for source, recall in result.get("speech_to_image_R@1_by_source", {}).items():
            text += f"\nspeech to image R@1, {source}: {recall:.4f}"
        counted = ("clips", "images") if "clips" in result else ("images", "captions")
        text += f"\n({', '.join(f'{result[k]} {k}' for k in counted)})"
    if args.json:
        print_json(result)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
