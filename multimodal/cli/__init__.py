"""The ``multimodal`` command: one entry point whose subcommands are the scripts in ``scripts/``.

One command rather than one per script: ``multimodal --help`` lists everything there is, and only one name is
added to the user's PATH. Each subcommand's module is imported only when it runs, so that ``multimodal
transcribe`` does not pay for importing Lightning, which only ``train`` needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _train():
    from multimodal.cli.train import main
    return main


def _classify():
    from multimodal.cli.classify import main
    return main


def _transcribe():
    from multimodal.cli.transcribe import main
    return main


def _zero_shot():
    from multimodal.cli.zero_shot import main
    return main


def _retrieve():
    from multimodal.cli.retrieve import main
    return main


def _attention():
    from multimodal.cli.attention import main
    return main


def _export():
    from multimodal.cli.export import main
    return main


def _models():
    from multimodal.cli.models import main
    return main


def _make_data():
    from multimodal.cli.make_data import main
    return main


COMMANDS: dict[str, tuple[Callable[[], Callable[..., int]], str]] = {
    "train": (_train, "train, validate, test or predict with a recipe in configs/ (LightningCLI)"),
    "classify": (_classify, "classify images with an image classifier"),
    "transcribe": (_transcribe, "transcribe speech; WER / CER on a manifest"),
    "zero-shot": (_zero_shot, "classify images into classes named in words, with a CLIP"),
    "retrieve": (_retrieve, "index images, query them by text or image, recall@k on pairs"),
    "attention": (_attention, "draw what a model attends to"),
    "export": (_export, "write any model as config.json + model.safetensors"),
    "models": (_models, "list the models shipped in the package; rebuild one from its recipe"),
    "make-data": (_make_data, "write the built-in data sets (MNIST-5k, shapes world, spoken sentences)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        usage = "usage: multimodal COMMAND [options]   (multimodal COMMAND --help for its options)\n\ncommands:\n"
        usage += "".join(f"  {name:<{width}}  {about}\n" for name, (_, about) in COMMANDS.items())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"{usage}\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        print(usage, end="")
        return 0 if argv else 2
    # argparse and LightningCLI read sys.argv and name the command in their usage from it
    sys.argv = [f"multimodal {argv[0]}", *argv[1:]]
    return COMMANDS[argv[0]][0]()() or 0
