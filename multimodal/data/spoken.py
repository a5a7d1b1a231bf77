"""Spoken captions paired with images: JSONL lines ``{"audio": "clips/a.wav", "image": "images/a.png", "caption":
"a red star left of a blue circle"}`` (paths relative to the file; ``caption`` optional; ``speaker`` and ``source``
as in speech manifests), checked line by line as speech manifests are (a bad line named by file and line; training
data skip, count and name them, evaluation data refuse them); the data module that trains a speech tower against a
frozen CLIP; and the shapes-world writer: scenes drawn as the CLIP data draw them, their captions spoken by
espeak-ng (or Kokoro) voices, the test voices held out.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from multimodal.data.images import EvalTransform, check_image, load_image
from multimodal.data.shapes import DISTINCT_SCENES, Scene, caption, render, sample_scene, scene_captions
from multimodal.data.speech import (
    SpeechDataset,
    SpeechManifestData,
    Utterance,
    check_audio_entry,
    parse_entry,
    read_manifest,
)
from multimodal.encoders.audio import pad_waveforms
from multimodal.errors import InputError


@dataclass
class SpokenPair(Utterance):
    """A clip and the image it describes; ``text`` is the written caption, "" when the line gives none."""
    image: Path | None = None


def check_spoken_line(raw: str, manifest: Path, line: int, check_audio: bool) -> SpokenPair:
    entry = parse_entry(raw, manifest, line, ("audio", "image"))
    text = entry.get("caption", "")
    if not isinstance(text, str) or ("caption" in entry and not text.strip()):
        raise InputError(f"'caption' must be a non-empty string when given, got {text!r:.40}", manifest, line)
    image = manifest.parent / entry["image"]
    try:
        check_image(image)
    except InputError as e:
        raise InputError(f"image {entry['image']!r}: {e.reason}", manifest, line) from None
    audio, seconds = check_audio_entry(entry["audio"], manifest, line, check_audio)
    return SpokenPair(audio, text.strip(), seconds, manifest, line, entry.get("speaker"), entry.get("source"), image)


def read_spoken_pairs(path: str | Path, check_audio: bool = True) -> list[SpokenPair]:
    """Every line of a spoken-caption pairs file, checked strictly (the first bad line is an InputError)."""
    return read_manifest(path, check_audio=check_audio, parse_line=check_spoken_line)[0]


class SpokenPairsDataset(SpeechDataset):
    """-> (waveform (T,) 16 kHz, image (3, S, S) in [0, 1] with the CLIP's evaluation preprocessing, caption, the
    clip's path: a key for what a trainer keeps of it)."""

    def __init__(self, pairs: list[SpokenPair], image_size: int, speeds: tuple[float, ...] = (1.0,), augment=None):
        super().__init__(pairs, speeds, augment)
        self.transform = EvalTransform(image_size)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, str, str]:
        waveform, text = super().__getitem__(index)
        pair = self.utterances[index]
        return waveform, self.transform(load_image(pair.image)), text, str(pair.audio)


def collate_spoken(items: list[tuple[Tensor, Tensor, str, str]]) -> tuple[Tensor, Tensor, Tensor, list[str], list[str]]:
    """-> waveforms (B, T) zero-padded, lengths (B,), images (B, 3, S, S), captions ("" where none), clip paths."""
    waveforms, images, captions, keys = zip(*items)
    return *pad_waveforms(list(waveforms)), torch.stack(images), list(captions), list(keys)


class SpokenPairsData(SpeechManifestData):
    """Spoken-caption pairs files -> batches ``(waveforms (B, T), lengths (B,), images (B, 3, S, S), captions, clip
    paths)``,
    clips of similar duration together; ``image_size`` is the CLIP's. Speed perturbation and ``augment`` apply to
    training clips as in ``SpeechManifestData``, whose other arguments these are."""

    def __init__(self, train_manifest: str | None = None, val_manifest: str | None = None,
                 test_manifest: str | None = None, image_size: int = 64, batch_size: int = 64,
                 max_seconds: float | None = None, speeds: list[float] = (0.9, 1.0, 1.1), augment=None,
                 num_workers: int = 0, check_audio: bool = True, seed: int = 0):
        super().__init__(train_manifest, val_manifest, test_manifest, batch_size, max_seconds, speeds, augment,
                         num_workers, check_audio, seed)
        self.image_size = image_size

    parse_line = staticmethod(check_spoken_line)
    collate = staticmethod(collate_spoken)

    def dataset(self, utterances: list[Utterance], train: bool) -> SpokenPairsDataset:
        return SpokenPairsDataset(utterances, self.image_size, self.speeds if train else (1.0,),
                                  self.augment if train else None)

    def captions(self) -> list[str]:
        """The distinct written captions of the training pairs, in order of first appearance."""
        return list(dict.fromkeys(u.text for u in self._load("train").utterances if u.text))

    def captioned(self) -> bool:
        """Whether every training pair has a written caption (then the tower also learns the CLIP's text space)."""
        return all(u.text for u in self._load("train").utterances)


def write_spoken_pairs(out: str | Path, train_size: int = 8000, test_size: int = 200, retrieval_size: int = 1000,
                       seed: int = 0, image_size: int = 64, sources: tuple[str, ...] = ("formant", "klatt"),
                       prosody: str = "narrow", workers: int = 1, quiet: bool = False) -> dict[str, int]:
    """Shapes-world images and their captions spoken, written as out/images/*.png, out/clips/*.wav and

    out/train.jsonl (one- and two-object scenes, no held-out colour–shape pair, training voices), out/test.jsonl
    (test scenes, held-out voices: validation) and out/two_object_test.jsonl (distinct two-object scenes, held-out
    voices: no two share a caption, so a spoken query has exactly one right image).
    Scenes come from their own generator, voices from another: the same seed gives the same scenes, images and
    captions whatever ``sources`` speak them, so a set spoken by another source is comparable scene by scene."""
    from tqdm import tqdm

    from multimodal.data.speech_synth import speak, speaker_fields, speech_job, split_voices

    if retrieval_size > DISTINCT_SCENES:
        raise ValueError(f"retrieval_size {retrieval_size} exceeds the {DISTINCT_SCENES} distinct two-object scenes")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, n, split, num_objects, distinct in (("train", train_size, "train", (1, 2), False),
                                                  ("test", test_size, "test", (1, 2), False),
                                                  ("two_object_test", retrieval_size, "test", (2,), True)):
        if n == 0:
            continue
        voices = split_voices(split, tuple(sources))
        scenes, voice_rng = random.Random(f"spoken:{name}:{seed}"), random.Random(f"spoken-voices:{name}:{seed}")
        described: set[str] = set()
        jobs, lines = [], []
        for i in tqdm(range(n), desc=f"drawing {name}", disable=quiet):
            scene: Scene = sample_scene(scenes, num_objects[i % len(num_objects)], split)
            while distinct and scene_captions(scene)[0] in described:
                scene = sample_scene(scenes, 2, split)
            described.update(scene_captions(scene))
            text = caption(scene, scenes)
            image, clip = f"images/{name}_{i:05d}.png", f"clips/{name}_{i:05d}.wav"
            render(scene, scenes, image_size).save(out / image)
            job = speech_job(voice_rng, text, voices, prosody)
            jobs.append((str(out / clip), job))
            lines.append(json.dumps({"audio": clip, "image": image, "caption": text, **speaker_fields(job["variant"])}))
        speak(jobs, f"speaking {name}", quiet, workers)
        (out / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
        counts[name] = n
    return counts
