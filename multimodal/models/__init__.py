"""Plain ``nn.Module``s a user loads and calls, one per task family; no Lightning here.

Each is rebuilt from its ``describe()`` (``build``), which is what exported folders and checkpoints store.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from multimodal.errors import InputError
from multimodal.models.base import Classification, Model, Transcription, load_converted
from multimodal.models.classifier import Classifier, ClassifierConfig
from multimodal.models.clip import CLIP, DEFAULT_TEMPLATES, CLIPConfig
from multimodal.models.speech import SpeechToText, SpeechToTextConfig
from multimodal.tokenizers import Tokenizer

MODELS: dict[str, type[Model]] = {cls.__name__: cls for cls in (Classifier, SpeechToText, CLIP)}


def build(description: dict, source: str | Path | None = None) -> Model:
    """The model a ``describe()`` describes, freshly initialised; InputError naming ``source`` if it is not one."""
    name = description.get("model") if isinstance(description, dict) else None
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; expected one of {sorted(MODELS)}", source)
    try:
        config = description["config"]
        if name == "Classifier":
            return Classifier(config, description["class_names"])
        return MODELS[name](config, Tokenizer.from_dict(description["tokenizer"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"not a valid {name} description ({type(e).__name__}: {e})", source) from None


def from_state(description: dict, state: dict[str, Tensor], source: str | Path | None = None) -> Model:
    """``build`` + its weights (strictly: every key, every shape), in eval mode."""
    model = build(description, source)
    load_converted(model, state, source)
    return model.eval()


__all__ = ["CLIP", "DEFAULT_TEMPLATES", "MODELS", "CLIPConfig", "Classification", "Classifier", "ClassifierConfig",
           "Model", "SpeechToText", "SpeechToTextConfig", "Transcription", "build", "from_state", "load_converted"]
