"""Image–caption pairs: CSV or JSONL files users bring, a data module, and the shapes-world pairs writer.

A pairs file has the columns / keys ``image`` (a path relative to the file) and ``caption``; an image may
appear on several lines, one per caption. Every row is checked before training starts: a missing column
or a line that is not JSON refuses the file; an empty caption or a missing / unreadable image is either
an error naming the file and line (``skip_bad=False``) or, for training data, skipped, counted and
reported in one warning.

An optional ``group`` column names images that belong in the same training batch: each is the others' hard
negative. The shapes-world writer groups the four relations of the same two objects, so that the batch, and
with it the loss, asks which of them a caption describes; a random batch seldom does.
"""

from __future__ import annotations

import csv
import io
import json
import random
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from multimodal.config import as_config
from multimodal.data import read_text, split_lines
from multimodal.data.image_augment import ImageAugment
from multimodal.data.images import AugmentTransform, EvalTransform, check_image, first_loadable, load_image, train_transform
from multimodal.data.shapes import (
    ACHROMATIC,
    COLORS,
    DISTINCT_SCENES,
    HELD_OUT_PAIRS,
    RELATIONS,
    SHAPES,
    Scene,
    check_styles,
    pick_style,
    render,
    sample_object,
    sample_scene,
    scene_captions,
    shape_classes,
)
from multimodal.errors import InputError

COLUMNS = ("image", "caption")


@dataclass
class Pairs:
    """Unique images, their captions and groups: ``captions[i]`` are the captions of ``images[i]``."""
    images: list[Path]
    captions: list[list[str]]
    groups: list[str | None]

    def flat(self) -> tuple[list[str], list[int]]:
        """Every caption once, and the index of its image."""
        texts, image_of_text = [], []
        for i, caps in enumerate(self.captions):
            texts += caps
            image_of_text += [i] * len(caps)
        return texts, image_of_text


def _rows(path: Path):
    """(line number, dict) for each data row of a CSV or JSONL file (read with ``read_text``: UTF-8, a
    byte-order mark dropped)."""
    text = read_text(path, "pairs")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            fieldnames = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = fieldnames
            missing = [c for c in COLUMNS if c not in fieldnames]
            if missing:
                raise InputError(f"missing column(s) {', '.join(missing)} in the header "
                                 f"(found: {', '.join(fieldnames) or 'nothing'})", path, 1)
            for row in reader:
                yield reader.line_num, row
        except csv.Error as e:
            raise InputError(f"not a readable CSV line ({e})", path, reader.line_num) from None
        return
    for n, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not a JSON line ({e.msg})", path, n) from None
        if not isinstance(row, dict):
            raise InputError("a line must be a JSON object with 'image' and 'caption'", path, n)
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise InputError(f"missing key(s) {', '.join(missing)}", path, n)
        yield n, row


def _check_image(path: Path) -> str | None:
    """None if PIL can decode the whole image, else the reason."""
    try:
        check_image(path)
    except InputError as e:
        if e.reason.startswith("not a readable image"):
            return f"unreadable image {path} {e.reason.removeprefix('not a readable image').strip()}"
        return f"{path}: {e.reason}"
    return None


def read_pairs(path: str | Path, skip_bad: bool = False) -> Pairs:
    """Read and check a pairs file (.csv, or JSON lines in any other suffix such as .jsonl)."""
    path = Path(path)
    order: dict[Path, list[str]] = {}
    group_of: dict[Path, str | None] = {}
    checked: dict[Path, str | None] = {}
    bad: list[str] = []
    for n, row in _rows(path):
        text = row["caption"]
        text = text.strip() if isinstance(text, str) else None
        image = row["image"]
        problem = None
        if text is None:
            problem = "caption is not a string"
        elif not text:
            problem = "empty caption"
        elif not isinstance(image, str) or not image.strip():
            problem = "empty image path"
        else:
            image_path = (path.parent / image.strip())
            if image_path not in checked:
                checked[image_path] = _check_image(image_path)
            problem = checked[image_path]
        if problem:
            if not skip_bad:
                raise InputError(problem, path, n)
            bad.append(f"line {n}: {problem}")
            continue
        group = None if row.get("group") in (None, "") else str(row["group"])
        if group_of.setdefault(image_path, group) != group:
            raise InputError(f"{image} is in group {group_of[image_path]!r} on an earlier line and {group!r} here",
                             path, n)
        order.setdefault(image_path, []).append(text)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} bad row(s): {'; '.join(bad[:5])}{' …' if len(bad) > 5 else ''}",
                      stacklevel=2)
    if not order:
        raise InputError("no usable image–caption pairs", path)
    return Pairs(list(order), list(order.values()), [group_of[image] for image in order])


class PairsDataset(Dataset):
    """One item per image: (image (3, H, W) in [0, 1], one of its captions, image index).

    Training draws a caption per image each time it is read (so each epoch may pair an image with another
    of its captions, and no image appears twice in a batch); evaluation always takes the first. A transform
    that takes the caption too (``AugmentTransform``) may change it with the image (a flip swaps left and right). With
    ``skip_bad`` (training), an image that no longer loads (changed since the check) is named in a warning and
    replaced by the next one that does, so that training goes on.
    """

    def __init__(self, pairs: Pairs, transform, sample_caption: bool, seed: int = 0, skip_bad: bool = False):
        self.pairs, self.transform, self.sample_caption = pairs, transform, sample_caption
        self.rng = random.Random(seed)
        self.skip_bad, self.bad = skip_bad, set()

    def __len__(self) -> int:
        return len(self.pairs.images)

    def __getitem__(self, i: int) -> tuple[Tensor, str, int]:
        i, image = first_loadable(self, i, lambda j: load_image(self.pairs.images[j]))
        captions = self.pairs.captions[i]
        text = self.rng.choice(captions) if self.sample_caption else captions[0]
        if isinstance(self.transform, AugmentTransform):
            pixels, text = self.transform(image, text)
            return pixels, text, i
        return self.transform(image), text, i


class GroupShuffle(Sampler[int]):
    """A new random order each epoch in which the images of a group come one after another, so that they
    share a batch (a group is split only where it straddles two batches). Images without a group are alone.
    Under DDP Lightning deals this order out to the ranks in turn, so a group still shares the global batch
    that the gathered loss sees."""

    def __init__(self, groups: list[str | None], seed: int = 0):
        members: dict[object, list[int]] = {}
        for i, group in enumerate(groups):
            members.setdefault(i if group is None else group, []).append(i)
        self.members, self.seed, self.epoch, self.size = list(members.values()), seed, 0, len(groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = list(self.members)
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        self.epoch += 1  # Lightning calls set_epoch only for some samplers; keep moving either way
        return (i for group in order for i in group)

    def __len__(self) -> int:
        return self.size


class PairsData(L.LightningDataModule):
    """Image–caption files for contrastive training. Batches: (images (B, 3, H, W), captions list[str],
    image indices (B,)). ``val`` is also the test set when ``test`` is not given. ``group_batches`` keeps each
    ``group`` of the training file in one batch; turn it off for tiny batches, where a few groups crowd out
    the variety that the first epochs learn from. ``augment`` (``ImageAugment``'s fields) changes training images
    only, and their captions with them where a flip asks for it."""

    def __init__(self, train: str, val: str | None = None, test: str | None = None, image_size: int = 64,
                 batch_size: int = 64, num_workers: int = 0, augment: ImageAugment | None = None, seed: int = 0,
                 group_batches: bool = True):
        super().__init__()
        self.train_file, self.val_file, self.test_file = train, val, test
        self.group_batches = group_batches
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.augment, self.seed = None if augment is None else as_config(ImageAugment, augment), seed
        self.train_pairs: Pairs | None = None
        self.val_pairs: Pairs | None = None
        self.test_pairs: Pairs | None = None

    def _read(self) -> None:
        if self.train_pairs is None:
            self.train_pairs = read_pairs(self.train_file, skip_bad=True)
            self.val_pairs = read_pairs(self.val_file, skip_bad=True) if self.val_file else None
            self.test_pairs = read_pairs(self.test_file, skip_bad=True) if self.test_file else self.val_pairs

    def captions(self) -> list[str]:
        """Every training caption (to train the tokenizer on)."""
        self._read()
        return [c for caps in self.train_pairs.captions for c in caps]

    def setup(self, stage: str | None = None) -> None:
        self._read()

    def _loader(self, pairs: Pairs | None, train: bool = False) -> DataLoader | list:
        if pairs is None:
            return []
        transform = train_transform(self.image_size, self.augment) if train else EvalTransform(self.image_size)
        dataset = PairsDataset(pairs, transform, sample_caption=train, seed=self.seed, skip_bad=train)
        grouped = train and self.group_batches and any(g is not None for g in pairs.groups)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train and not grouped,
                          sampler=GroupShuffle(pairs.groups, self.seed) if grouped else None,
                          drop_last=train and len(dataset) > self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_pairs, train=True)

    def val_dataloader(self):
        return self._loader(self.val_pairs)

    def test_dataloader(self):
        return self._loader(self.test_pairs)


# --- the shapes world as pairs files --------------------------------------------------------------

def write_shape_pairs(out: str | Path, train_size: int = 10000, test_size: int = 1000, seed: int = 0,
                      image_size: int = 64, zero_shot_per_class: int = 20, retrieval_size: int = 1000,
                      gray_fraction: float = 0.25, styles: tuple[str, ...] = ("flat",), hold_out_style: str | None = None,
                      colorless_fraction: float = 0.0, quiet: bool = False) -> dict[str, int]:
    """Shapes-world image–caption pairs, written as

    out/images/*.png; out/train.jsonl (one- and two-object scenes, no held-out colour–shape pair in any image or
    caption; two objects are drawn in all four relations, as one group; `gray_fraction` of the one-object scenes in
    a chromatic colour are drawn in grayscale, captioned without the colour, and `colorless_fraction` of the others
    are drawn in colour but captioned without it, so that "a cross" names a cross of any colour);
    out/test.jsonl (test scenes, every pair); out/two_object_test.jsonl (distinct two-object test scenes, for
    retrieval: no two images share a caption, so every text query has exactly one right image);
    out/zero_shot/{train_pairs,held_out}/COLOR_SHAPE/*.png and out/zero_shot/shapes/SHAPE/*.png
    (single-object test images) with out/zero_shot/color_shape_classes.txt (the 48 classes).
    Each image has all the captions that describe it, and is drawn in one of `styles` (shapes.STYLES), chosen at
    random. `hold_out_style` (one of `styles`) is kept out of all of that and drawn alone in
    out/STYLE/two_object_test.jsonl and out/STYLE/zero_shot/: a test of drawings never seen in training.
    Returns the number of images of each part.
    """
    from PIL import ImageOps
    from tqdm import tqdm

    if retrieval_size > DISTINCT_SCENES:
        raise ValueError(f"retrieval_size {retrieval_size} exceeds the {DISTINCT_SCENES} distinct two-object scenes")
    for name, share in (("gray_fraction", gray_fraction), ("colorless_fraction", colorless_fraction)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name} {share} is not a share between 0 and 1")
    check_styles(styles)
    if hold_out_style is not None and hold_out_style not in styles:
        raise ValueError(f"the held-out style {hold_out_style!r} is not one of the styles {', '.join(styles)}")
    seen = tuple(s for s in dict.fromkeys(styles) if s != hold_out_style)
    if not seen:
        raise ValueError(f"holding out {hold_out_style!r} leaves no style to train on")

    out = Path(out)
    counts = {}

    def scenes_file(root: Path, name: str, n: int, split: str, num_objects: list[int], looks: tuple[str, ...],
                    distinct: bool = False, grouped: bool = False, gray_fraction: float = 0.0,
                    colorless_fraction: float = 0.0) -> None:
        """n images; each next scene has the number of objects that fewer images have so far. With `grouped`,
        a two-object scene comes in all four relations, written as one group. At gray_fraction and
        colorless_fraction 0 there is no draw for either, and with one style no style draw, so the files are
        those of before them."""
        rng, described, written, i = random.Random(f"pairs:{name}:{seed}"), set(), dict.fromkeys(num_objects, 0), 0
        pick = random.Random(f"styles:{name}:{seed}")
        (root / "images").mkdir(parents=True, exist_ok=True)
        part = str((root / name).relative_to(out))
        with (root / f"{name}.jsonl").open("w") as f, tqdm(total=n, desc=f"writing {part}", disable=quiet) as bar:
            while i < n:
                objects = min(num_objects, key=written.get)
                scene = sample_scene(rng, objects, split)
                while distinct and scene_captions(scene)[0] in described:
                    scene = sample_scene(rng, objects, split)
                described.update(scene_captions(scene))
                group = [replace(scene, relation=r) for r in RELATIONS] if grouped and objects == 2 else [scene]
                first = i
                for member in group[:n - i]:
                    if split == "train":
                        assert all((o.color, o.shape) not in HELD_OUT_PAIRS for o in member.objects)
                    file = f"images/{name}_{i:05d}.png"
                    image, color = render(member, rng, image_size, pick_style(pick, looks)), True
                    if (gray_fraction > 0 and len(member.objects) == 1 and member.objects[0].color not in ACHROMATIC
                            and rng.random() < gray_fraction):
                        image, color = ImageOps.grayscale(image).convert("RGB"), False
                    elif colorless_fraction > 0 and len(member.objects) == 1 and rng.random() < colorless_fraction:
                        color = False
                    image.save(root / file)
                    for text in scene_captions(member, color):
                        row = {"image": file, "caption": text} | ({"group": first} if len(group) > 1 else {})
                        f.write(json.dumps(row) + "\n")
                    i += 1
                written[objects] += i - first  # the last group may be cut short at n
                bar.update(i - first)
        counts[part] = n

    def zero_shot(root: Path, looks: tuple[str, ...], name: str) -> None:
        rng, pick = random.Random(f"pairs:{name}:{seed}"), random.Random(f"styles:{name}:{seed}")

        def draw(pair: tuple[str, str], file: Path) -> None:
            render(Scene((sample_object(rng, "test", pair),)), rng, image_size, pick_style(pick, looks)).save(file)

        zero = root / "zero_shot"
        prefix = str(zero.relative_to(out))
        for part in ("train_pairs", "held_out", "shapes"):
            counts[f"{prefix}/{part}"] = 0
        for class_name in tqdm(shape_classes("color_shape"), desc=f"writing {prefix}", disable=quiet):
            pair = tuple(class_name.split(" "))
            part = "held_out" if pair in HELD_OUT_PAIRS else "train_pairs"
            folder = zero / part / class_name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(zero_shot_per_class):
                draw(pair, folder / f"{i:05d}.png")
            counts[f"{prefix}/{part}"] += zero_shot_per_class
        per_shape = max(1, zero_shot_per_class * len(COLORS) // 2)
        for shape in SHAPES:
            folder = zero / "shapes" / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_shape):
                draw((rng.choice(list(COLORS)), shape), folder / f"{i:05d}.png")
            counts[f"{prefix}/shapes"] += per_shape
        (zero / "color_shape_classes.txt").write_text("\n".join(shape_classes("color_shape")) + "\n")

    scenes_file(out, "train", train_size, "train", [1, 2], seen, grouped=True, gray_fraction=gray_fraction,
                colorless_fraction=colorless_fraction)
    scenes_file(out, "test", test_size, "test", [1, 2], seen)
    scenes_file(out, "two_object_test", retrieval_size, "test", [2], seen, distinct=True)
    zero_shot(out, seen, "zero_shot")
    if hold_out_style is not None:
        scenes_file(out / hold_out_style, "two_object_test", retrieval_size, "test", [2], (hold_out_style,),
                    distinct=True)
        zero_shot(out / hold_out_style, (hold_out_style,), f"zero_shot:{hold_out_style}")
    return counts
