"""The shapes world: one or two shapes on a background, captioned by a fixed grammar.

Everything is drawn from a `random.Random` the caller passes in, so a seed fixes every image, caption
and sentence. Some colour-shape pairs (HELD_OUT_PAIRS) never occur in split "train" scenes, so a
contrastive model trained on them can be tested on compositions it has never seen. A scene can be drawn in
several styles (STYLES: backgrounds, fills and outlines, anti-aliasing, stretched shapes), so that one style
can be kept out of training to test whether a model has learnt shapes or one way of drawing them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 235),
    "yellow": (245, 225, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 10),
    "white": (250, 250, 250),
    "gray": (135, 135, 135),
}
# A grayscale copy of a white or gray object looks like the object itself, so it is never captioned without colour.
ACHROMATIC = frozenset({"white", "gray"})
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "test")

# Each shape once and each colour at most once, so every colour and every shape is still seen in
# training: only the combination is new.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "star"), ("green", "cross"), ("blue", "triangle"),
    ("yellow", "diamond"), ("purple", "circle"), ("orange", "square"),
})

# two different objects in one of the relations; "a left of b" is "b right of a"
DISTINCT_SCENES = len(COLORS) * len(SHAPES) * (len(COLORS) * len(SHAPES) - 1) * len(RELATIONS) // 2

SIZE_FRACTION = {"small": 0.22, "large": 0.40}  # side of a shape's box / side of the image
SIZE_JITTER = 0.08  # +-8 % keeps the two sizes apart: at most 0.24 against at least 0.37
MAX_BACKGROUND = 60  # every object colour has a channel of at least 135 (gray), so no background passes for one
MAX_STYLED_BACKGROUND = 90  # patterned backgrounds reach higher, still well below gray's 135


@dataclass(frozen=True)
class DrawingStyle:
    """How a scene is drawn. background: "flat" (one dark colour), "gradient" (between two, at any angle),
    "noise" (a dark colour with pixel noise), "texture" (stripes, checks or blobs of two dark colours) or "clutter"
    (dark lines and rings strewn over a gradient: edges everywhere, none of them an object's);
    fill: "solid", "outline" (the edge only) or "outlined" (solid with a darker rim); antialias: edges drawn at 4×
    and averaged down; stretch: the most a shape's width / height ratio departs from 1 (a square may become a
    rectangle, a circle an ellipse; the longer side keeps the object's size, so "small" and "large" stay true)."""
    background: str
    fill: str
    antialias: bool
    stretch: float = 1.0


STYLES: dict[str, DrawingStyle] = {
    "flat": DrawingStyle("flat", "solid", antialias=False),  # the original drawing, pixel for pixel
    "gradient": DrawingStyle("gradient", "solid", antialias=True, stretch=1.2),
    "noise": DrawingStyle("noise", "outlined", antialias=True, stretch=1.2),
    "outline": DrawingStyle("gradient", "outline", antialias=True, stretch=1.2),
    "texture": DrawingStyle("texture", "solid", antialias=True, stretch=1.2),
    "clutter": DrawingStyle("clutter", "solid", antialias=True, stretch=1.2),
}
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    size: str

    def __post_init__(self) -> None:
        if self.color not in COLORS or self.shape not in SHAPES or self.size not in SIZES:
            raise ValueError(f"not a shapes-world object: {self}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    relation: str | None = None  # two objects only: objects[0] {relation} objects[1]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def sample_object(rng: random.Random, split: str, pair: tuple[str, str] | None = None) -> ShapeObject:
    """A random object; split "train" never gives a held-out (color, shape) pair unless `pair` asks for it."""
    _check_split(split)
    while pair is None:
        pair = rng.choice(list(COLORS)), rng.choice(SHAPES)
        if split == "train" and pair in HELD_OUT_PAIRS:
            pair = None
    return ShapeObject(*pair, size=rng.choice(SIZES))


def sample_scene(rng: random.Random, num_objects: int, split: str) -> Scene:
    """One object, or two different objects in a random relation. Two objects are both small, so they
    always fit side by side, and their captions never mention size."""
    if num_objects == 1:
        return Scene((sample_object(rng, split),))
    if num_objects != 2:
        raise ValueError(f"a scene has 1 or 2 objects, not {num_objects}")
    first = sample_object(rng, split)
    second = first
    while (second.color, second.shape) == (first.color, first.shape):  # "a red star left of a red star" is ambiguous
        second = sample_object(rng, split)
    return Scene((replace(first, size="small"), replace(second, size="small")), rng.choice(RELATIONS))


def scene_captions(scene: Scene, color: bool = True) -> list[str]:
    """Every caption of the grammar that describes the scene: with and without the size for one object,
    both orders ("a A left of a B" = "a B right of a A") for two. `color=False` leaves the colours out, for a
    grayscale image."""
    def name(o: ShapeObject) -> str:
        return f"{o.color} {o.shape}" if color else o.shape
    if len(scene.objects) == 1:
        (o,) = scene.objects
        return [f"a {name(o)}", f"a {o.size} {name(o)}"]
    a, b = scene.objects
    return [f"a {name(a)} {scene.relation} a {name(b)}", f"a {name(b)} {INVERSE[scene.relation]} a {name(a)}"]


def caption(scene: Scene, rng: random.Random) -> str:
    """The scene in words, scene_captions' first; a single object's size is named half the time."""
    captions = scene_captions(scene)
    if len(scene.objects) == 1 and rng.random() < 0.5:
        return captions[1]  # "a {size} {color} {shape}"
    return captions[0]


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon of a shape filling the box of half-side r centred at (cx, cy); y grows downwards."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":  # 5 points; an inner radius of r / 2 keeps the arms visible at small sizes
        radii = [r if k % 2 == 0 else r / 2 for k in range(10)]
        return [(cx + rad * math.sin(k * math.pi / 5), cy - rad * math.cos(k * math.pi / 5))
                for k, rad in enumerate(radii)]
    if shape == "cross":  # plus sign with arms a third of the box wide
        w = r / 3
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape: str, cx: float, cy: float, side: float, sx: float, sy: float, image_size: int,
              style: DrawingStyle, edge: bool) -> Image.Image:
    """The share of each pixel a shape covers ("L", 0-255): its inside, or with ``edge`` its rim only; the box
    ``side`` wide is shrunk by sx across and sy down."""
    k = SUPERSAMPLE if style.antialias else 1
    mask = Image.new("L", (image_size * k, image_size * k), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = cx * k, cy * k, side / 2 * k
    width = max(1, round(image_size / (32 if style.fill == "outline" else 64) * k))  # a rim thinner than a line
    fill, outline = (None, 255) if edge else (255, None)
    if shape == "circle":
        draw.ellipse([cx - r * sx, cy - r * sy, cx + r * sx, cy + r * sy], fill=fill, outline=outline,
                     width=width if edge else 0)
    else:
        points = [(cx + (x - cx) * sx, cy + (y - cy) * sy) for x, y in _outline(shape, cx, cy, r)]
        draw.polygon(points, fill=fill, outline=outline, width=width if edge else 1)
    return mask.resize((image_size, image_size), Image.BOX) if k > 1 else mask


def _paint(image: Image.Image, obj: ShapeObject, cx: float, cy: float, side: float, style: DrawingStyle,
           rng: random.Random) -> None:
    sx = sy = 1.0
    if style.stretch > 1:  # no draw otherwise: the flat style keeps the random stream, and so the pixels, of before
        stretch = rng.uniform(1.0, style.stretch)
        sx, sy = (1.0, 1 / stretch) if rng.random() < 0.5 else (1 / stretch, 1.0)
    color = COLORS[obj.color]
    size = image.width
    if style.fill in ("solid", "outlined"):
        image.paste(color, mask=_coverage(obj.shape, cx, cy, side, sx, sy, size, style, edge=False))
    if style.fill in ("outline", "outlined"):
        rim = color if style.fill == "outline" else tuple(round(c * 0.45) for c in color)
        image.paste(rim, mask=_coverage(obj.shape, cx, cy, side, sx, sy, size, style, edge=True))


def _dark_color(rng: random.Random) -> np.ndarray:
    return np.array([rng.randint(0, MAX_STYLED_BACKGROUND) for _ in range(3)], dtype=np.float64)


def _background(kind: str, rng: random.Random, image_size: int) -> Image.Image:
    """A patterned background, every channel at most MAX_STYLED_BACKGROUND."""
    if kind == "clutter":
        return _clutter(_background("gradient", rng, image_size), rng)
    noise = np.random.default_rng(rng.getrandbits(64))
    y, x = np.mgrid[0:image_size, 0:image_size] / image_size
    angle = rng.uniform(0, math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    if kind == "noise":
        pixels = _dark_color(rng) + noise.normal(0, rng.uniform(4, 14), (image_size, image_size, 3))
        return Image.fromarray(np.clip(pixels, 0, MAX_STYLED_BACKGROUND).round().astype(np.uint8))
    if kind == "gradient":
        mix = (along - along.min()) / (along.max() - along.min())
    elif kind == "texture":
        pattern = rng.choice(("stripes", "checks", "blobs"))
        if pattern == "stripes":
            mix = 0.5 + 0.5 * np.sin(2 * math.pi * along * image_size / rng.uniform(3, 10))
        elif pattern == "checks":
            across = -x * math.sin(angle) + y * math.cos(angle)
            cell = rng.uniform(3, 9) / image_size
            mix = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float64)
        else:
            grid = Image.fromarray((noise.random((rng.randint(3, 9),) * 2) * 255).astype(np.uint8))
            mix = np.asarray(grid.resize((image_size, image_size), Image.BICUBIC), dtype=np.float64) / 255
    else:
        raise ValueError(f"unknown background {kind!r}")
    first, second = _dark_color(rng), _dark_color(rng)
    pixels = first + (second - first) * mix[..., None]
    return Image.fromarray(np.clip(pixels, 0, MAX_STYLED_BACKGROUND).round().astype(np.uint8))


def _clutter(image: Image.Image, rng: random.Random) -> Image.Image:
    """4-12 dark straight strokes and rings, 1-3 pixels wide, drawn anti-aliased over ``image``."""
    k, size = SUPERSAMPLE, image.width
    image = image.resize((size * k, size * k), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(4, 12)):
        color = tuple(int(c) for c in _dark_color(rng))
        width = round(rng.uniform(1, 3) * k)
        x, y = rng.uniform(0, size) * k, rng.uniform(0, size) * k
        if rng.random() < 0.5:
            length, angle = rng.uniform(0.2, 0.8) * size * k, rng.uniform(0, math.pi)
            draw.line([(x, y), (x + length * math.cos(angle), y + length * math.sin(angle))], fill=color, width=width)
        else:
            r = rng.uniform(0.05, 0.25) * size * k
            draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=width)
    return image.resize((size, size), Image.BOX)


def _pair_centres(rng: random.Random, relation: str, side: float, image_size: int) -> list[tuple[float, float]]:
    """Centres for objects[0] {relation} objects[1]: one box in each half of the image along the
    relation's axis (so the boxes never overlap) and nearly aligned across it (so the relation is
    unambiguous: along-axis distance >= side + gap, cross-axis distance <= side / 2)."""
    half, gap, jitter = side / 2, max(1.0, 0.05 * image_size), side / 4
    low = rng.uniform(half, image_size / 2 - half - gap / 2)
    high = rng.uniform(image_size / 2 + half + gap / 2, image_size - half)
    along = (low, high) if relation in ("left of", "above") else (high, low)
    centre = rng.uniform(half + jitter, image_size - half - jitter)
    across = (centre + rng.uniform(-jitter, jitter), centre + rng.uniform(-jitter, jitter))
    if relation in ("left of", "right of"):
        return list(zip(along, across))
    return list(zip(across, along))


def _layout(scene: Scene, rng: random.Random, image_size: int) -> list[tuple[ShapeObject, float, float, float]]:
    """(object, centre x, centre y, side) for each object, at jittered places."""
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        side = SIZE_FRACTION[obj.size] * image_size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
        half = side / 2
        return [(obj, rng.uniform(half, image_size - half), rng.uniform(half, image_size - half), side)]
    if scene.relation not in RELATIONS:
        raise ValueError(f"a two-object scene needs a relation from {RELATIONS}, not {scene.relation!r}")
    side = SIZE_FRACTION["small"] * image_size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    return [(obj, cx, cy, side) for obj, (cx, cy) in zip(scene.objects, _pair_centres(rng, scene.relation, side, image_size))]


def check_styles(styles: tuple[str, ...]) -> None:
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise ValueError(f"unknown drawing style(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(STYLES)}")


def pick_style(rng: random.Random, styles: tuple[str, ...]) -> str:
    """One of ``styles`` at random; with one style nothing is drawn, so a one-style data set keeps the random
    stream, and so the images, of before styles."""
    return rng.choice(styles) if len(styles) > 1 else styles[0]


def render(scene: Scene, rng: random.Random, image_size: int = 64, style: str = "flat") -> Image.Image:
    """An RGB image of the scene in one of STYLES; "flat" is a random dark uniform background with the objects
    filled, without anti-aliasing."""
    if style not in STYLES:
        raise ValueError(f"unknown drawing style {style!r}; choose from {', '.join(STYLES)}")
    look = STYLES[style]
    if look.background == "flat":
        image = Image.new("RGB", (image_size, image_size), tuple(rng.randint(0, MAX_BACKGROUND) for _ in range(3)))
    else:
        image = _background(look.background, rng, image_size)
    for obj, cx, cy, side in _layout(scene, rng, image_size):
        _paint(image, obj, cx, cy, side, look, rng)
    return image


def digit_sentence(rng: random.Random) -> str:
    """3 to 8 digit words, e.g. "seven three nine one"."""
    return " ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(3, 8)))


def shape_classes(target: str) -> list[str]:
    """Class names for single-object classification: target "shape" (6) or "color_shape" (48,
    "red circle", ...). Sorted alphabetically, the order ImageFolder gives class folders, so labels
    agree between in-memory data sets and folders exported from them."""
    if target == "shape":
        return sorted(SHAPES)
    if target == "color_shape":
        return sorted(f"{color} {shape}" for color in COLORS for shape in SHAPES)
    raise ValueError(f"target must be 'shape' or 'color_shape', not {target!r}")


def single_object_dataset(n: int, seed: int, split: str, target: str, image_size: int = 64,
                          styles: tuple[str, ...] = ("flat",)) -> tuple[list[Image.Image], list[int]]:
    """n single-object images and their labels (indices into shape_classes(target)), the same for the
    same (seed, split); a larger n extends a smaller one. Classes come in shuffled rounds, so every
    class has n // num_classes or one more images. Both splits use every colour-shape pair, held-out
    ones included: classifying objects is not about composition, only the contrastive captions are.
    Each image is drawn in one of ``styles`` (STYLES) at random; with one style there is no such draw, so
    flat images are those of before styles."""
    _check_split(split)
    check_styles(styles)
    names = shape_classes(target)
    rng = random.Random(f"single-object:{split}:{seed}")  # train and test differ even for one seed
    pick = random.Random(f"single-object-styles:{split}:{seed}")
    images, labels, order = [], [], []
    for _ in range(n):
        if not order:
            order = rng.sample(range(len(names)), len(names))
        label = order.pop()
        name = names[label]
        pair = (rng.choice(list(COLORS)), name) if target == "shape" else tuple(name.split(" "))
        images.append(render(Scene((sample_object(rng, split, pair),)), rng, image_size, pick_style(pick, styles)))
        labels.append(label)
    return images, labels
