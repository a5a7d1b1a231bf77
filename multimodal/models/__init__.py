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
from multimodal.models.speech_clip import SpeechCLIP, SpeechCLIPConfig
from multimodal.tokenizers import Tokenizer

MODELS: dict[str, type[Model]] = {cls.__name__: cls for cls in (Classifier, SpeechToText, CLIP, SpeechCLIP)}


# what building a model from a malformed description can raise: the config dataclasses refuse wrong types and
# sizes (TypeError, ValueError), and torch what they do not foresee (RuntimeError for a layer it cannot make)
DESCRIPTION_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, ZeroDivisionError,
                      OverflowError)


def build(description: dict, source: str | Path | None = None) -> Model:
    """The model a ``describe()`` describes, freshly initialised; InputError naming ``source`` if it is not one."""
    if not isinstance(description, dict):
        raise InputError(f"not a model description (a {type(description).__name__}, not a dict)", source)
    name = description.get("model")
    if not isinstance(name, str) or name not in MODELS:
        raise InputError(f"unknown model {name!r}; expected one of {sorted(MODELS)}", source)
    extra = "class_names" if name == "Classifier" else "tokenizer"
    missing = [key for key in ("config", extra) if key not in description]
    if missing:
        raise InputError(f"not a valid {name} description (no {' or '.join(map(repr, missing))})", source)
    try:
        config = description["config"]
        if name == "Classifier":
            return Classifier(config, description["class_names"])
        return MODELS[name](config, Tokenizer.from_dict(description["tokenizer"]))
    except DESCRIPTION_ERRORS as e:
        reason = (str(e).splitlines() or [""])[0][:300]
        raise InputError(f"not a valid {name} description ({type(e).__name__}: {reason})", source) from None


def from_state(description: dict, state: dict[str, Tensor], source: str | Path | None = None) -> Model:
    """``build`` + its weights (strictly: every key, every shape), in eval mode."""
    model = build(description, source)
    load_converted(model, state, source)
    return model.eval()


__all__ = ["CLIP", "DEFAULT_TEMPLATES", "MODELS", "CLIPConfig", "Classification", "Classifier", "ClassifierConfig",
           "Model", "SpeechCLIP", "SpeechCLIPConfig", "SpeechToText", "SpeechToTextConfig", "Transcription", "build",
           "from_state", "load_converted"]
