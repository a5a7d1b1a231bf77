"""Checkpoints a run can trust and resume from.

- ``read_checkpoint`` / ``check_checkpoint``: a checkpoint is read with ``torch.load(weights_only=True)`` passed
  explicitly (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only changes loads that leave it unset) and must be one of our
  tasks' training checkpoints, of the task being trained; anything else is an ``InputError`` naming the file.
- ``SafeCheckpointIO``: Lightning's file I/O with both halves made safe. Saves write a temporary file beside the
  target, fsync it and rename it onto the target, so a failed save (a full disk) leaves the previous checkpoint
  as it was; loads, resuming included, are weights-only.
- ``ExactResume`` (every task adds it, ``Task.configure_callbacks``): on SIGTERM (a scheduler's stop) it saves
  the run where it stands to the ``last.ckpt`` that ``--ckpt_path last`` resumes from; and it keeps in every
  checkpoint what a resumed run needs to go on exactly as if it had not stopped, mid-epoch included: the random
  states (torch, CUDA, numpy, Python) at the save, and for a save within an epoch, the random state the epoch's
  data loader was started from and the one its next batch was drawn with. On resume the training loader starts
  from the first, skips the batches already trained on (their indices only: no image is read), and draws the
  next batch from the second. Exact with ``num_workers=0``; worker processes keep random states of their own,
  so with workers the data order is still the same but augmentations differ.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import secrets
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _SingleProcessDataLoaderIter

from multimodal.errors import InputError, a

SIGTERM_STATUS = 143  # 128 + SIGTERM: what a shell reports for a process that TERM stopped

LAST = re.compile(r"^last(-\d+)?\.ckpt$")  # what Lightning's --ckpt_path last looks for in a checkpoint folder


# -- reading -----------------------------------------------------------------------------------------------------

def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """What the file at ``path`` holds, loaded weights-only: tensors and plain Python values, never a pickle's
    code. A missing or unreadable file, or one that holds other objects, is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint file", path)
    try:
        # weights_only passed explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 then cannot turn it off
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # whatever the file made torch.load raise, it is not a checkpoint
        message = str(e)
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in message:
            found = re.search(r"GLOBAL ([\w.]+)", message)
            reason = ("refused: it holds pickled objects, not only tensors and plain values"
                      + (f" ({found.group(1)})" if found else ""))
        else:
            reason = f"not a readable checkpoint ({type(e).__name__}: {(message.splitlines() or [''])[0][:160]})"
        raise InputError(reason, path) from None


def check_checkpoint(checkpoint: Any, path: str | Path, task: str, *, resume: bool, trainer: str = "the recipe") -> dict:
    """``checkpoint`` (what ``read_checkpoint`` read) if it is a training checkpoint of the task named ``task``;
    with ``resume``, one that can resume training (it has the optimizer's state)."""
    if not isinstance(checkpoint, dict) or "multimodal_task" not in checkpoint:
        raise InputError("not a checkpoint of a multimodal task (it has no 'multimodal_task' entry)", path)
    saved = checkpoint["multimodal_task"]
    if saved != task:
        raise InputError(f"this is {a(str(saved))} checkpoint; {trainer} trains {a(task)}", path)
    if "state_dict" not in checkpoint or "pytorch-lightning_version" not in checkpoint:
        raise InputError("not a Lightning training checkpoint (no state_dict or pytorch-lightning_version): "
                         "start from a model's weights with --pretrained", path)
    if resume and ("optimizer_states" not in checkpoint or "loops" not in checkpoint):
        raise InputError("it holds the model's weights only (save_weights_only), not the state that resumes "
                         "training: start from it with --pretrained", path)
    return checkpoint


def find_last(folders: list[str | Path]) -> Path | None:
    """The checkpoint Lightning's ``ckpt_path="last"`` picks among ``folders`` (ModelCheckpoint dirpaths): the
    newest ``last.ckpt`` / ``last-N.ckpt``; None if there is none."""
    found = [p for folder in folders if Path(folder).is_dir() for p in Path(folder).iterdir()
             if LAST.match(p.name) and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# -- writing -----------------------------------------------------------------------------------------------------

class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic saves and weights-only loads.

    Lightning's own save (``_atomic_save``) writes through an fsspec transaction whose temporary file is in the
    system's temporary folder, then moves it onto the target: across file systems that move is a copy, and a
    full disk truncates the only ``last.ckpt``. Here the temporary file is beside the target: written, flushed,
    fsynced, then renamed onto it (atomic within one file system); a failed save removes it and leaves the
    target untouched. Remote (fsspec URL) paths keep Lightning's way."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(str(path).removeprefix("file://"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_save(checkpoint, target)
        except OSError as e:
            kept = "the previous checkpoint is left as it was" if target.is_file() else "nothing was written"
            raise InputError(f"cannot write the checkpoint ({e.strerror or type(e).__name__}); {kept}",
                             target) from None

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return read_checkpoint(str(path).removeprefix("file://"), map_location)


def _is_local(path: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    return isinstance(get_filesystem(path), LocalFileSystem)


def atomic_save(obj: Any, target: Path) -> None:
    """``torch.save(obj)`` to ``target`` through a temporary file beside it, fsynced and renamed onto it."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not every file system can
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# -- random states -----------------------------------------------------------------------------------------------

def rng_state(cuda: bool = True, holder: object = None) -> dict:
    """The global random states (torch, CUDA with ``cuda``, numpy, Python) and those of the random generators that
    ``holder`` (a dataset) keeps as attributes, as tensors and plain values: checkpoints stay weights-only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if own := _generators(holder):
        state["own"] = {name: g.getstate() if isinstance(g, random.Random) else g.get_state() for name, g in own.items()}
    return state


def set_rng_state(state: dict, holder: object = None) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    own = _generators(holder)
    for name, saved in state.get("own", {}).items():
        if isinstance(own.get(name), random.Random):
            version, internal, gauss = saved
            own[name].setstate((version, tuple(internal), gauss))
        elif isinstance(own.get(name), torch.Generator):
            own[name].set_state(saved)


def _generators(holder: object) -> dict[str, random.Random | torch.Generator]:
    """The random generators among ``holder``'s attributes (a dataset's caption sampler, say)."""
    return {name: value for name, value in getattr(holder, "__dict__", {}).items()
            if isinstance(value, random.Random | torch.Generator)}


# -- stopping and resuming ---------------------------------------------------------------------------------------

def _resumable(cls: type[DataLoader], callback: ExactResume) -> type[DataLoader]:
    """A subclass of the training loader's class whose iterators ``callback`` makes (random state, batches to
    skip), and which Lightning counts resumable (``state_dict`` / ``load_state_dict``; the state itself is the
    callback's). A plain subclass: the loader's class is swapped in place, which a mixin's layout would forbid."""

    def __iter__(self):
        return callback._batches(self, lambda: cls.__iter__(self))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    return type(f"Resumable{cls.__name__}", (cls,), {"__iter__": __iter__, "state_dict": state_dict,
                                                      "load_state_dict": load_state_dict, "_exact_resume": callback})


class ExactResume(L.Callback):
    """Stop cleanly on SIGTERM, and resume exactly (see the module's docstring)."""

    def __init__(self) -> None:
        self.trainer: L.Trainer | None = None
        self.saved: Path | None = None  # where the SIGTERM checkpoint went
        self._pending: dict | None = None  # the loaded state, until the training loader's first iterator
        self._after: dict | None = None  # a resumed epoch's random state, set before its next batch is drawn
        self._epoch_start: dict | None = None  # the random state the current training iterator was started with
        self._before: dict[int, dict] = {}  # batch index -> the random state it was drawn with (the latest few)
        self._drawn = 0  # batches the current training iterator has given
        self._loader: DataLoader | None = None  # the training loader

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The data module's training loaders become resumable ones (``_resumable``). Loaders given to ``fit``
        directly are left as they are: Lightning resumes them mid-epoch from their first batch, and warns."""
        self.trainer = trainer
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None:
            return
        # a wrapper left by an earlier fit that stopped on an exception (teardown did not run) is replaced
        original = getattr(datamodule.train_dataloader, "_exact_resume_original", datamodule.train_dataloader)

        def train_dataloader():
            loader = original()
            if isinstance(loader, DataLoader) and getattr(loader, "_exact_resume", None) is not self:
                cls = type(loader)
                loader.__class__ = _resumable(cls.__bases__[0] if hasattr(cls, "_exact_resume") else cls, self)
            return loader

        train_dataloader._exact_resume_original = original
        datamodule.train_dataloader = train_dataloader

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule.__dict__.get("train_dataloader"), "_exact_resume_original"):
            del datamodule.train_dataloader

    def _batches(self, loader: DataLoader, make_iterator):
        """The training loader's batches. Its iterator is made at the first batch, once Lightning has set the
        sampler's epoch: on resume from the saved random state and, mid-epoch, moved past the batches already
        trained on, to give the rest of the interrupted epoch's."""
        resume, self._pending = self._pending, None
        self._loader, dataset = loader, loader.dataset
        skip = resume.get("skip", 0) if resume else 0
        if resume:
            set_rng_state(resume["epoch_start"] if skip else resume["rng"], dataset)
        if self.trainer is not None:  # Lightning sets it on loader.sampler and batch_sampler.sampler only: a batch
            epoch = self.trainer.fit_loop.epoch_progress.current.processed  # sampler would count from 0 again
            for sampler in {id(s): s for s in (loader.sampler, loader.batch_sampler) if s is not None}.values():
                if callable(getattr(sampler, "set_epoch", None)):
                    sampler.set_epoch(epoch)
        self._epoch_start, self._before, self._after = rng_state(False, dataset), {}, None
        iterator = make_iterator()
        for _ in range(skip):  # only the indices where possible: no sample is read or augmented
            try:
                iterator._next_index() if isinstance(iterator, _SingleProcessDataLoaderIter) else next(iterator)
            except StopIteration:
                break
        if skip and "fetch" in resume:  # the loader had drawn the next batch before the save: draw it alike,
            set_rng_state(resume["fetch"], dataset)
            self._after = resume["rng"]  # then go on from the save's state
        elif skip:
            set_rng_state(resume["rng"], dataset)
        index = self._drawn = skip
        while True:
            if index > skip:
                self._restore_after()
            self._before[index] = rng_state(False, dataset)
            self._before.pop(index - 4, None)
            try:
                batch = next(iterator)
            except StopIteration:
                self._restore_after()
                return
            index = self._drawn = index + 1
            yield batch

    def _restore_after(self) -> None:
        if self._after is not None:
            after, self._after = self._after, None
            set_rng_state(after, self._loader.dataset)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._restore_after()  # a resumed epoch's last batch: no next batch was drawn to set it before

    def state_dict(self) -> dict:
        state = {"rng": rng_state(holder=self._loader.dataset if self._loader is not None else None)}
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or self._epoch_start is None:
            return state
        progress = trainer.fit_loop.epoch_loop.batch_progress
        done = progress.current.completed
        # within an epoch (at an epoch's end the next one starts a new iterator): how to draw the rest again
        if 0 < done <= self._drawn and not progress.is_last_batch and (done == self._drawn or done in self._before):
            state.update(skip=done, epoch_start=self._epoch_start)
            if done < self._drawn:  # the loader had drawn ahead (a prefetch)
                state["fetch"] = self._before[done]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """SIGTERM: Lightning stops at the end of the running batch (SIGTERMException, a SystemExit of status 0);
        save the run there to the last checkpoint, and name it on the exception for the command's message."""
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        if trainer.sanity_checking:  # nothing trained yet: a checkpoint now would only replace a better one
            return
        path = last_checkpoint_path(trainer)
        if path is None:
            return
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = exception.checkpoint = path
        exception.epoch, exception.step = trainer.current_epoch, trainer.global_step


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where ``--ckpt_path last`` will look first: ``last.ckpt`` in the run's (first) ModelCheckpoint's folder."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
        return None
    return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"


def stopped_message(stop: SIGTERMException) -> str:
    """The one line a command prints when SIGTERM stopped its training."""
    path = getattr(stop, "checkpoint", None)
    if path is None:
        return "stopped by SIGTERM; no checkpoint was saved (the run has no ModelCheckpoint or had not started)"
    return (f"stopped by SIGTERM in epoch {stop.epoch} at step {stop.step}; saved {path}: run the same command "
            "with --ckpt_path last to go on")


__all__ = ["ExactResume", "SIGTERM_STATUS", "SafeCheckpointIO", "check_checkpoint", "find_last",
           "read_checkpoint", "rng_state", "set_rng_state", "stopped_message"]
