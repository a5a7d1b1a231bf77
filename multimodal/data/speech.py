"""Speech data: JSONL manifests of ``{"audio": "clips/a.wav", "text": "..."}`` (paths relative to the
manifest; optional ``"speaker"`` and ``"source"`` strings name who or what made the clip, for results per
group), validated up front, read at any rate / channel count, batched by duration.

A bad line (bad JSON, no "audio" or "text", empty text, a missing or unreadable audio file) is named
with the manifest's path and line number. Training data skip bad lines, count them and name them in one
warning (all bad: refused); validation and test data are refused at the first bad line.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import soundfile as sf
import torchaudio.functional as AF
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from multimodal.config import as_config
from multimodal.data import read_text, split_lines
from multimodal.data.audio import MIN_SECONDS, SAMPLE_RATE, load_audio
from multimodal.data.speech_augment import SpeechAugment
from multimodal.encoders.audio import pad_waveforms
from multimodal.errors import InputError


@dataclass
class Utterance:
    audio: Path  # resolved against the manifest's folder
    text: str
    seconds: float  # at 16 kHz, before any speed perturbation
    manifest: Path
    line: int
    speaker: str | None = None
    source: str | None = None  # the synthesizer, corpus or recording set


def check_audio_entry(name: str, manifest: Path, line: int, check_audio: bool) -> tuple[Path, float]:
    """A manifest's audio path (relative to it) resolved and checked, and its seconds; InputError naming the line.
    ``check_audio`` reads the whole file, as training will read it (corrupt, silent, too short, NaN); else only the
    header is checked (missing, unreadable or empty files)."""
    audio = manifest.parent / name
    try:
        if check_audio:
            return audio, load_audio(audio).shape[0] / SAMPLE_RATE
        if not audio.is_file():
            raise InputError("no such audio file", audio)
        try:
            info = sf.info(audio)
        except Exception as e:
            raise InputError(f"not a readable audio file: {getattr(e, 'error_string', None) or e}", audio) from None
        seconds = info.frames / info.samplerate
        if seconds < MIN_SECONDS:
            raise InputError(f"too short: {seconds:.3f} s, at least {MIN_SECONDS} s needed", audio)
        return audio, seconds
    except InputError as e:
        raise InputError(f"audio {name!r}: {e.reason}", manifest, line) from None


def parse_entry(raw: str, manifest: Path, line: int, required: tuple[str, ...]) -> dict:
    """A manifest line as a JSON object with the ``required`` string fields and, if given, string "speaker" and
    "source"; InputError naming the line otherwise."""
    try:
        entry = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg} at column {e.colno})", manifest, line) from None
    fields = " and ".join(f'"{key}"' for key in required)
    if not isinstance(entry, dict):
        raise InputError(f"expected a JSON object with {fields}, got {type(entry).__name__}", manifest, line)
    for key in required:
        if key not in entry:
            raise InputError(f"no {key!r} field (a line needs {fields})", manifest, line)
        if not isinstance(entry[key], str):
            raise InputError(f"{key!r} must be a string, got {type(entry[key]).__name__}", manifest, line)
    for key in ("speaker", "source"):
        if key in entry and not isinstance(entry[key], str):
            raise InputError(f"{key!r} must be a string, got {type(entry[key]).__name__}", manifest, line)
    return entry


def _check_line(raw: str, manifest: Path, line: int, check_audio: bool) -> Utterance:
    entry = parse_entry(raw, manifest, line, ("audio", "text"))
    text = entry["text"].strip()
    if not text:
        raise InputError("empty text", manifest, line)
    audio, seconds = check_audio_entry(entry["audio"], manifest, line, check_audio)
    return Utterance(audio, text, seconds, manifest, line, entry.get("speaker"), entry.get("source"))


def read_manifest(path: str | Path, skip_bad: bool = False, check_audio: bool = True,
                  parse_line: Callable[[str, Path, int, bool], Utterance] = _check_line,
                  ) -> tuple[list[Utterance], list[InputError]]:
    """Every line of a JSONL manifest checked: (good utterances, errors of the bad lines).

    ``skip_bad=False`` raises the first bad line's InputError; with ``skip_bad=True`` bad lines are
    returned for the caller to report, and a manifest with no good line is refused. Blank lines are
    ignored. ``check_audio`` reads every clip in full (else only the file headers). ``parse_line(raw, path,
    number, check_audio)`` checks one line (other JSONL formats with audio: spoken-caption pairs).
    """
    path = Path(path)
    lines = split_lines(read_text(path, "manifest"))
    good, bad = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            good.append(parse_line(raw, path, number, check_audio))
        except InputError as e:
            if not skip_bad:
                raise
            bad.append(e)
    if not good:
        if bad:
            raise InputError(f"no usable line: all {len(bad)} are bad, e.g. {bad[0]}", path)
        raise InputError("the manifest lists no audio (empty file)", path)
    return good, bad


def report_skipped(path: Path, bad: list[InputError], total: int) -> None:
    if bad:
        shown = "; ".join(str(e) for e in bad[:10]) + (f"; … and {len(bad) - 10} more" if len(bad) > 10 else "")
        warnings.warn(f"{path}: skipped {len(bad)} of {total} lines: {shown}", stacklevel=2)


def speed_perturb(waveform: Tensor, factor: float) -> Tensor:
    """Play ``factor`` times faster (Kaldi / sox ``speed``: tempo and pitch change together), by resampling."""
    if factor == 1.0:
        return waveform
    orig, new = round(factor * 100), 100
    g = math.gcd(orig, new)
    return AF.resample(waveform, orig // g, new // g)


class SpeechDataset(Dataset):
    """Utterances -> (waveform (T,) float32 16 kHz mono, text); training picks a random speed per clip and, with
    ``augment``, puts it through that augmentation. The draws come from ``random``, which Lightning's
    ``seed_everything`` seeds and PyTorch seeds anew in each loader worker: the same seed, the same clips."""

    def __init__(self, utterances: list[Utterance], speeds: tuple[float, ...] = (1.0,),
                 augment: SpeechAugment | None = None):
        self.utterances, self.speeds = utterances, tuple(speeds)
        self.augment = augment if augment is not None and augment.active else None

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        u = self.utterances[index]
        waveform = load_audio(u.audio)
        if len(self.speeds) > 1 or self.speeds[0] != 1.0:
            waveform = speed_perturb(waveform, random.choice(self.speeds))
        if self.augment is not None:
            rng = random.Random(random.getrandbits(64))
            other = lambda: load_audio(self.utterances[rng.randrange(len(self.utterances))].audio)  # noqa: E731
            waveform = self.augment(waveform, rng, other)
        return waveform, u.text

    @property
    def durations(self) -> list[float]:
        return [u.seconds for u in self.utterances]


def collate_speech(items: list[tuple[Tensor, str]]) -> tuple[Tensor, Tensor, list[str]]:
    """-> waveforms (B, T) zero-padded, lengths (B,), texts."""
    return *pad_waveforms([w for w, _ in items]), [t for _, t in items]


class DurationBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar duration, so that little of a batch is padding.

    Each epoch (when ``shuffle``) the clips are shuffled, cut into chunks of ``chunk_batches`` batches,
    sorted by duration inside each chunk and cut into batches of at most ``batch_size`` clips and, with
    ``max_seconds``, at most that many padded seconds (longest clip x clips); batch order is shuffled too.
    Without shuffling, the whole set is sorted by duration.
    """

    def __init__(self, durations: list[float], batch_size: int, max_seconds: float | None = None,
                 shuffle: bool = False, seed: int = 0, chunk_batches: int = 50):
        self.durations, self.batch_size, self.max_seconds = list(durations), batch_size, max_seconds
        self.shuffle, self.seed, self.chunk_batches = shuffle, seed, chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.durations)))
        rng = random.Random(f"{self.seed}:{epoch}")
        if self.shuffle:
            rng.shuffle(order)
            chunk = self.batch_size * self.chunk_batches
            chunks = [order[i:i + chunk] for i in range(0, len(order), chunk)]
        else:
            chunks = [order]
        batches = []
        for members in chunks:
            members.sort(key=lambda i: self.durations[i])
            batch: list[int] = []
            for i in members:  # ascending durations: the newest clip is the batch's longest
                too_long = self.max_seconds is not None and (len(batch) + 1) * self.durations[i] > self.max_seconds
                if batch and (len(batch) == self.batch_size or too_long):
                    batches.append(batch)
                    batch = []
                batch.append(i)
            if batch:
                batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self):
        plan = self._plan(self.epoch)
        if self.shuffle:
            self.epoch += 1  # Lightning calls set_epoch only for some samplers; keep moving either way
        return iter(plan)

    def __len__(self) -> int:
        return len(self._plan(self.epoch))


class SpeechManifestData(L.LightningDataModule):
    """Train / val / test JSONL manifests -> batches ``(waveforms (B, T), lengths (B,), texts)``.

    ``val_manifest`` defaults to ``test_manifest``. ``batch_size`` caps the clips of a batch and
    ``max_seconds`` (optional) its padded seconds. ``speeds`` are the speed-perturbation factors drawn
    for each training clip (``[1.0]`` turns it off), ``augment`` the waveform augmentation of training clips
    (``SpeechAugment``'s fields; validation and test clips are never augmented). ``check_audio`` reads every clip once up front
    (else only the headers are checked, and a clip that fails later stops training).
    """

    def __init__(self, train_manifest: str | None = None, val_manifest: str | None = None,
                 test_manifest: str | None = None, batch_size: int = 32, max_seconds: float | None = None,
                 speeds: list[float] = (0.9, 1.0, 1.1), augment: SpeechAugment | None = None,
                 num_workers: int = 0, check_audio: bool = True, seed: int = 0):
        super().__init__()
        self.manifests = {"train": train_manifest, "val": val_manifest or test_manifest, "test": test_manifest}
        self.batch_size, self.max_seconds, self.speeds = batch_size, max_seconds, tuple(speeds)
        if not self.speeds or any(not isinstance(f, (int, float)) or not f > 0 for f in self.speeds):
            raise ValueError(f"speeds must be positive factors such as [0.9, 1.0, 1.1], got {list(self.speeds)!r}")
        self.augment = None if augment is None else as_config(SpeechAugment, augment)
        self.num_workers, self.check_audio, self.seed = num_workers, check_audio, seed
        self.sets: dict[str, SpeechDataset] = {}

    parse_line = staticmethod(_check_line)
    collate = staticmethod(collate_speech)

    def dataset(self, utterances: list[Utterance], train: bool) -> Dataset:
        return SpeechDataset(utterances, self.speeds if train else (1.0,), self.augment if train else None)

    def _load(self, split: str) -> SpeechDataset:
        if split not in self.sets:
            path = self.manifests[split]
            if path is None:
                raise InputError(f"no {split} manifest given (data.init_args.{split}_manifest)")
            utterances, bad = read_manifest(path, skip_bad=split == "train", check_audio=self.check_audio,
                                            parse_line=self.parse_line)
            report_skipped(Path(path), bad, len(utterances) + len(bad))
            self.sets[split] = self.dataset(utterances, split == "train")
        return self.sets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            if self.manifests[split] is not None or split == "train":
                self._load(split)

    def texts(self) -> list[str]:
        """The training transcripts (for building a tokenizer)."""
        return [u.text for u in self._load("train").utterances]

    def longest(self) -> tuple[Utterance, float]:
        """The longest training clip and its longest duration after speed perturbation, in seconds."""
        longest = max(self._load("train").utterances, key=lambda u: u.seconds)
        return longest, longest.seconds / min(self.speeds)

    def _loader(self, split: str) -> DataLoader:
        dataset = self._load(split)
        train = split == "train"
        sampler = DurationBatchSampler(dataset.durations, self.batch_size, self.max_seconds, shuffle=train,
                                       seed=self.seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
