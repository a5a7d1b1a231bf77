"""Write the built-in data sets to disk in the formats users bring (ImageFolder trees)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm import tqdm


def write_image_folder(out: Path, images: list[Image.Image], labels: list[int], class_names: list[str],
                       quiet: bool = False) -> int:
    """out/CLASS/00000.png for every image; class names with spaces become underscores."""
    for i, (image, label) in enumerate(tqdm(list(zip(images, labels)), desc=f"writing {out}", disable=quiet)):
        folder = out / class_names[label].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.png")
    return len(images)


def mnist_folders(out: Path, quiet: bool = False) -> dict[str, int]:
    """MNIST-5k as out/train/DIGIT/*.png (4,000) and out/test/DIGIT/*.png (1,000), the recipe's split."""
    from multimodal.data.classification import MNISTData

    data = MNISTData()
    data.setup()
    return {split: write_image_folder(out / split, ds.images, ds.labels, data.class_names, quiet)
            for split, ds in (("train", data.train_set), ("test", data.test_set))}


def shape_folders(out: Path, target: str, train_size: int, test_size: int, seed: int, image_size: int = 64,
                  quiet: bool = False) -> dict[str, int]:
    """Single-object shapes-world images as out/train/CLASS/*.png and out/test/CLASS/*.png."""
    from multimodal.data.shapes import shape_classes, single_object_dataset

    names = shape_classes(target)
    return {split: write_image_folder(out / split, *single_object_dataset(n, s, split, target, image_size), names, quiet)
            for split, n, s in (("train", train_size, seed), ("test", test_size, seed + 1))}
