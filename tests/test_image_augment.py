import random

import numpy as np
import pytest
import torch

from multimodal.data.image_augment import (
    ImageAugment,
    add_noise,
    blur,
    brightness_contrast,
    flip,
    jpeg,
    zoom_turn,
)
from multimodal.data.images import AugmentTransform, EvalTransform, train_transform
from multimodal.data.shapes import COLORS, Scene, ShapeObject, render


def _pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _centre(pixels: torch.Tensor, color: str) -> np.ndarray:
    near = (pixels.permute(1, 2, 0).int() - torch.tensor(COLORS[color])).abs().amax(-1) <= 40
    return torch.nonzero(near).float().mean(0).numpy()  # (y, x)


@pytest.mark.parametrize("relation, axis, swapped", [("left of", "horizontal", "right of"),
                                                     ("above", "vertical", "below")])
def test_a_flip_swaps_the_relation_in_the_caption_and_it_stays_true(relation, axis, swapped):
    scene = Scene((ShapeObject("red", "square", "small"), ShapeObject("blue", "circle", "small")), relation)
    pixels = _pixels(render(scene, random.Random(0), 64, "gradient"))
    flipped, caption = flip(pixels, f"a red square {relation} a blue circle", axis)
    assert caption == f"a red square {swapped} a blue circle"
    red, blue = _centre(flipped, "red"), _centre(flipped, "blue")
    dy, dx = blue - red
    assert {"right of": dx < 0, "below": dy < 0}[swapped]
    assert torch.equal(flipped, pixels.flip(-1 if axis == "horizontal" else -2))
    assert flip(pixels, "a large red star", axis)[1] == "a large red star"  # no words of place: unchanged
    assert flip(pixels, "the rightmost star, upper left", axis)[1] == (
        "the rightmost star, upper right" if axis == "horizontal" else "the rightmost star, lower left")


@pytest.mark.parametrize("degrees, shift", [(0.0, (1.0, -1.0)), (15.0, (1.0, 1.0)), (-30.0, (-1.0, 1.0)),
                                            (45.0, (0.0, 0.0))])
def test_zoom_and_turn_keep_every_corner_of_the_image_in_view(degrees, shift):
    pixels = torch.zeros(3, 64, 64, dtype=torch.uint8)
    corners = {(0, 0): (255, 0, 0), (0, -4): (0, 255, 0), (-4, 0): (0, 0, 255), (-4, -4): (255, 255, 0)}
    for (y, x), color in corners.items():
        pixels[:, y % 64:y % 64 + 4, x % 64:x % 64 + 4] = torch.tensor(color)[:, None, None]
    out = zoom_turn(pixels, scale=0.8, degrees=degrees, shift=shift)
    assert out.shape == pixels.shape
    for color in corners.values():
        distance = (out.permute(1, 2, 0).int() - torch.tensor(color)).abs().amax(-1)
        assert distance.min() <= 100, f"corner {color} left the frame at {degrees} degrees, shift {shift}"
    assert out[:, 0, 0].tolist() == [0, 0, 0] or degrees == 0.0  # the uncovered border takes the border colour


def test_blur_brightness_noise_and_jpeg_do_what_they_say():
    checks = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 200).to(torch.uint8).expand(3, 64, 64)
    assert blur(checks, 0.5).float().std() < 0.5 * checks.float().std()
    assert blur(checks, 2.0).float().std() < blur(checks, 0.5).float().std()

    red = _pixels(render(Scene((ShapeObject("red", "star", "large"),)), random.Random(0), 64, "noise"))
    darker = brightness_contrast(red, 0.5, 1.0)
    assert (darker.int() - (red.float() * 0.5).round().int()).abs().max() <= 1
    star = (red.int() - torch.tensor(COLORS["red"])[:, None, None]).abs().amax(0) <= 40
    for b, c in [(0.7, 1.3), (1.3, 0.7)]:  # the red star stays red: its strongest channel does not change
        assert (brightness_contrast(red, b, c).argmax(0)[star] == 0).all()

    gray = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    noisy = add_noise(gray, 0.05, torch.Generator().manual_seed(0))
    assert abs((noisy.float() - 128).std().item() - 0.05 * 255) < 0.05 * 255 * 0.05

    scene = _pixels(render(Scene((ShapeObject("green", "cross", "large"),)), random.Random(1), 64, "texture"))
    low, high = jpeg(scene, 10), jpeg(scene, 95)
    assert low.shape == scene.shape and low.dtype == torch.uint8
    err = lambda x: (x.float() - scene.float()).abs().mean()  # noqa: E731
    assert 0 < err(high) < err(low)


def test_augment_is_seeded_checked_and_off_by_default():
    augment = ImageAugment(zoom=1.0, color=1.0, blur=1.0, noise=1.0, jpeg=1.0, hflip=0.5)
    pixels = _pixels(render(Scene((ShapeObject("blue", "diamond", "small"),)), random.Random(0)))
    a = augment(pixels, "a blue diamond left of a red star", random.Random(7))
    b = augment(pixels, "a blue diamond left of a red star", random.Random(7))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and not torch.equal(a[0], pixels)
    assert not ImageAugment().active and isinstance(train_transform(64, ImageAugment()), EvalTransform)
    assert isinstance(train_transform(64, {"blur": 0.5}), AugmentTransform)
    for bad, message in [({"hflip": 2}, "hflip is a probability"), ({"scale": [0.9, 0.5]}, "scale must be"),
                         ({"degrees": 90}, "degrees must be between 0 and 45"), ({"scale": [0.5, 1.2]}, "scale")]:
        with pytest.raises(ValueError, match=message):
            ImageAugment(**bad)


def test_pairs_training_images_are_augmented_with_their_captions_and_evaluation_is_not(tmp_path):
    from multimodal.data.pairs import PairsData, write_shape_pairs

    write_shape_pairs(tmp_path, train_size=8, test_size=4, retrieval_size=1, zero_shot_per_class=0,
                      image_size=32, gray_fraction=0, quiet=True)
    data = PairsData(str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"), image_size=32, batch_size=8,
                     group_batches=False, augment={"hflip": 1.0})
    data.setup("fit")
    images, captions, index = next(iter(data.train_dataloader()))
    plain = EvalTransform(32)
    from PIL import Image
    for image, text, i in zip(images, captions, index.tolist()):
        original = plain(Image.open(data.train_pairs.images[i]).convert("RGB"))
        assert torch.equal(image, original.flip(-1))  # every training image mirrored ...
        mirrored = [flip(original, c, "horizontal")[1] for c in data.train_pairs.captions[i]]
        assert text in mirrored  # ... and its caption with it
    assert any(" right of " in t or " left of " in t for t in captions)
    images, captions, index = next(iter(data.val_dataloader()))
    for image, text, i in zip(images, captions, index.tolist()):
        assert torch.equal(image, plain(Image.open(data.val_pairs.images[i]).convert("RGB")))
        assert text == data.val_pairs.captions[i][0]


def test_classifier_data_takes_the_same_augmentation_for_training_only():
    from multimodal.data.classification import ShapesData

    data = ShapesData(train_size=6, test_size=6, image_size=32, augment={"vflip": 1.0})
    data.setup("fit")
    plain = EvalTransform(32)
    image, label = data.train_set[0]
    assert torch.equal(image, plain(data.train_set.images[0]).flip(-2)) and label == data.train_set.labels[0]
    assert torch.equal(data.val_set[0][0], plain(data.val_set.images[0]))
