"""multimodal: one family of transformer blocks for images, audio and text.

    import multimodal as mm
    model = mm.load_model("shapes-asr")   # a shipped model (mm.available_models()), a .ckpt, an exported folder,
                                          # or foreign weights; int8=True: CPU int8 inference
    print(model.transcribe("clip.wav").text)
Models are plain ``nn.Module``s (``Classifier``, ``SpeechToText``, ``CLIP``); nothing here imports Lightning.
"""

from multimodal.errors import InputError
from multimodal.loading import load_model, save_model
from multimodal.models import CLIP, Classification, Classifier, SpeechToText, Transcription
from multimodal.nn.quantize import quantize_int8
from multimodal.pretrained import available_models

__version__ = "0.1.0"

__all__ = ["CLIP", "Classification", "Classifier", "InputError", "SpeechToText", "Transcription", "available_models",
           "load_model", "quantize_int8", "save_model"]
