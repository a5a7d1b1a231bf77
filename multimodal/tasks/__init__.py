"""LightningModules: each owns its loss, metrics and optimizer."""

from multimodal.tasks.base import Task
from multimodal.tasks.classification import ImageClassifier
from multimodal.tasks.contrastive import ImageTextContrastive
from multimodal.tasks.speech import SpeechRecognizer
from multimodal.tasks.speech_clip import SpeechImageContrastive

__all__ = ["ImageClassifier", "ImageTextContrastive", "SpeechImageContrastive", "SpeechRecognizer", "Task"]
