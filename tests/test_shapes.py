import random
import re

import numpy as np
import pytest

from multimodal.data.shapes import (
    COLORS,
    DIGIT_WORDS,
    HELD_OUT_PAIRS,
    MAX_STYLED_BACKGROUND,
    RELATIONS,
    SHAPES,
    SIZES,
    STYLES,
    Scene,
    ShapeObject,
    _background,
    caption,
    digit_sentence,
    render,
    sample_object,
    sample_scene,
    shape_classes,
    single_object_dataset,
)


def _words(words) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


_OBJECT = rf"a (?:({_words(SIZES)}) )?({_words(COLORS)}) ({_words(SHAPES)})"
CAPTION = re.compile(rf"{_OBJECT}(?: ({_words(RELATIONS)}) {_OBJECT})?")


def parse(text: str) -> tuple[list[tuple[str | None, str, str]], str | None]:
    m = CAPTION.fullmatch(text)
    assert m, f"off-grammar caption {text!r}"
    s1, c1, h1, relation, s2, c2, h2 = m.groups()
    return [(s1, c1, h1)] + ([] if relation is None else [(s2, c2, h2)]), relation


def centre(image: np.ndarray, color: str) -> np.ndarray:
    ys, xs = np.nonzero((image == COLORS[color]).all(-1))
    assert len(xs), f"no {color} pixels"
    return np.array([xs.mean(), ys.mean()])


def test_vocabulary_and_held_out_pairs():
    assert len(COLORS) == 8 and len(SHAPES) == 6 and len(SIZES) == 2 and len(RELATIONS) == 4 and len(DIGIT_WORDS) == 10
    colors, shapes = zip(*HELD_OUT_PAIRS)
    assert len(HELD_OUT_PAIRS) == 6 and sorted(shapes) == sorted(SHAPES) and len(set(colors)) == 6
    assert set(colors) <= set(COLORS)
    rgb = np.array(list(COLORS.values()), dtype=float)  # every pair of colours far apart
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 80


def test_train_never_holds_out_pairs_and_captions_parse_back():
    rng, seen = random.Random(0), set()
    for i in range(2000):
        scene = sample_scene(rng, 1 + i % 2, "train")
        objects, relation = parse(caption(scene, rng))
        assert relation == scene.relation
        for (size, color, shape), obj in zip(objects, scene.objects, strict=True):
            assert (color, shape) == (obj.color, obj.shape) and size in (None, obj.size)
            assert (color, shape) not in HELD_OUT_PAIRS
            seen.add((color, shape))
    assert len(seen) == 48 - 6  # and every other pair does occur
    rng = random.Random(0)
    test_pairs = {(o.color, o.shape) for _ in range(2000) for o in sample_scene(rng, 2, "test").objects}
    assert HELD_OUT_PAIRS <= test_pairs


def test_captions_follow_the_grammar():
    rng = random.Random(1)
    one = [caption(sample_scene(rng, 1, "test"), rng) for _ in range(200)]
    assert {len(c.split()) for c in one} == {3, 4}  # size named about half the time
    two = sample_scene(rng, 2, "test")
    assert two.objects[0] != two.objects[1] and {o.size for o in two.objects} == {"small"}
    assert caption(Scene((ShapeObject("red", "star", "small"), ShapeObject("gray", "cross", "small")), "above"),
                   rng) == "a red star above a gray cross"
    sentences = [digit_sentence(rng) for _ in range(200)]
    assert {len(s.split()) for s in sentences} == set(range(3, 9))
    assert all(w in DIGIT_WORDS for s in sentences for w in s.split())


@pytest.mark.parametrize("image_size", [32, 64])
def test_relations_hold_in_the_pixels(image_size):
    rng = random.Random(2)
    checked = 0
    while checked < 200:
        scene = sample_scene(rng, 2, "test")
        a, b = scene.objects
        image = np.asarray(render(scene, rng, image_size))
        assert image.shape == (image_size, image_size, 3)
        if a.color == b.color:
            continue
        (ax, ay), (bx, by) = centre(image, a.color), centre(image, b.color)
        dx, dy = ax - bx, ay - by  # image y grows downwards
        along, across = {"left of": (-dx, dy), "right of": (dx, dy),
                         "above": (-dy, dx), "below": (dy, dx)}[scene.relation]
        assert along > 2 * abs(across) and along > 0.15 * image_size, (scene, dx, dy)
        checked += 1


def test_render_sizes_and_background():
    rng = random.Random(3)
    areas = {size: [] for size in SIZES}
    for _ in range(100):
        obj = sample_object(rng, "test")
        image = np.asarray(render(Scene((obj,)), rng, 64))
        corner = image[0, 0]
        assert corner.max() <= 60 and (image == corner).all(-1).sum() > 0.5 * 64 * 64  # dark, uniform
        mask = (image == COLORS[obj.color]).all(-1)
        assert mask.sum() + (image == corner).all(-1).sum() == 64 * 64  # no other colour: no antialiasing
        ys, xs = np.nonzero(mask)
        areas[obj.size].append(max(np.ptp(xs), np.ptp(ys)) + 1)  # extent of the shape
    assert max(areas["small"]) < min(areas["large"])


def test_determinism():
    def draw(seed):
        rng = random.Random(seed)
        scene = sample_scene(rng, 2, "train")
        return caption(scene, rng), np.asarray(render(scene, rng)), digit_sentence(rng)
    first, again, other = draw(5), draw(5), draw(6)
    assert first[0] == again[0] and np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert not np.array_equal(first[1], other[1])


def test_single_object_dataset():
    assert len(shape_classes("shape")) == 6 and shape_classes("shape") == sorted(SHAPES)
    names = shape_classes("color_shape")
    assert len(names) == 48 and names == sorted(names) and "red circle" in names
    with pytest.raises(ValueError):
        shape_classes("colour")
    images, labels = single_object_dataset(96, 0, "train", "color_shape", image_size=32)
    assert len(images) == 96 and images[0].size == (32, 32) and images[0].mode == "RGB"
    assert np.bincount(labels, minlength=48).tolist() == [2] * 48  # classes in shuffled rounds
    for image, label in zip(images, labels):  # the label really is the drawn colour
        color = names[label].split()[0]
        assert (np.asarray(image) == COLORS[color]).all(-1).any()
    again, labels_again = single_object_dataset(100, 0, "train", "color_shape", image_size=32)
    assert labels_again[:96] == labels and all(np.array_equal(np.asarray(a), np.asarray(b))
                                               for a, b in zip(images, again))
    _, test_labels = single_object_dataset(96, 0, "test", "color_shape", image_size=32)
    assert test_labels != labels
    _, shape_labels = single_object_dataset(60, 1, "train", "shape")
    assert np.bincount(shape_labels).tolist() == [10] * 6


def test_single_object_images_come_in_the_styles_asked():
    from multimodal.data.classification import ShapesData

    def colours(image) -> int:
        return len(np.unique(np.asarray(image).reshape(-1, 3), axis=0))
    flat, _ = single_object_dataset(12, 0, "train", "shape", image_size=32)
    styled, _ = single_object_dataset(12, 0, "train", "shape", image_size=32, styles=("texture", "clutter"))
    assert all(colours(image) == 2 for image in flat)  # one background colour, one object colour, no blending
    assert all(colours(image) > 30 for image in styled)
    with pytest.raises(ValueError, match="unknown drawing style"):
        single_object_dataset(1, 0, "train", "shape", styles=("cubist",))
    with pytest.raises(ValueError, match="unknown drawing style"):
        ShapesData(test_styles=["cubist"])  # refused when the recipe is read, not at setup
    data = ShapesData(train_size=6, test_size=6, image_size=32, styles=["flat"], test_styles=["noise"])
    data.setup("fit")
    assert all(colours(image) == 2 for image in data.train_set.images)
    assert all(colours(image) > 30 for image in data.test_set.images)


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style_draws_each_object_in_its_colour_on_a_darker_background(style):
    rng = random.Random(0)
    for color, shape in [("gray", "cross"), ("red", "star"), ("white", "triangle"), ("blue", "circle")]:
        image = np.asarray(render(Scene((ShapeObject(color, shape, "small"),)), rng, 64, style)).astype(int)
        near = np.abs(image - COLORS[color]).max(-1) <= 40
        assert near.sum() >= 8, f"{style}: too few {color} pixels for a {shape}"
        other = [c for c in COLORS if c != color]  # no background pixel passes for another colour
        assert all((np.abs(image - COLORS[c]).max(-1) <= 40).sum() == 0 for c in other if c != "gray"), style


def test_styled_backgrounds_stay_dark_and_flat_style_is_the_original_drawing():
    rng = random.Random(1)
    for kind in ("gradient", "noise", "texture"):
        for _ in range(5):
            assert np.asarray(_background(kind, rng, 32)).max() <= MAX_STYLED_BACKGROUND
    scene = Scene((ShapeObject("red", "square", "large"),))
    flat = np.asarray(render(scene, random.Random(3)))  # the default style, drawn as before styles
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 2  # no anti-aliasing: background and red only
    assert (np.asarray(render(scene, random.Random(3), style="flat")) == flat).all()
    with pytest.raises(ValueError, match="unknown drawing style 'sketch'"):
        render(scene, rng, style="sketch")


def test_two_objects_keep_their_relation_in_every_style():
    rng = random.Random(2)
    for style in STYLES:
        for relation in RELATIONS:
            scene = Scene((ShapeObject("red", "square", "small"), ShapeObject("blue", "circle", "small")), relation)
            image = np.asarray(render(scene, rng, 64, style)).astype(int)
            red, blue = (np.argwhere(np.abs(image - COLORS[c]).max(-1) <= 40).mean(0) for c in ("red", "blue"))
            dy, dx = blue - red
            expected = {"left of": dx > 0, "right of": dx < 0, "above": dy > 0, "below": dy < 0}[relation]
            assert expected, (style, relation)
