"""What every task shares: plain hyper-parameters, AdamW with warm-up + cosine, self-describing checkpoints,
training that starts from another model's weights."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from pathlib import Path

import lightning as L
import torch
from timm.scheduler import CosineLRScheduler

from multimodal.errors import InputError, a
from multimodal.interop.weights import load_converted  # it imports no task
from multimodal.tokenizers import Tokenizer


class Task(L.LightningModule):
    """A LightningModule whose checkpoint is enough to rebuild it: ``Task.load(path)``.

    Hyper-parameters are stored as plain Python types, so checkpoints load with
    ``torch.load(weights_only=True)``; dataclass configs are saved as dicts.
    """

    data_sized: tuple[str, ...] = ()  # state-dict prefixes sized by the data (a classifier head): see start_from
    tokenizer: Tokenizer | None = None  # tasks that read or write text: set by their use_tokenizer

    def __init__(self, lr: float, weight_decay: float, warmup_fraction: float):
        super().__init__()
        self.lr, self.weight_decay, self.warmup_fraction = lr, weight_decay, warmup_fraction
        self._start: tuple[dict, str | Path] | None = None  # start_from's weights, until configure_model

    def save_plain_hyperparameters(self) -> None:
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        for key, value in self.hparams.items():
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)

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

    def start_from(self, source: "Task", origin: str | Path = "the pretrained model") -> None:
        """Train from the weights of ``source``, a model of this task (``origin`` names it in messages).

        Its input normalisation comes with them, and tasks with a tokenizer adopt its tokenizer, so that
        their vocabulary-sized parts fit, whatever text they are trained on next. ``configure_model`` copies
        the weights strictly once the data-dependent parts are built, before Lightning restores a resumed
        checkpoint (which so wins); a ``data_sized`` part of another shape (a head for another number of
        classes) stays freshly initialised, with a warning, as timm's ``pretrained=True, num_classes=N`` does."""
        if type(source) is not type(self):
            raise InputError(f"this is {a(type(source).__name__)}; {a(type(self).__name__)} is needed here", origin)
        for name in ("mean", "std"):  # buffers, not in the state dict
            if name in self.hparams:
                setattr(self, name, getattr(source, name).clone())
                self.hparams[name] = tuple(source.hparams[name])
        if source.tokenizer is not None:
            self.use_tokenizer(source.tokenizer)
        self._start = (source.state_dict(), origin)

    def use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Tasks with a tokenizer build their vocabulary-sized parts around ``tokenizer`` here."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming with ``--ckpt_path last`` (LightningCLI takes the saved hyper-parameters, tokenizer included,
        only from a file path): configure_model built the tokenizer from today's training text, and it must be
        the checkpoint's, or the weights would be read with another vocabulary."""
        saved = checkpoint.get("hyper_parameters", {}).get("tokenizer")
        if self.tokenizer is not None and saved is not None and saved != self.tokenizer.to_dict():
            raise InputError("this checkpoint's tokenizer is not the one built from the training data now (the text "
                             "changed since it was saved): resume on the data the run started with, or start a new "
                             "run from it with --pretrained", self._trainer.ckpt_path if self._trainer else None)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Task":
        """Rebuild a task from a Lightning checkpoint, refusing files of another task or format."""
        path = Path(path)
        if not path.is_file():
            raise InputError("no such checkpoint file", path)
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # a pickle with arbitrary objects, a truncated file, not a checkpoint at all
            raise InputError(f"not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None
        return cls.from_checkpoint(checkpoint, path)

    @classmethod
    def from_checkpoint(cls, checkpoint, source: str | Path) -> "Task":
        """Rebuild a task from the contents of its Lightning checkpoint, refusing another task's."""
        kind = checkpoint.get("multimodal_task") if isinstance(checkpoint, dict) else None
        if kind is None:
            raise InputError("not a multimodal checkpoint (no 'multimodal_task' entry)", source)
        if kind != cls.__name__ and cls is not Task:
            raise InputError(f"this is {a(kind)} checkpoint; {a(cls.__name__)} checkpoint is needed here", source)
        model = Task.build(kind, checkpoint["hyper_parameters"], source)
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()

    @staticmethod
    def build(kind: str, hparams: dict, source: str | Path) -> "Task":
        """The task class named ``kind``, built from saved hyper-parameters (keys it does not take are left out)."""
        kinds = {c.__name__: c for c in _subclasses(Task)}
        if kind not in kinds:
            raise InputError(f"unknown task {kind!r}; expected one of {sorted(kinds)}", source)
        accepted = inspect.signature(kinds[kind].__init__).parameters
        return kinds[kind](**{k: v for k, v in hparams.items() if k in accepted})


def _subclasses(cls: type) -> list[type]:
    return [s for c in cls.__subclasses__() for s in (c, *_subclasses(c))]
