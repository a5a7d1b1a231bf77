"""Transcribe speech with a speech-to-text model.

    multimodal transcribe --checkpoint runs/asr_shapes/checkpoints/last.ckpt clip.wav more.flac
    multimodal transcribe --checkpoint CKPT --manifest data/speech/test.jsonl   # also WER and CER
A manifest whose lines name a "speaker" or "source" also gets WER and CER per speaker and per source.
Audio: wav / flac / ogg at any sample rate and channel count. Audio longer than the model's window is
transcribed in windows (a warning says so), or refused with --long-audio refuse.
"""

import argparse
import sys

from multimodal.inference.common import CHECKPOINT_HELP, INT8_HELP, device, device_name, positive, print_json, script_main
from multimodal.inference.transcribe import transcribe_files, transcribe_manifest
from multimodal.loading import load_model
from multimodal.models.speech import LONG_AUDIO, SpeechToText


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=f"a speech-to-text model: {CHECKPOINT_HELP}")
    parser.add_argument("audio", nargs="*", help="audio files")
    parser.add_argument("--manifest", help="a JSONL manifest ({\"audio\": ..., \"text\": ...} lines): report WER / CER")
    parser.add_argument("--beam-size", type=positive, default=None, help="1 = greedy (default: the model's setting)")
    parser.add_argument("--long-audio", choices=LONG_AUDIO, default="split",
                        help="audio longer than the model's window: split into windows (default) or refuse")
    parser.add_argument("--batch-size", type=positive, default=16)
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, … (default: cuda when available)")
    parser.add_argument("--int8", action="store_true", help=INT8_HELP)
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if not args.audio and not args.manifest:
        parser.error("give audio files or --manifest")
    if args.audio and args.manifest:
        parser.error("give either audio files or --manifest, not both")

    model = load_model(args.checkpoint, device(args.device, args.int8), expect=SpeechToText, int8=args.int8)
    options = dict(beam_size=args.beam_size, batch_size=args.batch_size, long_audio=args.long_audio, quiet=args.json)
    if args.manifest:
        result = transcribe_manifest(model, args.manifest, **options)
    else:
        result = transcribe_files(model, args.audio, **options)
    if args.json:
        print_json(result)
        return 0
    for r in result["files"]:
        if "reference" in r:
            mark = "  ✓" if r["text"] == r["reference"] else f"  ✗ (reference: {r['reference']})"
        else:
            mark = ""
        print(f"{r['path']}: {r['text']}{mark}")
    for key in ("by_speaker", "by_source"):
        for name, rates in result.get(key, {}).items():
            print(f"{key[3:]} {name}: utterances={rates['utterances']} WER={rates['wer']:.4f} CER={rates['cer']:.4f}")
    if "wer" in result:
        print(f"utterances={result['utterances']} WER={result['wer']:.4f} CER={result['cer']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
