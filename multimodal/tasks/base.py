"""What every task shares: plain hyper-parameters, AdamW with warm-up + cosine, self-describing checkpoints,
training that starts from another model's weights. A task wraps one model (``self.model``), built once the
data have decided what it needs (class names, a tokenizer)."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import lightning as L
import torch
from timm.scheduler import CosineLRScheduler

from multimodal.config import plain
from multimodal.errors import InputError, a
from multimodal.models import Model, load_converted
from multimodal.tasks.checkpointing import ExactResume, check_checkpoint
from multimodal.tokenizers import Tokenizer


class Task(L.LightningModule):
    """A LightningModule around ``self.model``. Hyper-parameters are stored as plain Python types, so
    checkpoints load with ``torch.load(weights_only=True)``; each checkpoint also holds the model's own
    description (``multimodal_model``), from which ``multimodal.load_model`` rebuilds it without Lightning.
    Every trainer of a task gets ``ExactResume``: SIGTERM saves a resumable checkpoint, and a resumed run goes on
    exactly as an uninterrupted one (``multimodal.tasks.checkpointing``)."""

    model_class: type[Model]
    data_sized: tuple[str, ...] = ()  # state-dict prefixes sized by the data (a classifier head): see start_from

    def __init__(self, lr: float, weight_decay: float, warmup_fraction: float):
        super().__init__()
        self.lr, self.weight_decay, self.warmup_fraction = lr, weight_decay, warmup_fraction
        self.model: Model | None = None  # built by the task once the data have decided what it needs
        self._start: tuple[dict, str | Path] | None = None  # start_from's weights, until configure_model

    @property
    def tokenizer(self) -> Tokenizer | None:
        return getattr(self.model, "tokenizer", None)

    def save_plain_hyperparameters(self) -> None:
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        for key, value in self.hparams.items():
            self.hparams[key] = plain(value)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:  # norms, biases, embeddings and tokens get no weight decay
                (decay if p.ndim >= 2 and "embed" not in name and "token" not in name else no_decay).append(p)
        # Lightning refuses to clip the gradients of a fused optimizer under mixed precision
        fused = self.device.type == "cuda" and not self.trainer.gradient_clip_val
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.lr, fused=fused)
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = CosineLRScheduler(optimizer, t_initial=steps, lr_min=self.lr * 0.01,
                                      warmup_t=int(steps * self.warmup_fraction), warmup_lr_init=self.lr * 0.01,
                                      t_in_epochs=False)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:  # timm schedulers count updates themselves
        scheduler.step_update(num_updates=self.global_step)

    def start_from(self, source: Model, origin: str | Path = "the pretrained model") -> None:
        """Train from the weights of ``source``, a model of this task (``origin`` names it in messages).

        The task adopts what the weights were made with (input normalisation, a tokenizer: ``adopt``), so that
        they fit whatever data it is trained on next. ``configure_model`` copies the weights strictly once the
        data-dependent parts are built, before Lightning restores a resumed checkpoint (which so wins); a
        ``data_sized`` part of another shape (a head for another number of classes) stays freshly initialised,
        with a warning, as timm's ``pretrained=True, num_classes=N`` does."""
        if not isinstance(source, self.model_class):
            raise InputError(f"this is {a(type(source).__name__)}; {a(self.model_class.__name__)} is needed here",
                             origin)
        self.adopt(source)
        self._start = ({f"model.{k}": v for k, v in source.state_dict().items()}, origin)

    def adopt(self, source: Model) -> None:
        """Take from ``source`` what its weights need beside them (normalisation, tokenizer)."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Copy the weights given to ``start_from``, once; tasks call this at the end of their own."""
        if self._start is None:
            return
        (state, origin), self._start = self._start, None
        own = self.state_dict()
        fresh = [k for k in own.keys() & state.keys()
                 if k.startswith(self.data_sized) and own[k].shape != state[k].shape]
        if fresh:
            shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(fresh))
            warnings.warn(f"{origin}: {shapes} (pretrained vs for this data): left freshly initialised", stacklevel=2)
        load_converted(self, state | {k: own[k] for k in fresh}, origin)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["multimodal_task"] = type(self).__name__
        checkpoint["multimodal_model"] = self.model.describe()

    def configure_callbacks(self) -> list[L.Callback]:
        return [ExactResume()]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming with ``--ckpt_path last``: the checkpoint must be this task's (the train command checks that
        before it builds anything; this covers every other way in). Checkpoints of before the models were apart
        from the tasks name their weights without the ``model.`` prefix. LightningCLI takes the saved
        hyper-parameters, tokenizer included, only from a file path: configure_model built the tokenizer from
        today's training text, and it must be the checkpoint's, or the weights would be read with another
        vocabulary."""
        path = self._trainer.ckpt_path if self._trainer else None
        check_checkpoint(checkpoint, path, type(self).__name__, resume=False, trainer="this run")
        state = checkpoint.get("state_dict", {})
        if state and not any(k.startswith("model.") for k in state):
            checkpoint["state_dict"] = {f"model.{k}": v for k, v in state.items()}
        saved = checkpoint.get("hyper_parameters", {}).get("tokenizer")
        if self.tokenizer is not None and saved is not None and saved != self.tokenizer.to_dict():
            raise InputError("this checkpoint's tokenizer is not the one built from the training data now (the text "
                             "changed since it was saved): resume on the data the run started with, or start a new "
                             "run from it with --pretrained", path)
