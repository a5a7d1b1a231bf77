"""Reading images users bring: any size, RGB / gray / RGBA / CMYK / 16-bit, with clear errors."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from multimodal.config import as_config
from multimodal.data import find_files
from multimodal.data.image_augment import ImageAugment
from multimodal.errors import InputError

T = TypeVar("T")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# what PIL raises for a file it cannot decode; check_image and load_image word them all as InputError
IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def max_pixels() -> int | None:
    """The most pixels (width × height) an image may have: PIL's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 unless
    set otherwise; None: no limit), so that a larger image is refused before its pixels are allocated."""
    return Image.MAX_IMAGE_PIXELS


def _claimed_size(path: Path) -> tuple[int, int] | None:
    """The (width, height) an image file's header claims, read as ``Image.open`` reads it but without PIL's
    decompression-bomb check, which refuses an image far over the limit before telling its size."""
    Image.init()
    try:
        with path.open("rb") as f:
            prefix = f.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                try:
                    accepted = accept is None or accept(prefix)
                    if accepted and not isinstance(accepted, str):  # a str is PIL's reason to refuse
                        f.seek(0)
                        return tuple(factory(f, str(path)).size)
                except Exception:  # not this format
                    continue
    except OSError:
        pass
    return None


def _too_large(size: tuple[int, int] | None, limit: int) -> str:
    shown = f"image of {size[0]}×{size[1]} pixels" if size else "image"
    return f"{shown} is larger than the {limit:,}-pixel limit (PIL.Image.MAX_IMAGE_PIXELS)"


def check_image(path: str | Path, load: bool = False) -> Image.Image:
    """The image file opened by PIL and checked, or InputError naming the file and the reason (missing, empty,
    not an image, truncated or corrupt, more pixels than ``max_pixels()``). Every byte of the pixel data is
    decoded either way, so that a file that would fail in training fails here: ``load`` keeps the pixels in the
    image returned; without it the image returned is closed, and a JPEG is decoded at 1/8 scale, which reads
    all its data (a truncated file still fails) 3-4 times faster."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such image file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes), not an image", path)
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            # PIL warns above the limit and refuses above twice it; the size is checked below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:  # only where there is a limit
        raise InputError(_too_large(_claimed_size(path), limit or 0), path) from None
    except Exception as e:  # whatever PIL raises for a file it cannot read
        raise InputError(f"not a readable image ({_why(e, path)})", path) from None
    with image:
        if limit is not None and image.width * image.height > limit:
            raise InputError(_too_large(image.size, limit), path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if not load and image.format == "JPEG":
                    image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
        except Image.DecompressionBombError:  # a frame or tile larger than the image (GIF, TIFF)
            raise InputError(_too_large(None, limit or 0), path) from None
        except Exception as e:  # truncated, corrupt, an unsupported variant of the format
            raise InputError(f"not a readable image ({_why(e, path)})", path) from None
    return image


def _why(error: Exception, path: Path) -> str:
    """PIL's reason in one short line, the path (which the InputError names) left out."""
    text = (str(error).splitlines() or [""])[0].replace(f"'{path}'", "").replace(str(path), "").strip()
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def load_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Open an image as 8-bit RGB (channels=3) or gray (channels=1), or raise InputError naming it."""
    path = Path(path)
    image = check_image(path, load=True)
    try:
        return to_8bit(image).convert("RGB" if channels == 3 else "L")
    except Exception as e:  # a mode PIL cannot convert
        raise InputError(f"not a readable image ({_why(e, path)})", path) from None


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float images keep their contrast; PIL's own convert('L') would clip them to white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")  # transparent pixels become black, as they show on most viewers
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


class EvalTransform:
    """PIL image -> float (C, H, W) in [0, 1]: shorter side resized to image_size, centre crop.

    A class rather than a closure, so that DataLoader workers started by spawn (macOS, Windows) can pickle it.
    """

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.fit = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])

    def __call__(self, image: Image.Image) -> Tensor:
        return self.pixels(image).float().div_(255)

    def pixels(self, image: Image.Image) -> Tensor:
        """The image resized and cropped, uint8 (C, H, W)."""
        pixels = v2.functional.pil_to_tensor(image)
        if pixels.shape[-2:] != (self.image_size, self.image_size):  # skipping no-op resizes: MNIST loads 156 -> 23 us an image
            pixels = self.fit(pixels)
        return pixels


class AugmentTransform(EvalTransform):
    """EvalTransform with an ImageAugment between the fit and the conversion to float; its draws come from
    ``random``, which Lightning's ``seed_everything`` seeds and PyTorch seeds anew in each loader worker."""

    def __init__(self, image_size: int, augment: ImageAugment):
        super().__init__(image_size)
        self.augment = augment

    def __call__(self, image: Image.Image, caption: str | None = None) -> Tensor | tuple[Tensor, str]:
        pixels, augmented = self.augment(self.pixels(image), caption, random.Random(random.getrandbits(64)))
        pixels = pixels.float().div_(255)
        return pixels if caption is None else (pixels, augmented)


def train_transform(image_size: int, augment: str | ImageAugment | dict | None,
                    channels: int = 3) -> Callable[[Image.Image], Tensor]:
    """EvalTransform after an augmentation: None; an ImageAugment (or its fields as a dict; flips swap a
    caption's words of place, nothing changes hue); "affine" (small shifts, turns and zooms, for digits
    and other images whose colours or mirror images change their meaning); or a timm RandAugment
    string such as "rand-m9-mstd0.5"."""
    if isinstance(augment, (ImageAugment, dict)):
        augment = as_config(ImageAugment, augment)
        return AugmentTransform(image_size, augment) if augment.active else EvalTransform(image_size)
    if not augment:
        return EvalTransform(image_size)
    if augment == "affine":
        augmentation = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    else:
        from timm.data.auto_augment import rand_augment_transform
        augmentation = rand_augment_transform(augment, {"translate_const": int(image_size * 0.45),
                                                        "img_mean": (0,) * channels})
    return v2.Compose([augmentation, EvalTransform(image_size)])


class ImageDataset(Dataset):
    """Images held in memory (PIL) or as paths, with integer labels. With ``skip_bad`` (training), an image that
    fails to load although it passed the check before training (changed or removed since) is named in a warning
    and replaced by the next readable one, so that training goes on; without it, InputError names it."""

    def __init__(self, images: Sequence[Image.Image | Path], labels: Sequence[int], transform: Callable,
                 channels: int = 3, skip_bad: bool = False):
        self.images, self.labels, self.transform, self.channels = images, labels, transform, channels
        self.skip_bad, self.bad = skip_bad, set()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        i, image = first_loadable(self, i, self.load)
        return self.transform(image), self.labels[i]

    def load(self, i: int) -> Image.Image:
        image = self.images[i]
        return load_image(image, self.channels) if isinstance(image, Path) else image


def first_loadable(dataset, i: int, load: Callable[[int], T]) -> tuple[int, T]:
    """(i, ``load(i)``); with ``dataset.skip_bad``, the first index from ``i`` on (wrapping round) whose item
    loads: one that fails is named in a warning and passed over from then on (``dataset.bad``)."""
    if not dataset.skip_bad:
        return i, load(i)
    for j in (k % len(dataset) for k in range(i, i + len(dataset))):
        if j in dataset.bad:
            continue
        try:
            return j, load(j)
        except InputError as e:
            dataset.bad.add(j)
            warnings.warn(f"skipped an image that no longer loads ({len(dataset.bad)} so far): {e}", stacklevel=2)
    raise InputError("none of the training images loads any more")


def find_images(root: str | Path) -> list[Path]:
    """All image files under root, sorted; raises InputError when root is missing."""
    return find_files(root, IMAGE_SUFFIXES)


def subfolders(folder: Path) -> list[Path]:
    """A folder's sub-folders, sorted, hidden ones (".name") left out; [] for a file."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")) if folder.is_dir() else []


def collect_images(inputs: Sequence[str | Path], classes: Sequence[str],
                   folder_class: Callable[[str], str] = lambda name: name,
                   ) -> tuple[list[Path], list[int | None], list[str]]:
    """Image files and folders -> (image paths, labels, the input each came from). A folder whose sub-folders
    all name classes (``folder_class`` reads a folder name as a class) is labelled: its images are labelled
    by their sub-folder's class; any other folder or file is not (labels None). A file named in ``inputs`` is
    kept whatever its suffix, to be tried. InputError for a missing input or when no image is found."""
    items = [Path(p) for p in inputs]
    for item in items:
        if not item.exists():
            raise InputError("no such file or folder", item)
    paths, labels, sources = [], [], []
    for item in items:
        dirs = subfolders(item)
        if dirs and all(folder_class(d.name) in classes for d in dirs):
            for d in dirs:
                found = find_images(d)
                if not found:
                    warnings.warn(f"class folder {d} has no images")
                paths += found
                labels += [classes.index(folder_class(d.name))] * len(found)
                sources += [str(item)] * len(found)
        else:
            found = find_images(item)
            if item.is_file() and item.suffix.lower() not in IMAGE_SUFFIXES:
                found = [item]  # the user named it: try it, and say clearly if it is not an image
            paths += found
            labels += [None] * len(found)
            sources += [str(item)] * len(found)
    if not paths:
        raise InputError("no image files found", ", ".join(map(str, inputs)))
    return paths, labels, sources


def readable(paths: Sequence[Path], what: str) -> list[Path]:
    """Keep the images PIL can decode in full (``check_image``); warn once with how many were skipped and which."""
    good, bad = [], []
    for path in paths:
        try:
            check_image(path)
            good.append(path)
        except InputError as e:
            bad.append(f"{path} ({e.reason})")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {what}: {', '.join(bad[:5])}"
                      f"{' …' if len(bad) > 5 else ''}", stacklevel=2)
    return good


def scan_class_folders(root: str | Path, require_every_class: bool = True) -> tuple[list[str], list[Path], list[int]]:
    """An ImageFolder layout (root/CLASS/*.png): class names, readable image paths, labels.

    Unreadable images are skipped with a warning. A class folder without images is an error when
    ``require_every_class`` (training: a class without examples cannot be learnt), else a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such folder", root)
    class_dirs = subfolders(root)
    if not class_dirs:
        raise InputError("no class sub-folders (expected ROOT/CLASS_NAME/image files)", root)
    classes, paths, labels, empty = [], [], [], []
    for d in class_dirs:
        found = readable(find_images(d), str(d))
        if not found:
            empty.append(d)
            continue
        paths += found
        labels += [len(classes)] * len(found)
        classes.append(d.name)
    if empty and require_every_class:
        raise InputError(f"class folder(s) without readable images: {', '.join(str(d) for d in empty)}", root)
    if empty:
        warnings.warn(f"ignored {len(empty)} class folder(s) without images: {', '.join(d.name for d in empty)}",
                      stacklevel=2)
    if not paths:
        raise InputError("no readable images in any class folder", root)
    return classes, paths, labels
