"""CLIP-style image–text task: losses against hand computation, the 2-process DDP gather, retrieval metrics,
pairs-file checks, and the scripts end to end on a model trained for seconds."""

import json
import math
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_main, run_script

from multimodal.tasks.losses import clip_loss, siglip_loss  # imports only torch: spawned DDP workers import this file

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "gray"]


# --- losses ---------------------------------------------------------------------------------------

def _features(b=3, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(b, d, generator=g), dim=-1), F.normalize(torch.randn(b, d, generator=g), dim=-1))


def test_clip_loss_equals_hand_computation():
    image, text = _features()
    scale = 7.0
    total = 0.0
    for i in range(3):
        dots_it = [scale * float(image[i] @ text[j]) for j in range(3)]
        dots_ti = [scale * float(text[i] @ image[j]) for j in range(3)]
        total += -dots_it[i] + math.log(sum(math.exp(x) for x in dots_it))
        total += -dots_ti[i] + math.log(sum(math.exp(x) for x in dots_ti))
    expected = total / (2 * 3)
    assert clip_loss(image, text, torch.tensor(scale)).item() == pytest.approx(expected, rel=1e-5)


def test_siglip_loss_equals_hand_computation():
    image, text = _features()
    scale, bias = 10.0, -10.0
    total = 0.0
    for i in range(3):
        for j in range(3):
            z = (1.0 if i == j else -1.0) * (scale * float(image[i] @ text[j]) + bias)
            total += math.log(1 + math.exp(-z))  # -log sigmoid(z)
    expected = total / 3
    got = siglip_loss(image, text, torch.tensor(scale), torch.tensor(bias)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def _towers(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(6, 4), torch.nn.Linear(5, 4), torch.nn.Parameter(torch.tensor(2.0))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g)


def _loss_and_grads(kind, xi, xt):
    img, txt, scale = _towers()
    image, text = F.normalize(img(xi), dim=-1), F.normalize(txt(xt), dim=-1)
    loss = clip_loss(image, text, scale.exp()) if kind == "clip" else siglip_loss(image, text, scale.exp(), scale - 5)
    loss.backward()
    return loss.detach(), [p.grad for p in (*img.parameters(), *txt.parameters(), scale)]


def _ddp_worker(rank, world, port, out):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for kind in ("clip", "siglip"):
            xi, xt = _batch()
            b = len(xi) // world
            loss, grads = _loss_and_grads(kind, xi[rank * b:(rank + 1) * b], xt[rank * b:(rank + 1) * b])
            for g in grads:  # what DDP does: average the gradients of the processes
                dist.all_reduce(g)
                g /= world
            dist.all_reduce(loss)
            torch.save({"loss": loss / world, "grads": grads}, Path(out) / f"{kind}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Both losses computed by 2 gloo processes on CPU, each holding half of an 8-pair batch."""
    import torch.multiprocessing as mp
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_ddp_processes_equal_one_process_with_the_whole_batch(kind, ddp_results):
    tmp_path = ddp_results
    loss, grads = _loss_and_grads(kind, *_batch())
    for rank in range(2):
        result = torch.load(tmp_path / f"{kind}_{rank}.pt", weights_only=True)
        assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        for got, want in zip(result["grads"], grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # and the gather matters: one process with half the batch alone gives another loss
    assert _loss_and_grads(kind, *(x[:4] for x in _batch()))[0].item() != pytest.approx(loss.item(), rel=1e-3)


# --- retrieval metrics ----------------------------------------------------------------------------

def test_recall_on_a_hand_made_similarity_matrix():
    from multimodal.metrics import recall_at_k
    # 3 images; texts 0, 1 -> image 0 (two captions), text 2 -> image 1, text 3 -> image 2
    sim = torch.tensor([[0.9, 0.1, 0.2],    # text 0: own image first
                        [0.1, 0.8, 0.3],    # text 1: own image (0) last
                        [0.5, 0.4, 0.6],    # text 2: own image (1) last
                        [0.2, 0.7, 0.3]])   # text 3: own image (2) second
    r = recall_at_k(sim, [0, 0, 1, 2], ks=(1, 2, 3))
    assert r["text_to_image_R@1"] == pytest.approx(1 / 4)
    assert r["text_to_image_R@2"] == pytest.approx(2 / 4)
    assert r["text_to_image_R@3"] == pytest.approx(1.0)
    # image 0: best own caption is text 0 (0.9), ranked first -> hit at 1 although its other caption ranks last
    # image 1: texts by score 0.8 (1), 0.7 (3), 0.4 (2) -> own caption third
    # image 2: texts 0.6 (2), 0.3 (1), 0.3 (3), 0.2 (0) -> own caption (3) ties second: counted as second
    assert r["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert r["image_to_text_R@2"] == pytest.approx(2 / 3)
    assert r["image_to_text_R@3"] == pytest.approx(1.0)


# --- pairs files ----------------------------------------------------------------------------------

def read_pairs(*args, **kwargs):
    from multimodal.data.pairs import read_pairs
    return read_pairs(*args, **kwargs)


@pytest.fixture
def pairs_dir(tmp_path):
    from PIL import Image
    (tmp_path / "img").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "img" / "corrupt.png").write_bytes(b"not a png at all")
    return tmp_path


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_file_with_several_captions_per_image(pairs_dir):
    f = _write(pairs_dir / "p.jsonl", [{"image": "img/a.png", "caption": "a red square"},
                                       {"image": "img/b.png", "caption": "a red thing"},
                                       {"image": "img/a.png", "caption": "a large red square"}])
    pairs = read_pairs(f)
    assert [p.name for p in pairs.images] == ["a.png", "b.png"]
    assert pairs.captions == [["a red square", "a large red square"], ["a red thing"]]
    assert pairs.flat() == (["a red square", "a large red square", "a red thing"], [0, 0, 1])
    csv = pairs_dir / "p.csv"
    csv.write_text('image,caption\nimg/a.png,"a red square, large"\nimg/b.png,a red thing\n')
    assert read_pairs(csv).captions == [["a red square, large"], ["a red thing"]]


@pytest.mark.parametrize("row,reason", [({"image": "img/b.png", "caption": "  "}, "empty caption"),
                                        ({"image": "img/missing.png", "caption": "x"}, "no such image file"),
                                        ({"image": "img/corrupt.png", "caption": "x"}, "unreadable image")])
def test_bad_rows_name_file_and_line_or_are_skipped_and_counted(pairs_dir, row, reason):
    from multimodal.errors import InputError
    f = _write(pairs_dir / "p.jsonl", [{"image": "img/a.png", "caption": "a red square"}, row])
    with pytest.raises(InputError, match=rf"p\.jsonl:2: .*{reason}"):
        read_pairs(f)
    with pytest.warns(UserWarning, match=r"skipped 1 bad row"):
        assert len(read_pairs(f, skip_bad=True).images) == 1


def test_missing_column_is_refused(pairs_dir):
    from multimodal.errors import InputError
    csv = pairs_dir / "p.csv"
    csv.write_text("image,text\nimg/a.png,a red square\n")
    with pytest.raises(InputError, match=r"p\.csv:1: missing column\(s\) caption"):
        read_pairs(csv, skip_bad=True)
    bad_json = pairs_dir / "p.jsonl"
    bad_json.write_text('{"image": "img/a.png", "caption": "x"}\n{"image": "img/a.png"\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: not a JSON line"):
        read_pairs(bad_json)


def test_groups_are_read_and_an_image_in_two_groups_is_refused(pairs_dir):
    from multimodal.errors import InputError
    f = _write(pairs_dir / "p.jsonl", [{"image": "img/a.png", "caption": "a red square", "group": 7},
                                       {"image": "img/b.png", "caption": "a red thing"},
                                       {"image": "img/a.png", "caption": "a large red square", "group": 7}])
    assert read_pairs(f).groups == ["7", None]
    csv = pairs_dir / "p.csv"
    csv.write_text("image,caption,group\nimg/a.png,a red square,x\nimg/b.png,a red thing,\nimg/a.png,a square,y\n")
    with pytest.raises(InputError, match=r"p\.csv:4: img/a\.png is in group 'x' on an earlier line and 'y' here"):
        read_pairs(csv)


def test_group_shuffle_keeps_each_group_together_in_a_new_order_each_epoch():
    from multimodal.data.pairs import GroupShuffle
    groups = ["a", None, "b", "a", None, "b", "b", "c", "a", "c"]
    sampler = GroupShuffle(groups, seed=3)
    orders = [list(sampler) for _ in range(4)]
    for order in orders:
        assert sorted(order) == list(range(len(groups))) and len(sampler) == len(groups)
        labels = [groups[i] or f"alone {i}" for i in order]
        runs = [label for k, label in enumerate(labels) if k == 0 or labels[k - 1] != label]
        assert len(runs) == len(set(runs))  # each group is one run of consecutive indices
    assert len({tuple(o) for o in orders}) > 1


def test_training_batches_follow_the_groups_unless_turned_off(pairs_dir):
    from torch.utils.data import RandomSampler

    from multimodal.data.pairs import GroupShuffle, PairsData
    f = _write(pairs_dir / "p.jsonl", [{"image": "img/a.png", "caption": "a red square", "group": 1},
                                       {"image": "img/b.png", "caption": "a red thing", "group": 1}])
    for group_batches, sampler in ((True, GroupShuffle), (False, RandomSampler)):
        data = PairsData(str(f), batch_size=2, group_batches=group_batches)
        data.setup("fit")
        assert isinstance(data.train_dataloader().sampler, sampler)


# --- end to end -----------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """make_data shapes (tiny) -> train.py fit with the tiny recipe (about half a minute on 2 cores)."""
    work = tmp_path_factory.mktemp("clip")
    data = work / "data/shapes_pairs"
    assert run_main("make_data", "shapes", data, "--train-size", 400, "--test-size", 32, "--retrieval-size", 24,
                    "--zero-shot-per-class", 2, "--image-size", 32)[0] == 0
    run_script("train", "fit", "--config", ROOT / "configs/tiny/clip_tiny.yaml", "--trainer.enable_progress_bar",
               "false", cwd=work)
    return work / "runs/tiny_clip/checkpoints/last.ckpt", data


def test_make_data_holds_pairs_out_of_training_and_groups_the_relations(trained):
    from multimodal.data.shapes import HELD_OUT_PAIRS
    _, data = trained
    captions = [json.loads(line)["caption"] for line in (data / "train.jsonl").read_text().splitlines()]
    assert len(captions) == 800  # two captions per image
    assert not [c for c in captions for color, shape in HELD_OUT_PAIRS if f"{color} {shape}" in c]
    held = sorted(d.name for d in (data / "zero_shot/held_out").iterdir())
    assert held == sorted(f"{c}_{s}" for c, s in HELD_OUT_PAIRS)
    assert len(list((data / "zero_shot/train_pairs").iterdir())) == 42
    from multimodal.data.shapes import INVERSE
    groups = {}
    for row in map(json.loads, (data / "train.jsonl").read_text().splitlines()):
        scene = re.fullmatch(r"a (\w+ \w+) (left of|right of|above|below) a (\w+ \w+)", row["caption"])
        assert (scene is None) == ("group" not in row), row
        if scene:
            a, relation, b = scene.groups()
            groups.setdefault(row["group"], set()).add((a, relation, b) if a < b else (b, INVERSE[relation], a))
    assert len(groups) == 50  # 200 two-object images: 50 pairs of objects, each drawn in all four relations
    for scenes in groups.values():
        assert len({(a, b) for a, _, b in scenes}) == 1 and len({relation for _, relation, _ in scenes}) == 4
    retrieval = [json.loads(line) for line in (data / "two_object_test.jsonl").read_text().splitlines()]
    assert all(" left of " in r["caption"] or " right of " in r["caption"] or " above " in r["caption"]
               or " below " in r["caption"] for r in retrieval)


def test_make_data_draws_a_share_of_one_object_scenes_in_grayscale_captioned_without_colour(trained):
    """A grayscale scene shows its shape equally in every colour channel, which a held-out green cross (no strong
    red or blue) needs. Its captions name no colour; white and gray objects, alike in grayscale, are never drawn so."""
    from PIL import Image

    from multimodal.data.pairs import write_shape_pairs
    from multimodal.data.shapes import ACHROMATIC, COLORS, SHAPES
    _, data = trained
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    colourless = {r["image"] for r in rows if not set(r["caption"].split()) & set(COLORS)}
    for row in rows:
        red, green, blue = (band.tobytes() for band in Image.open(data / row["image"]).split())
        assert (red == green == blue) == (row["image"] in colourless), row
        if row["image"] in colourless:
            assert re.fullmatch(rf"a ((small|large) )?({'|'.join(SHAPES)})", row["caption"]), row
    chromatic = {r["image"] for r in rows
                 if re.fullmatch(rf"a ({'|'.join(set(COLORS) - ACHROMATIC)}) \w+", r["caption"])}
    assert 0.15 < len(colourless) / (len(colourless) + len(chromatic)) < 0.35  # a quarter of the chromatic ones
    write_shape_pairs(data.parent / "in_colour", train_size=40, test_size=0, retrieval_size=1, zero_shot_per_class=0,
                      image_size=8, gray_fraction=0, quiet=True)
    rows = [json.loads(line) for line in (data.parent / "in_colour/train.jsonl").read_text().splitlines()]
    assert len(rows) == 80 and all(set(r["caption"].split()) & set(COLORS) for r in rows)


def test_make_data_captions_a_share_of_one_object_scenes_in_colour_without_their_colour(tmp_path):
    """A shape's name must hold for a cross of any colour, not a gray one only: colorless_fraction leaves the colour out of
    the captions of coloured one-object scenes; two-object captions keep theirs (at 0, the default, every caption
    names its colours: the grayscale test's in_colour draw)."""
    from PIL import Image

    from multimodal.data.pairs import write_shape_pairs
    from multimodal.data.shapes import COLORS, SHAPES

    write_shape_pairs(tmp_path / "every", train_size=60, test_size=0, retrieval_size=1, zero_shot_per_class=0,
                      image_size=8, gray_fraction=0, colorless_fraction=1.0, quiet=True)
    every = [json.loads(line) for line in (tmp_path / "every/train.jsonl").read_text().splitlines()]
    one_object = [r for r in every if not any(f" {w} " in r["caption"] for w in ("of", "above", "below"))]
    assert 50 <= len(one_object) < len(every)
    for row in every:
        named = set(row["caption"].split()) & set(COLORS)
        if row in one_object:
            assert not named and re.fullmatch(rf"a ((small|large) )?({'|'.join(SHAPES)})", row["caption"]), row
            bands = {band.tobytes() for band in Image.open(tmp_path / "every" / row["image"]).split()}
            assert len(bands) > 1, row  # drawn in colour, not in grayscale
        else:
            assert len(named) >= 1, row
    with pytest.raises(ValueError, match="colorless_fraction 2 is not a share"):
        write_shape_pairs(tmp_path / "bad", colorless_fraction=2, quiet=True)


def test_retrieval_scenes_are_distinct(tmp_path):
    """400 of the 4,512 two-object scenes drawn at random would repeat some (a birthday problem); the
    retrieval set must not, or a text query would have two right images of which only one counts."""
    from multimodal.data.pairs import write_shape_pairs

    write_shape_pairs(tmp_path, train_size=0, test_size=0, retrieval_size=400, zero_shot_per_class=0, image_size=8,
                      quiet=True)
    captions = [json.loads(line)["caption"] for line in (tmp_path / "two_object_test.jsonl").read_text().splitlines()]
    assert len(set(captions)) == len(captions) == 800
    with pytest.raises(ValueError, match="4512 distinct"):
        write_shape_pairs(tmp_path, train_size=0, test_size=0, retrieval_size=4513, quiet=True)


@pytest.mark.parametrize("option, message", [(("--retrieval-size", 4513), "retrieval_size 4513 exceeds the 4512"),
                                             (("--gray-fraction", 1.5), "gray_fraction 1.5 is not a share"),
                                             (("--hold-out-style", "texture"),
                                              "the held-out style 'texture' is not one of the styles flat"),
                                             (("--styles", "noise", "--hold-out-style", "noise"),
                                              "holding out 'noise' leaves no style to train on")])
def test_make_data_refuses_sizes_the_shapes_world_cannot_give(tmp_path, option, message):
    status, _, err = run_main("make_data", "shapes", tmp_path / "out", *option)
    assert status == 2 and f"error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_checkpoint_loads_alone_with_weights_only(trained):
    from multimodal import CLIP, load_model
    ckpt, _ = trained
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert raw["hyper_parameters"]["tokenizer"]["type"] == "bpe"
    model = load_model(ckpt, expect=CLIP)
    emb = model.encode_text(["a red star", "a small blue circle left of a gray cross"])
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_resuming_goes_on_with_the_same_captions_and_refuses_changed_ones(trained, tmp_path):
    """fit --ckpt_path last (unlike a file path, which LightningCLI reads the hyper-parameters from) builds the
    tokenizer from the training captions before the checkpoint is restored: the same captions give the same
    tokenizer, other ones a clear refusal instead of weights read with another vocabulary."""
    ckpt, data = trained
    last = tmp_path / "runs/tiny_clip/checkpoints/last.ckpt"  # where the recipe resumes from
    last.parent.mkdir(parents=True)
    fewer = tmp_path / "fewer.jsonl"  # the data changed since: a caption vocabulary without 'purple'
    pairs = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    fewer.write_text("".join(json.dumps({**p, "image": str(data / p["image"])}) + "\n"
                             for p in pairs if "purple" not in p["caption"]))
    resume = ["fit", "--config", ROOT / "configs/tiny/clip_tiny.yaml", "--ckpt_path", "last", "--trainer.max_epochs",
              4, "--data.init_args.val", data / "test.jsonl", "--trainer.limit_train_batches", 2,
              "--trainer.limit_val_batches", 1, "--trainer.enable_progress_bar", "false"]
    shutil.copy(ckpt, last)
    run_script("train", *resume, "--data.init_args.train", data / "train.jsonl", cwd=tmp_path)
    assert torch.load(last, weights_only=True)["epoch"] == 3

    shutil.copy(ckpt, last)
    status, _, err = run_main("train", *resume, "--data.init_args.train", fewer, cwd=tmp_path)
    assert status == 2 and "Traceback" not in err
    assert "last.ckpt: this checkpoint's tokenizer is not the one built from the training data now" in err


def test_train_reports_a_missing_data_file_without_traceback(tmp_path):
    status, _, err = run_main("train", "fit", "--config", ROOT / "configs/tiny/clip_tiny.yaml",
                              "--data.init_args.train", tmp_path / "missing.jsonl")
    assert status == 2 and "Traceback" not in err
    assert f"error: {tmp_path / 'missing.jsonl'}: no such pairs file" in err


def test_text_longer_than_the_context_is_cut_with_a_warning(trained):
    from multimodal import load_model
    model = load_model(trained[0])
    with pytest.warns(UserWarning, match="cut to the context length 32"):
        emb = model.encode_text(["a small red star left of a large blue circle" * 10])
    assert emb.shape == (1, 64)


def test_zero_shot_after_seconds_of_training_beats_chance(trained):
    """Colour is what a few seconds of training learns first: 8 colours, chance 12.5 %."""
    ckpt, data = trained
    out = json.loads(run_script("zero_shot", "--checkpoint", ckpt, "--images", data / "zero_shot/train_pairs",
                                data / "zero_shot/held_out", "--classes", ",".join(COLORS), "--json").stdout)
    preds = out["predictions"]
    assert len(preds) == 96 and "accuracy" not in out  # folders are colour+shape classes: not labelled here
    correct = [p["top"][0]["label"] == Path(p["path"]).parent.name.split("_")[0] for p in preds]
    accuracy = sum(correct) / len(correct)
    print(f"zero-shot colour accuracy after the tiny run: {accuracy:.3f} (chance 0.125)")
    assert accuracy >= 0.25


def test_zero_shot_script_with_class_folders_reports_accuracy_per_folder(trained):
    ckpt, data = trained
    rc, stdout, _ = run_main("zero_shot", "--checkpoint", ckpt, "--images", data / "zero_shot/train_pairs",
                           data / "zero_shot/held_out", "--top-k", 5, "--json")
    out = json.loads(stdout)
    assert len(out["classes"]) == 48 and "red star" in out["classes"]
    assert out["accuracy"]["images"] == 96 and set(out["accuracy"]) == {"top1", "top5", "images"}
    assert {Path(k).name for k in out["accuracy_per_input"]} == {"train_pairs", "held_out"}
    assert len(out["predictions"][0]["top"]) == 5
    rc, text, _ = run_main("zero_shot", "--checkpoint", ckpt, "--images", data / "zero_shot/shapes")
    assert rc == 0 and "all: top1=" in text


def test_duplicate_class_names_are_refused(trained, tmp_path):
    ckpt, data = trained
    rc, _, err = run_main("zero_shot", "--checkpoint", ckpt, "--images", data / "zero_shot/held_out",
                        "--classes", "red star,blue circle,red star")
    assert rc == 2 and "error: --classes: duplicate class name(s): 'red star'" in err
    f = tmp_path / "classes.txt"
    f.write_text("red\nblue\nRed\n")
    rc, _, err = run_main("zero_shot", "--checkpoint", ckpt, "--images", data / "zero_shot/held_out", "--classes-file", f)
    assert rc == 2 and f"error: {f}: duplicate class name(s): 'Red'" in err


def test_retrieve_index_query_eval(trained, tmp_path):
    ckpt, data = trained
    index = tmp_path / "shapes.index"
    out = json.loads(run_main("retrieve", "index", "--checkpoint", ckpt, "--images", data / "zero_shot",
                            "--out", index, "--json")[1])
    assert out["images"] == 96 + 48
    out = json.loads(run_script("retrieve", "query", "--checkpoint", ckpt, "--index", index, "--text",
                                "a small red star", "--top-k", 3, "--sheet", tmp_path / "sheet.png", "--json").stdout)
    scores = [r["score"] for r in out["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and (tmp_path / "sheet.png").is_file()
    image = next((data / "zero_shot/held_out/red_star").iterdir())
    out = json.loads(run_main("retrieve", "query", "--checkpoint", ckpt, "--index", index, "--image", image,
                            "--json")[1])
    assert out["results"][0]["path"] == str(image.resolve()) and out["results"][0]["score"] == pytest.approx(1, abs=1e-3)
    out = json.loads(run_main("retrieve", "eval", "--checkpoint", ckpt, "--pairs", data / "two_object_test.jsonl",
                            "--json")[1])
    assert out["images"] == 24 and out["captions"] == 48
    assert set(out["text_to_image"]) == {"R@1", "R@5", "R@10"} and out["text_to_image"]["R@10"] > 10 / 24 - 0.2


def test_index_from_another_checkpoint_and_bad_pairs_are_refused(trained, tmp_path):
    ckpt, data = trained
    index = tmp_path / "i.index"
    assert run_main("retrieve", "index", "--checkpoint", ckpt, "--images", data / "zero_shot/held_out", "--out", index)[0] == 0
    other = tmp_path / "other.ckpt"
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    raw["state_dict"]["model.logit_scale"] += 0.5
    torch.save(raw, other)
    rc, _, err = run_main("retrieve", "query", "--checkpoint", other, "--index", index, "--text", "a red star")
    assert rc == 2 and f"error: {index}: this index was built with another checkpoint" in err
    bad = tmp_path / "bad.jsonl"
    image = next((data / "zero_shot/held_out/red_star").iterdir())
    _write(bad, [{"image": str(image), "caption": "a red star"}, {"image": str(image), "caption": ""}])
    rc, _, err = run_main("retrieve", "eval", "--checkpoint", ckpt, "--pairs", bad)
    assert rc == 2 and f"error: {bad}:2: empty caption" in err


def test_image_tower_from_a_classifier_checkpoint_locked(tmp_path):
    """LiT (with the SigLIP loss): the ViT of an ImageClassifier checkpoint is copied in and stays fixed while the
    rest trains."""
    import lightning as L

    from multimodal.data.pairs import PairsData, write_shape_pairs
    from multimodal.tasks import ImageClassifier, ImageTextContrastive

    vit = {"image_size": 32, "patch_size": 8, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
    classifier = ImageClassifier(vit, class_names=["a", "b"], mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    ckpt = tmp_path / "classifier.ckpt"
    torch.save({"multimodal_task": "ImageClassifier", "hyper_parameters": dict(classifier.hparams),
                "multimodal_model": classifier.model.describe(), "state_dict": classifier.state_dict()}, ckpt)
    write_shape_pairs(tmp_path / "pairs", train_size=8, test_size=4, retrieval_size=1, zero_shot_per_class=0,
                      image_size=32, quiet=True)
    other_vit = {"image_size": 32, "patch_size": 16, "transformer": {"dim": 16, "depth": 1, "num_heads": 1}}
    text = {"context_length": 32, "transformer": {"dim": 16, "depth": 1, "num_heads": 1}}
    model = ImageTextContrastive(other_vit, text, embed_dim=16, tokenizer_vocab_size=300, loss="siglip",
                                 init_image_tower_from=str(ckpt), lock_image_tower=True, lr=0.01)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    data = PairsData(str(tmp_path / "pairs/train.jsonl"), str(tmp_path / "pairs/test.jsonl"), image_size=32, batch_size=4)
    model.configure_model = (lambda original: lambda: (original(), _remember()))(model.configure_model)
    snapshots = {}

    def _remember():
        snapshots["projection"] = model.model.image_projection.weight.detach().clone()
        snapshots["init"] = model.model.scale().item(), model.model.logit_bias.item()
    trainer.fit(model, data)
    assert snapshots["init"] == (pytest.approx(10.0), -10.0)  # SigLIP's init
    clip = model.model
    assert clip.vit.cfg.transformer.dim == 32 and model.hparams["vit"]["patch_size"] == 8
    for name, value in classifier.model.vit.state_dict().items():
        torch.testing.assert_close(clip.vit.state_dict()[name], value)  # copied, and unchanged by training
    assert not any(p.requires_grad for p in clip.vit.parameters()) and not clip.vit.training
    assert not torch.equal(clip.image_projection.weight, snapshots["projection"])  # the rest trains
    torch.testing.assert_close(clip.mean.flatten(), torch.tensor([0.4, 0.5, 0.6]))
    assert tuple(model.hparams["mean"]) == (0.4, 0.5, 0.6) and tuple(model.hparams["std"]) == (0.2, 0.3, 0.4)


def test_clip_temperature_starts_at_one_over_0_07_and_is_clamped_at_100():
    from multimodal.tasks import ImageTextContrastive
    from multimodal.tokenizers import CharTokenizer
    vit = {"image_size": 16, "patch_size": 8, "transformer": {"dim": 16, "depth": 1, "num_heads": 1}}
    task = ImageTextContrastive(vit, {"transformer": {"dim": 16, "depth": 1, "num_heads": 1}}, embed_dim=8)
    task.use_tokenizer(CharTokenizer(list("abc")))
    model = task.model
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5) and model.logit_bias is None
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert model.scale().item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        ImageTextContrastive(vit, {}, loss="triplet")
