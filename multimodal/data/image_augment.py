"""Image augmentation that keeps a caption true: zoom out and turn (every pixel of the image stays in view), blur,
brightness and contrast (never hue: colour words must stay right), pixel noise, JPEG compression, and flips that
swap the caption's left and right (or above and below) with the picture.

Each transform is a small function of a uint8 (C, H, W) tensor on torchvision's v2 functional ops; ``ImageAugment``
draws which ones apply, and how strongly, from one ``random.Random`` per image. timm's RandAugment would change
colours (solarize, posterize, colour), crop objects away, and flip without telling the caption.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# what a flip does to the words of a caption: a horizontal flip swaps left and right, a vertical one above and below
FLIP_WORDS = {
    "horizontal": {"left": "right", "right": "left"},
    "vertical": {"above": "below", "below": "above", "top": "bottom", "bottom": "top",
                 "upper": "lower", "lower": "upper"},
}


def flip(pixels: Tensor, caption: str | None, axis: str) -> tuple[Tensor, str | None]:
    """The image mirrored along ``axis`` and the caption's words of place swapped to match."""
    swap = FLIP_WORDS[axis]
    pixels = F.horizontal_flip(pixels) if axis == "horizontal" else F.vertical_flip(pixels)
    if caption is not None:
        caption = re.sub(rf"\b({'|'.join(swap)})\b", lambda m: swap[m.group(1)], caption)
    return pixels, caption


def border_color(pixels: Tensor) -> list[float]:
    """The median colour of the image's outermost pixels, to fill what a zoom-out uncovers."""
    ring = torch.cat([pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]], dim=1)
    return ring.float().median(dim=1).values.tolist()


def zoom_turn(pixels: Tensor, scale: float, degrees: float, shift: tuple[float, float]) -> Tensor:
    """The image shrunk to ``scale`` of its side, turned by ``degrees`` and moved by ``shift`` (each in [-1, 1],
    a share of the room left), never so far that a corner leaves the frame: the turn shrinks it further, by
    1 / (|cos| + |sin|), the least that keeps a turned square inside. The uncovered border takes the image's own
    border colour."""
    turn = math.radians(degrees)
    fit = scale / (abs(math.cos(turn)) + abs(math.sin(turn)))
    height, width = pixels.shape[-2:]
    room = [(1 - scale) * width / 2, (1 - scale) * height / 2]  # the turned image spans scale × the frame
    translate = [math.floor(room[0] * shift[0]), math.floor(room[1] * shift[1])]
    return F.affine(pixels, angle=degrees, translate=translate, scale=fit, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.BILINEAR, fill=border_color(pixels))


def blur(pixels: Tensor, sigma: float) -> Tensor:
    kernel = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(pixels, [kernel, kernel], [sigma, sigma])


def brightness_contrast(pixels: Tensor, brightness: float, contrast: float) -> Tensor:
    """Every channel scaled by ``brightness``, then pulled to (< 1) or pushed from (> 1) the mean gray by
    ``contrast``; hue and saturation are untouched."""
    return F.adjust_contrast(F.adjust_brightness(pixels, brightness), contrast)


def add_noise(pixels: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """Gaussian pixel noise of ``std`` (a share of the 0-255 range), rounded and clipped back to uint8."""
    noise = torch.randn(pixels.shape, generator=generator) * (std * 255)
    return (pixels.float() + noise).round().clamp(0, 255).to(torch.uint8)


def jpeg(pixels: Tensor, quality: int) -> Tensor:
    """The image after a JPEG round trip at ``quality`` (1-100)."""
    buffer = io.BytesIO()
    F.to_pil_image(pixels).save(buffer, format="JPEG", quality=quality)
    return F.pil_to_tensor(Image.open(buffer).convert("RGB" if pixels.shape[0] == 3 else "L"))


def _pair(value, name: str, low: float, high: float) -> tuple[float, float]:
    value = tuple(value)
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"augment {name} must be [low, high] within [{low}, {high}], got {list(value)!r}")
    return value


@dataclass
class ImageAugment:
    """What each training image may go through, with the probability of each; every probability 0 (the default)
    is no augmentation. In a recipe: ``data.init_args.augment: {zoom: 0.5, blur: 0.3, hflip: 0.5}``. Order: flips,
    zoom and turn, brightness and contrast, blur, noise, JPEG (the scene, the camera's optics, its sensor, then
    the file)."""
    zoom: float = 0.0
    scale: tuple[float, float] = (0.75, 1.0)  # side after zooming out, before a turn's own shrink
    degrees: float = 10.0  # the largest turn either way
    color: float = 0.0
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # pixels
    noise: float = 0.0
    noise_std: tuple[float, float] = (0.01, 0.06)  # a share of the 0-255 range
    jpeg: float = 0.0
    jpeg_quality: tuple[float, float] = (30, 90)
    hflip: float = 0.0
    vflip: float = 0.0

    def __post_init__(self):
        for name in ("zoom", "color", "blur", "noise", "jpeg", "hflip", "vflip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"augment {name} is a probability between 0 and 1, got {value!r}")
        if not isinstance(self.degrees, (int, float)) or not 0 <= self.degrees <= 45:
            raise ValueError(f"augment degrees must be between 0 and 45, got {self.degrees!r}")
        self.scale = _pair(self.scale, "scale", 0.1, 1.0)
        self.brightness = _pair(self.brightness, "brightness", 0.0, 3.0)
        self.contrast = _pair(self.contrast, "contrast", 0.0, 3.0)
        self.blur_sigma = _pair(self.blur_sigma, "blur_sigma", 0.01, 10.0)
        self.noise_std = _pair(self.noise_std, "noise_std", 0.0, 1.0)
        self.jpeg_quality = _pair(self.jpeg_quality, "jpeg_quality", 1, 100)

    @property
    def active(self) -> bool:
        return any((self.zoom, self.color, self.blur, self.noise, self.jpeg, self.hflip, self.vflip))

    def __call__(self, pixels: Tensor, caption: str | None, rng: random.Random) -> tuple[Tensor, str | None]:
        """A uint8 (C, H, W) image and its caption (None for a classifier's image), augmented."""
        if rng.random() < self.hflip:
            pixels, caption = flip(pixels, caption, "horizontal")
        if rng.random() < self.vflip:
            pixels, caption = flip(pixels, caption, "vertical")
        if rng.random() < self.zoom:
            pixels = zoom_turn(pixels, rng.uniform(*self.scale), rng.uniform(-self.degrees, self.degrees),
                               (rng.uniform(-1, 1), rng.uniform(-1, 1)))
        if rng.random() < self.color:
            pixels = brightness_contrast(pixels, rng.uniform(*self.brightness), rng.uniform(*self.contrast))
        if rng.random() < self.blur:
            pixels = blur(pixels, rng.uniform(*self.blur_sigma))
        if rng.random() < self.noise:
            pixels = add_noise(pixels, rng.uniform(*self.noise_std), torch.Generator().manual_seed(rng.getrandbits(63)))
        if rng.random() < self.jpeg:
            pixels = jpeg(pixels, round(rng.uniform(*self.jpeg_quality)))
        return pixels, caption
