"""The README's promise, script by script: bad arguments and unwritable outputs end in a usage error or one line
`error: FILE: reason` with exit status 2, never a traceback, a wrong answer with status 0, or a half-written
file. Bad input files (images, text files, checkpoints) are in test_bad_files.py, training faults in
test_faults.py."""

import contextlib
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_main
from PIL import Image

import multimodal as mm
from multimodal.tokenizers import BPETokenizer, CharTokenizer


def one_error_line(err: str, *names) -> None:
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert all(str(name) in lines[0] for name in names), err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vit = {"image_size": 32, "patch_size": 8, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
    text = {"context_length": 16, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
    small = {"dim": 32, "depth": 1, "num_heads": 2}
    mm.save_model(mm.Classifier({"vit": vit}, ["red", "blue"]), out / "classifier")
    mm.save_model(mm.CLIP({"vit": vit, "text": text, "embed_dim": 16},
                          BPETokenizer.train(["a red star", "a blue circle"], 300)), out / "clip")
    mm.save_model(mm.SpeechToText({"encoder": {"max_frames": 100, "transformer": small},
                                   "decoder": {"context_length": 8, "transformer": small}}, CharTokenizer(list("ab "))),
                  out / "speech")
    images = out / "images"
    images.mkdir()
    for name, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        Image.new("RGB", (40, 40), color).save(images / f"{name}.png")
    (out / "a_file").write_text("not a folder\n")
    return out


ARGUMENTS = [
    ("classify", ["--checkpoint", "{classifier}", "{images}", "--top-k", "0"], "--top-k: must be at least 1, not 0"),
    ("classify", ["--checkpoint", "{classifier}", "{images}", "--batch-size", "-3"], "--batch-size: must be at least 1"),
    ("classify", ["--checkpoint", "{classifier}", "{images}", "--device", "cuda:7"], "no device 'cuda:7' here"),
    ("zero_shot", ["--checkpoint", "{clip}", "--images", "{images}", "--classes", "red,blue", "--top-k", "-1"],
     "--top-k: must be at least 1"),
    ("zero_shot", ["--checkpoint", "{clip}", "--images", "{images}", "--classes", "red", "--device", "gpu0"],
     "unknown device 'gpu0'"),
    ("transcribe", ["--checkpoint", "{speech}", "x.wav", "--batch-size", "-1"], "--batch-size: must be at least 1"),
    ("transcribe", ["--checkpoint", "{speech}", "x.wav", "--beam-size", "0"], "--beam-size: must be at least 1"),
    ("retrieve", ["query", "--checkpoint", "{clip}", "--index", "i", "--text", "a", "--top-k", "0"], "--top-k"),
    ("make_data", ["shapes", "{tmp}/out", "--train-size", "-3"], "--train-size: must be at least 0, not -3"),
    ("make_data", ["shape-classes", "{tmp}/out", "--image-size", "0"], "--image-size: must be at least 1"),
    ("make_data", ["speech", "{tmp}/out", "--workers", "two"], "--workers: not an integer: 'two'"),
]


def fill(args: list[str], models: Path, tmp: Path) -> list[str]:
    return [a.format(classifier=models / "classifier", clip=models / "clip", speech=models / "speech",
                     images=models / "images", tmp=tmp) for a in args]


@pytest.mark.parametrize(("script", "args", "message"), ARGUMENTS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_are_usage_errors(script, args, message, models, tmp_path):
    rc, _, err = run_main(script, *fill(args, models, tmp_path))
    assert rc == 2 and message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_benchmark_refuses_negative_steps_and_an_unwritable_plot(tmp_path):
    def benchmark(*args):
        return subprocess.run([sys.executable, ROOT / "benchmarks/benchmark.py", *map(str, args)],
                              capture_output=True, text=True)
    steps = benchmark("--task", "vit", "--steps", "-2")
    assert steps.returncode == 2 and "--steps: must be at least 1" in steps.stderr and "Traceback" not in steps.stderr
    plot = benchmark("--task", "attention", "--plot", tmp_path)  # a folder: refused before minutes of measuring
    assert plot.returncode == 2
    one_error_line(plot.stderr, tmp_path, "a folder of that name exists")


OUTPUTS = [  # (script, args, the path named, reason)
    ("export", ["--checkpoint", "{classifier}", "--out", "{a_file}"], "{a_file}", "a file, not a folder"),
    ("export", ["--checkpoint", "{classifier}", "--out", "{a_file}/sub"], "{a_file}/sub", "cannot create the folder"),
    ("retrieve", ["index", "--checkpoint", "{clip}", "--images", "{images}", "--out", "{images}"], "{images}",
     "a folder of that name exists"),
    ("retrieve", ["index", "--checkpoint", "{clip}", "--images", "{images}", "--out", "{a_file}/x.index"], "{a_file}",
     "a file, not a folder"),
    ("retrieve", ["query", "--checkpoint", "{clip}", "--index", "i", "--text", "a", "--sheet", "{images}"], "{images}",
     "a folder of that name exists"),
    ("attention", ["--checkpoint", "{classifier}", "{images}", "--out", "{a_file}"], "{a_file}", "a file, not a folder"),
    ("make_data", ["shape-classes", "{a_file}/data", "--train-size", "2"], "{a_file}/data", "cannot create the folder"),
]


@pytest.mark.parametrize(("script", "args", "named", "reason"), OUTPUTS, ids=lambda v: v if isinstance(v, str) else None)
def test_outputs_that_cannot_be_written_are_one_line(script, args, named, reason, models, tmp_path):
    def filled(text):
        return text.format(classifier=models / "classifier", clip=models / "clip", images=models / "images",
                           a_file=models / "a_file")
    rc, _, err = run_main(script, *map(filled, args))
    assert rc == 2
    one_error_line(err, filled(named), reason)


def test_a_full_disk_leaves_an_export_as_it_was(models, tmp_path, monkeypatch):
    out = tmp_path / "exported"
    assert run_main("export", "--checkpoint", models / "classifier", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", full)
    rc, _, err = run_main("export", "--checkpoint", models / "clip", "--out", out)
    assert rc == 2
    one_error_line(err, out / "model.safetensors", "No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary file, nothing changed


def test_only_unreadable_images_are_an_error_not_an_empty_answer(models, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"junk")
    for script, args in (("classify", ["--checkpoint", models / "classifier", tmp_path]),
                         ("zero_shot", ["--checkpoint", models / "clip", "--images", tmp_path, "--classes", "red,blue"])):
        rc, out, err = run_main(script, *args)
        assert rc == 2 and out == ""
        one_error_line(err, tmp_path / "junk.png", "no readable image among 1")


def test_repeated_rows_of_a_pairs_file_count_once(models, tmp_path):
    rows = [{"image": str(models / "images" / f"{c}.png"), "caption": f"a {c} square"} for c in ("red", "blue")]
    once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
    once.write_text("".join(json.dumps(r) + "\n" for r in rows))
    twice.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:1]))
    results = {}
    for name, pairs in (("once", once), ("twice", twice)):
        with pytest.warns(UserWarning, match="1 repeated") if name == "twice" else contextlib.nullcontext():
            rc, out, _ = run_main("retrieve", "eval", "--checkpoint", models / "clip", "--pairs", pairs, "--json")
        assert rc == 0
        results[name] = json.loads(out)
    assert results["twice"]["text_to_image"] == results["once"]["text_to_image"]
    assert results["twice"]["captions"] == 2


def test_attention_maps_go_under_runs_and_same_named_inputs_keep_their_own(models, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (40, 40), (0, 255, 0)).save(other / "red.png")  # the same file name as images/red.png
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run_main("attention", "--checkpoint", models / "classifier", models / "images" / "red.png",
                     other / "red.png", "--json")
    assert rc == 0
    pngs = [Path(r["png"]) for r in json.loads(out)]
    assert pngs == [Path("runs/attention/red_attention.png"), Path("runs/attention/red_2_attention.png")]
    assert all((tmp_path / p).is_file() for p in pngs)


def test_an_error_raised_in_a_loader_worker_is_one_line(capsys):
    from multimodal.errors import InputError
    from multimodal.inference.common import script_main

    class Unreadable(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise InputError("cannot identify image file", "photo.png")

    rc = script_main(lambda: list(torch.utils.data.DataLoader(Unreadable(), num_workers=1)))()
    assert rc == 2
    assert capsys.readouterr().err == "error: photo.png: cannot identify image file\n"


def test_a_damaged_retrieval_index_is_refused(models, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    index = tmp_path / "index.safetensors"
    assert run_main("retrieve", "index", "--checkpoint", models / "clip", "--images", models / "images",
                    "--out", index)[0] == 0
    with safe_open(str(index), framework="pt") as f:
        metadata = f.metadata()
    for paths in ("[not json", json.dumps(["only-one.png"])):
        save_file(load_file(index), tmp_path / "damaged.safetensors", metadata={**metadata, "paths": paths})
        rc, out, err = run_main("retrieve", "query", "--checkpoint", models / "clip", "--index",
                                tmp_path / "damaged.safetensors", "--text", "a red square")
        assert rc == 2 and out == ""
        one_error_line(err, tmp_path / "damaged.safetensors", "damaged retrieval index")
