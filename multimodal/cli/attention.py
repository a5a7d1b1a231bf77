"""Draw what a trained model attends to, one PNG per input.

    multimodal attention --checkpoint runs/vit_mnist/checkpoints/last.ckpt digit.png --out maps/
    multimodal attention --checkpoint runs/clip_shapes/checkpoints/last.ckpt scene.png --text "a red star"
    multimodal attention --checkpoint runs/asr_shapes/checkpoints/last.ckpt clip.wav clips/ --json
Images (a Classifier, or the image tower of a CLIP): the image, the attention rollout
through all layers and the last layer's attention of the pooled position. --text CAPTION (repeatable,
CLIP): how much each token of the caption weighs in what the text tower pools, the last
layer's attention of <eos>. Audio (SpeechToText): the log-mel spectrogram above the decoder's
cross-attention over it for each token of the greedy transcript; audio (SpeechCLIP): the log-mel spectrogram
above what its attention pooling weighs, per head and their mean (images and --text: its CLIP's maps).
--json adds the raw maps.
"""

import argparse
import re
import sys
from pathlib import Path

from multimodal.data.audio import AUDIO_SUFFIXES, SAMPLE_RATE, find_audio, load_audio
from multimodal.data.images import IMAGE_SUFFIXES, find_images, load_image
from multimodal.errors import InputError, a
from multimodal.inference.attention_maps import (
    save_image_maps,
    save_speech_attention,
    save_text_weights,
    speech_attention,
    speech_pooling_attention,
    text_pooling_weights,
    token_pieces,
    vit_attention_maps,
)
from multimodal.inference.common import CHECKPOINT_HELP, batches, print_json, script_main
from multimodal.loading import load_model
from multimodal.models import CLIP, Classifier, SpeechCLIP, SpeechToText
from multimodal.outputs import output_folder


def png_names(paths: list[Path], out: Path) -> dict[Path, Path]:
    """out/STEM_attention.png for each input; inputs that share a file name get STEM_2, STEM_3, … in order."""
    names, seen = {}, {}
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        suffix = "" if seen[path.stem] == 1 else f"_{seen[path.stem]}"
        names[path] = out / f"{path.stem}{suffix}_attention.png"
    return names


def image_maps(model: Classifier | CLIP, paths: list[Path], out: Path, quiet: bool) -> list[dict]:
    pngs, results = png_names(paths, out), []
    for chunk in batches(paths, 32, "attention maps", quiet=quiet):
        images = [load_image(p, model.config.vit.channels) for p in chunk]
        pixels, _ = model.preprocess(images)
        maps = vit_attention_maps(model.vit, (pixels - model.mean) / model.std)
        for i, (path, image) in enumerate(zip(chunk, images)):
            png = pngs[path]
            one = {name: m[i] for name, m in maps.items()}
            save_image_maps(png, image.resize((model.vit.cfg.image_size,) * 2), one)
            results.append({"input": str(path), "png": str(png), **{k: v.tolist() for k, v in one.items()}})
    return results


def caption_maps(model: CLIP, captions: list[str], out: Path) -> list[dict]:
    if not captions:
        return []
    tokens, lengths = model.tokenizer.encode_batch(captions, model.config.text.context_length)
    weights = text_pooling_weights(model.text, tokens, lengths)
    results = []
    for i, (caption, ids, row, n) in enumerate(zip(captions, tokens, weights, lengths.tolist())):
        pieces = token_pieces(model.tokenizer, ids[:n])
        png = out / f"caption{i}_{re.sub(r'[^a-z0-9]+', '_', caption.lower()).strip('_')[:40]}_attention.png"
        save_text_weights(png, caption, pieces, row[:n])
        results.append({"caption": caption, "png": str(png), "tokens": pieces, "weights": row[:n].tolist()})
    return results


def speech_maps(model: SpeechToText | SpeechCLIP, paths: list[Path], out: Path, quiet: bool) -> list[dict]:
    pooling = isinstance(model, SpeechCLIP)
    window = (model.audio if pooling else model.encoder).window_samples
    pngs, results = png_names(paths, out), []
    for [path] in batches(paths, 1, "attention maps", quiet=quiet):
        waveform = load_audio(path)
        if waveform.shape[0] > window:
            raise InputError(f"{waveform.shape[0] / SAMPLE_RATE:.1f} s is longer than the model's "
                             f"{window / SAMPLE_RATE:.1f} s window; cut the clip to draw its attention", path)
        result = speech_pooling_attention(model, waveform) if pooling else speech_attention(model, waveform)
        png = pngs[path]
        save_speech_attention(png, result)
        results.append({"input": str(path), "png": str(png), "text": result.text, "tokens": result.tokens,
                        "alignment": result.alignment.tolist()})
    return results


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=f"a model of any task: {CHECKPOINT_HELP}")
    parser.add_argument("inputs", nargs="*", help="image files or folders (image models), audio files or folders "
                                                  "(speech models)")
    parser.add_argument("--text", action="append", default=[], metavar="CAPTION",
                        help="a caption whose pooled tokens to draw (CLIP; repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs/attention"), help="folder for the PNGs "
                        "(default runs/attention)")
    parser.add_argument("--json", action="store_true", help="print the maps as JSON")
    args = parser.parse_args(argv)
    if not args.inputs and not args.text:
        parser.error("give image or audio files or folders, or --text captions")

    output_folder(args.out)
    model = load_model(args.checkpoint)
    kind = type(model).__name__
    if args.text and not isinstance(model, (CLIP, SpeechCLIP)):
        raise InputError(f"--text needs a CLIP checkpoint; this is {a(kind)}", args.checkpoint)
    speech = isinstance(model, (SpeechToText, SpeechCLIP))
    modality, find, other = ("audio", find_audio, IMAGE_SUFFIXES) if speech else ("image", find_images, AUDIO_SUFFIXES)
    paths = list(dict.fromkeys(p for item in args.inputs for p in find(item)))  # each input once
    wrong = next((p for p in paths if p.suffix.lower() in other), None)
    if wrong:
        raise InputError(f"{'an image' if speech else 'an audio'} file, but {a(kind)} checkpoint draws attention maps "
                         f"for {modality} inputs", wrong)
    if args.inputs and not paths:
        raise InputError(f"no {modality} files found", ", ".join(args.inputs))
    results = speech_maps(model, paths, args.out, args.json) if speech else image_maps(model, paths, args.out, args.json)
    results += caption_maps(model.clip if isinstance(model, SpeechCLIP) else model, args.text, args.out)
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r.get('input') or repr(r['caption'])} -> {r['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
