"""Models on disk: ``load_model`` reads any model a user may hold, ``save_model`` writes ours; no Lightning.

- the name of a model shipped in the package (``multimodal.available_models()``), checked against its sha256;
- our Lightning checkpoint (a ``.ckpt`` with a ``multimodal_task`` entry), read with weights_only;
- an exported folder: ``config.json`` (the model's description) + ``model.safetensors``;
- foreign weights (.pt / .pth / .bin / .safetensors), recognised from their keys: a timm ViT (-> Classifier),
  an OpenCLIP / OpenAI CLIP ViT (-> CLIP), a Whisper in OpenAI or Hugging Face format (-> SpeechToText),
  converted with their loaders' defaults: 64-dimensional attention heads (every released timm ViT-Ti/S/B/L,
  OpenCLIP ViT and Whisper has them), QuickGELU for CLIP (right for OpenAI's weights and OpenCLIP's
  ``-quickgelu`` models; call ``load_open_clip(path, activation="gelu")`` for the others), timm's classes
  named class_0 …, Whisper transcribing English.
Checkpoints and exports written before the models were apart from the tasks describe the model by the task's
hyper-parameters; ``task_description`` reads those.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from multimodal.data import read_text
from multimodal.errors import InputError, a
from multimodal.interop.open_clip import load_open_clip
from multimodal.interop.timm import load_timm_vit
from multimodal.interop.weights import read_weights, state_dict_of
from multimodal.interop.whisper import load_whisper
from multimodal.models import CLIP, Classifier, Model, SpeechToText, build, from_state, load_converted
from multimodal.nn.quantize import is_quantized, quantize_int8
from multimodal.outputs import atomic_write, output_folder
from multimodal.pretrained import available_models, load_pretrained

FORMAT = "multimodal-export"
UNDERSTOOD = ("our Lightning .ckpt, an exported folder (config.json + model.safetensors), or the weights of a "
              "timm ViT, an OpenCLIP / OpenAI CLIP ViT or a Whisper (OpenAI or Hugging Face format)")

# foreign formats: (keys that only their state dicts have, their name, the model they become, their loader)
FORMATS = [(("patch_embed.proj.weight",), "timm ViT", Classifier, load_timm_vit),
           (("visual.conv1.weight",), "OpenCLIP ViT", CLIP, load_open_clip),
           (("encoder.conv1.weight", "model.encoder.conv1.weight"), "Whisper", SpeechToText, load_whisper)]


# the model each of our tasks trains
TASK_MODELS = {"ImageClassifier": "Classifier", "SpeechRecognizer": "SpeechToText", "ImageTextContrastive": "CLIP",
               "SpeechImageContrastive": "SpeechCLIP"}


def task_description(task: str, hparams: dict, source: str | Path) -> dict:
    """The model description within a task's saved hyper-parameters (checkpoints of any version)."""
    if not isinstance(task, str) or task not in TASK_MODELS:
        raise InputError(f"unknown task {task!r}; expected one of {sorted(TASK_MODELS)}", source)
    if not isinstance(hparams, dict):
        raise InputError("the checkpoint has no hyper-parameters" if hparams is None else
                         f"the checkpoint's hyper-parameters are {type(hparams).__name__}, not a dict", source)
    model = TASK_MODELS[task]
    fields = {"Classifier": ("vit", "mean", "std"), "SpeechToText": ("encoder", "decoder", "beam_size", "length_penalty"),
              "CLIP": ("vit", "text", "embed_dim", "mean", "std")}.get(model)
    if fields is None:  # tasks newer than the models' own descriptions always save one
        raise InputError("the checkpoint has no model description (multimodal_model)", source)
    config = {k: hparams[k] for k in fields if k in hparams}
    if model == "CLIP":  # the loss decided the initial temperature and whether there is a bias (SigLIP's)
        siglip = hparams.get("loss") == "siglip"
        config.update(init_logit_scale=math.log(10.0 if siglip else 1 / 0.07), init_logit_bias=-10.0 if siglip else None)
    extra = "class_names" if model == "Classifier" else "tokenizer"
    if extra not in hparams:
        raise InputError(f"the checkpoint's hyper-parameters have no {extra!r}", source)
    return {"model": model, "config": config, extra: hparams[extra]}


def from_checkpoint(checkpoint: dict, source: str | Path, expect: type[Model] | None = None) -> Model:
    """The model inside the contents of one of our Lightning checkpoints; InputError naming ``source`` for any
    part that is missing or malformed."""
    if not isinstance(checkpoint, dict):
        raise InputError(f"not a checkpoint of this library (it holds {type(checkpoint).__name__}, not a dict)",
                         source)
    task = checkpoint.get("multimodal_task")
    if not isinstance(task, str) or task not in TASK_MODELS:
        raise InputError(f"unknown task {task!r}; expected one of {sorted(TASK_MODELS)}", source)
    kind = TASK_MODELS[task]
    if expect is not None and kind != expect.__name__:
        raise InputError(f"this is {a(kind)} checkpoint; {a(expect.__name__)} is needed here", source)
    description = checkpoint.get("multimodal_model")
    if description is None:  # written before the models were apart from the tasks
        description = task_description(task, checkpoint.get("hyper_parameters"), source)
    state = checkpoint.get("state_dict")
    if state is None:
        raise InputError("the checkpoint has no state_dict", source)
    if (not isinstance(state, dict) or not all(isinstance(k, str) for k in state)
            or not all(isinstance(v, Tensor) for v in state.values())):
        raise InputError("the checkpoint's state_dict is not a dict of named tensors", source)
    if any(k.startswith("model.") for k in state):  # the task's: its model's weights under model.
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return from_state(description, state, source)


def save_model(model: Model, directory: str | Path) -> Path:
    """``model`` as directory/model.safetensors + directory/config.json (its description); returns directory.
    Both files are written beside their places and renamed into them, the config last; a write that fails (a
    full disk) leaves the folder as it was."""
    from safetensors.torch import save

    if is_quantized(model):
        raise ValueError("an int8 model is for inference only: save the float32 model it was made from")
    out = output_folder(directory)
    # clones: safetensors refuses tensors that share memory (tied weights, views)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT, "version": 2, **model.describe()}
    # both are written before either is renamed; the weights are renamed first
    with atomic_write(out / "config.json") as config_file, atomic_write(out / "model.safetensors") as weights_file:
        weights_file.write_bytes(save(state, metadata={"model": type(model).__name__}))
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


def load_folder(directory: str | Path) -> Model:
    """The model of an exported folder (config.json + model.safetensors), in eval mode on the CPU; InputError
    naming config.json for a description that is not one, model.safetensors for weights that are not its."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise InputError("not an exported model folder (no such file)", path)
    try:
        config = json.loads(read_text(config_path, "config"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg} at column {e.colno})", config_path, e.lineno) from None
    except RecursionError:
        raise InputError("not valid JSON (nested too deeply)", config_path) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} config (no \"format\": \"{FORMAT}\")", config_path)
    description = config if "model" in config else task_description(config.get("task"),
                                                                        config.get("hyper_parameters"), config_path)
    model = build(description, config_path)
    load_converted(model, read_weights(weights_path), weights_path)
    return model.eval()


def load_model(source: str | Path, device: str | torch.device | None = None,
               expect: type[Model] | None = None, int8: bool = False) -> Model:
    """The model in ``source`` (see the module's docstring for what it reads), in eval mode on ``device``
    (default the CPU); with ``expect``, a model of another kind is refused (foreign weights before their
    conversion); ``int8``: its linear layers quantized for CPU inference (``quantize_int8``)."""
    if int8 and torch.device(device or "cpu").type != "cpu":
        raise InputError(f"int8 inference runs on the CPU, not on {device}")
    path = Path(source)
    if not path.exists() and str(source) in available_models():
        model = load_pretrained(str(source))
    elif path.is_dir():
        model = load_folder(path)
    elif not path.is_file():
        raise InputError(f"no such checkpoint file or folder, nor a shipped model "
                         f"({', '.join(available_models()) or 'none'})", path)
    else:
        content = read_weights(path)
        if isinstance(content, dict) and "multimodal_task" in content:
            model = from_checkpoint(content, path, expect)
        else:
            model = _foreign(content, path, expect)
    if expect is not None and not isinstance(model, expect):
        raise InputError(f"this is {a(type(model).__name__)}; {a(expect.__name__)} is needed here", path)
    return quantize_int8(model) if int8 else model.to(device or "cpu").eval()


def _foreign(content, path: Path, expect: type[Model] | None) -> Model:
    try:
        state = state_dict_of(content, path)
    except InputError:
        state = {}
    for keys, name, kind, loader in FORMATS:
        if any(key in state for key in keys):
            if expect is not None and kind is not expect:
                raise InputError(f"these are {name} weights ({a(kind.__name__)}); {a(expect.__name__)} is needed "
                                 f"here", path)
            try:
                return loader(path, state=state)
            except InputError:
                raise
            except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as e:
                # a file with some of the format's keys whose shapes or values do not make a model
                raise InputError(f"looks like {name} weights, but they do not make a model ({type(e).__name__}: "
                                 f"{(str(e).splitlines() or [''])[0][:200]})", path) from None
    seen = f"its keys begin {', '.join(list(state)[:4])}" if state else "no state dict of tensors"
    raise InputError(f"not a model this library knows ({seen}); it reads {UNDERSTOOD}", path)
