"""Export a trained checkpoint (any task), or timm / OpenCLIP / Whisper weights converted to our model, as
model.safetensors + config.json (the model's description).

    multimodal export --checkpoint runs/vit_mnist/checkpoints/last.ckpt --out exported/vit_mnist
    multimodal export --checkpoint whisper-base.pt --out exported/whisper_base
Load it back in Python with ``multimodal.load_model("exported/vit_mnist")``.
"""

import argparse
import sys

from multimodal.inference.common import CHECKPOINT_HELP, print_json, script_main
from multimodal.loading import load_model, save_model


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=f"a model of any task: {CHECKPOINT_HELP}")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors and config.json into")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)

    out = save_model(load_model(args.checkpoint), args.out)
    files = {"weights": str(out / "model.safetensors"), "config": str(out / "config.json")}
    if args.json:
        print_json(files)
    else:
        print(f"wrote {files['weights']} and {files['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
