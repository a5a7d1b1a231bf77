"""One entry point for any model a user may hold: ``load_pretrained(path)`` -> a Task.

- our Lightning checkpoint (a ``.ckpt`` with a ``multimodal_task`` entry): ``Task.load``'s rebuild;
- an exported folder (config.json + model.safetensors): ``load_exported``;
- foreign weights (.pt / .pth / .bin / .safetensors), recognised from their keys: a timm ViT
  (-> ImageClassifier), an OpenCLIP / OpenAI CLIP ViT (-> ImageTextContrastive), a Whisper in OpenAI or
  Hugging Face format (-> SpeechRecognizer), converted with their loaders' defaults: 64-dimensional
  attention heads (every released timm ViT-Ti/S/B/L, OpenCLIP ViT and Whisper has them), QuickGELU for
  CLIP (right for OpenAI's weights and OpenCLIP's ``-quickgelu`` models; call ``load_open_clip(path,
  activation="gelu")`` for the others), timm's classes named class_0 …, Whisper transcribing English.
The file is read once.
"""

from __future__ import annotations

from pathlib import Path

from multimodal.errors import InputError, a
from multimodal.interop.export import load_exported
from multimodal.interop.open_clip import load_open_clip
from multimodal.interop.timm import load_timm_vit
from multimodal.interop.weights import read_weights, state_dict_of
from multimodal.interop.whisper import load_whisper
from multimodal.tasks import Task

UNDERSTOOD = ("our Lightning .ckpt, an exported folder (config.json + model.safetensors), or the weights of a "
              "timm ViT, an OpenCLIP / OpenAI CLIP ViT or a Whisper (OpenAI or Hugging Face format)")

# foreign formats: (keys that only their state dicts have, their name, the task they become, their loader)
FORMATS = [(("patch_embed.proj.weight",), "timm ViT", "ImageClassifier", load_timm_vit),
           (("visual.conv1.weight",), "OpenCLIP ViT", "ImageTextContrastive", load_open_clip),
           (("encoder.conv1.weight", "model.encoder.conv1.weight"), "Whisper", "SpeechRecognizer", load_whisper)]


def load_pretrained(path: str | Path, task: type[Task] = Task) -> Task:
    """The model in ``path``, in eval mode on the CPU; a model of another task than ``task`` is refused
    (foreign weights before their conversion)."""
    path = Path(path)
    if path.is_dir():
        model = load_exported(path)
        if not isinstance(model, task):
            raise InputError(f"this is {a(type(model).__name__)}; {a(task.__name__)} is needed here", path)
        return model
    if not path.is_file():
        raise InputError("no such checkpoint file or folder", path)
    content = read_weights(path)
    if isinstance(content, dict) and "multimodal_task" in content:
        return task.from_checkpoint(content, path)
    try:
        state = state_dict_of(content, path)
    except InputError:
        state = {}
    for keys, name, kind, loader in FORMATS:
        if any(key in state for key in keys):
            if task is not Task and kind != task.__name__:
                raise InputError(f"these are {name} weights ({a(kind)}); {a(task.__name__)} is needed here", path)
            return loader(path, state=state)
    seen = f"its keys begin {', '.join(list(state)[:4])}" if state else "no state dict of tensors"
    raise InputError(f"not a model this library knows ({seen}); it reads {UNDERSTOOD}", path)
