"""LightningModules: each owns its loss, metrics and optimizer."""

from multimodal.tasks.base import Task
from multimodal.tasks.classification import ImageClassifier

__all__ = ["ImageClassifier", "Task"]
