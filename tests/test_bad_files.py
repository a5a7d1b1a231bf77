"""The README's promise for the files users give: a bad image, text file or checkpoint is an InputError naming the
file and the reason in the Python API, and one line `error: FILE[:LINE]: reason` with exit status 2 in the scripts;
never a traceback, never a silent wrong answer. Training data skip bad images, counted and named in a warning, and
go on. Each table holds several cases of a class of fault; bad arguments and outputs are in test_bad_input.py."""

import codecs
import io
import json
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, run_main, run_script
from PIL import Image

import multimodal as mm
from multimodal.data import read_text
from multimodal.data.images import load_image, scan_class_folders
from multimodal.data.pairs import PairsData, read_pairs
from multimodal.data.speech import read_manifest
from multimodal.inference.zero_shot import read_lines
from multimodal.tokenizers import BPETokenizer, CharTokenizer

VIT = {"image_size": 32, "patch_size": 8, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
TEXT = {"context_length": 16, "transformer": {"dim": 32, "depth": 1, "num_heads": 2}}
SMALL = {"dim": 32, "depth": 1, "num_heads": 2}


def one_error_line(err: str, *names) -> None:
    """stderr holds, besides warnings, exactly one line: `error: …` naming every one of ``names``."""
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert all(str(name) in lines[0] for name in names), err


def raises(path: Path, reason: str, line: int | None = None):
    """pytest.raises(InputError) whose message names ``path`` (and ``line``) before the ``reason`` regex."""
    where = re.escape(f"{path}:{line}" if line else str(path))
    return pytest.raises(mm.InputError, match=f"{where}: .*{reason}")


# --- images ---------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A well-formed PNG (valid chunks and checksums) whose header claims width × height RGB pixels, with
    ``pixels`` as its whole compressed data: a few bytes, however large the claim."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(pixels)) + _chunk(b"IEND", b""))


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


JPEG, PNG = encoded("JPEG"), encoded("PNG")
LIMIT = "89,478,485-pixel limit"
BAD_IMAGES = {  # name: (bytes, reason); the first, fourth and last pass PIL's Image.verify()
    "truncated.jpg": (JPEG[:len(JPEG) * 6 // 10], "truncated"),
    "truncated.png": (PNG[:len(PNG) // 2], "truncated"),
    "no_end.png": (PNG[:-30], "truncated"),
    "short_data.png": (png_claiming(48, 48, b"\0" * 100), "truncated"),
    "bomb.png": (png_claiming(30000, 30000), f"image of 30000×30000 pixels is larger than the {LIMIT}"),
    "large.png": (png_claiming(10000, 10000), f"image of 10000×10000 pixels is larger than the {LIMIT}"),
    "no_eoi.jpg": (JPEG[:-2], "truncated"),
}


def good_image(path: Path, seed: int) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 255, 3, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(rgb, (40, 40, 3)).copy()).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny models (exported folders and .ckpt files as training writes them), good images and a clip."""
    out = tmp_path_factory.mktemp("bad_files")
    torch.manual_seed(0)
    models = {"classifier": mm.Classifier({"vit": VIT}, ["red", "blue"]),
              "clip": mm.CLIP({"vit": VIT, "text": TEXT, "embed_dim": 16},
                              BPETokenizer.train(["a red square", "a blue square"], 300)),
              "speech": mm.SpeechToText({"encoder": {"max_frames": 100, "transformer": SMALL},
                                         "decoder": {"context_length": 8, "transformer": SMALL}},
                                        CharTokenizer(list("ab ")))}
    tasks = {"classifier": "ImageClassifier", "clip": "ImageTextContrastive", "speech": "SpeechRecognizer"}
    for name, model in models.items():
        mm.save_model(model, out / name)
        torch.save({"multimodal_task": tasks[name], "multimodal_model": model.describe(), "hyper_parameters": {},
                    "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, out / f"{name}.ckpt")
    images = out / "images"
    images.mkdir()
    for i in range(6):
        good_image(images / f"good{i}.png", i)
    sf.write(out / "clip.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    return out


@pytest.fixture(params=list(BAD_IMAGES), scope="module")
def bad_image(request, files) -> tuple[Path, str]:
    data, reason = BAD_IMAGES[request.param]
    path = files / "images" / request.param
    path.write_bytes(data)
    return path, reason


def test_a_bad_image_is_an_input_error_in_every_reader(bad_image, files):
    path, reason = bad_image
    with raises(path, reason):
        load_image(path)
    classifier, clip = mm.load_model(files / "classifier"), mm.load_model(files / "clip")
    with raises(path, reason):
        classifier.classify(path)
    with raises(path, reason):
        clip.zero_shot([files / "images/good0.png", path], ["red", "blue"])
    rc, out, err = run_main("classify", "--checkpoint", files / "classifier", path)
    assert rc == 2 and out == ""
    one_error_line(err, path)
    assert re.search(reason, err), err


def test_training_data_skip_a_bad_image_counted_and_named_and_go_on(bad_image, files, tmp_path):
    path, reason = bad_image
    pairs = tmp_path / "train.jsonl"
    rows = [{"image": str(files / f"images/good{i}.png"), "caption": f"a square {i}"} for i in range(5)]
    rows.insert(2, {"image": str(path), "caption": "a bad one"})
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = PairsData(str(pairs), image_size=32, batch_size=2)
    with pytest.warns(UserWarning, match=rf"skipped 1 bad row\(s\): line 3: .*{re.escape(path.name)}.*{reason}"):
        data.setup("fit")
    assert len(data.train_pairs.images) == 5
    assert sum(len(batch[1]) for batch in data.train_dataloader()) == 4  # every batch loads (the last one dropped)

    folders = tmp_path / "folders"
    for c in ("red", "blue"):
        (folders / c).mkdir(parents=True)
        good_image(folders / c / "good.png", 0)
    (folders / "red" / path.name).write_bytes(path.read_bytes())
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable image.*{re.escape(path.name)}.*{reason}"):
        classes, paths, _ = scan_class_folders(folders)
    assert classes == ["blue", "red"] and len(paths) == 2


def test_evaluation_data_refuse_a_bad_image_with_file_and_line(bad_image, files, tmp_path):
    path, reason = bad_image
    pairs = tmp_path / "test.csv"
    pairs.write_text(f"image,caption\n{files / 'images/good0.png'},a red square\n{path},a blue square\n")
    with raises(pairs, f"unreadable image|{reason}", line=3):
        read_pairs(pairs)
    rc, out, err = run_main("retrieve", "eval", "--checkpoint", files / "clip", "--pairs", pairs)
    assert rc == 2 and out == ""
    one_error_line(err, f"{pairs}:3", path)


def test_an_image_changed_after_the_check_is_skipped_in_training_and_named_in_evaluation(files, tmp_path):
    pairs = tmp_path / "train.jsonl"
    images = [good_image(tmp_path / f"{i}.png", i) for i in range(4)]
    pairs.write_text("".join(json.dumps({"image": str(p), "caption": f"square {i}"}) + "\n" for i, p in enumerate(images)))
    data = PairsData(str(pairs), val=str(pairs), image_size=32, batch_size=4)
    data.setup("fit")
    images[1].write_bytes(BAD_IMAGES["truncated.png"][0])  # broken after the check: training takes the next one
    with pytest.warns(UserWarning, match=rf"skipped an image that no longer loads \(1 so far\): .*{images[1].name}"):
        batch = next(iter(data.train_dataloader()))
    assert batch[0].shape == (4, 3, 32, 32)
    with raises(images[1], "truncated"):
        next(iter(data.val_dataloader()))


def test_training_goes_on_past_bad_images_with_one_warning(files, tmp_path, monkeypatch):
    """The whole run, as a user starts it: every kind of bad image in the training file is skipped."""
    rows = [{"image": str(files / f"images/good{i % 6}.png"), "caption": f"a square {i}"} for i in range(8)]
    for name, (data, _) in BAD_IMAGES.items():
        (tmp_path / name).write_bytes(data)
        rows.append({"image": str(tmp_path / name), "caption": "a bad one"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.chdir(tmp_path)  # the recipe writes runs/ under the working folder
    with pytest.warns(UserWarning, match=rf"skipped {len(BAD_IMAGES)} bad row\(s\): line 9: .*truncated\.jpg"):
        rc, _, err = run_main("train", "fit", "--config", ROOT / "configs/tiny/clip_tiny.yaml",
                              "--data.init_args.train", tmp_path / "train.jsonl", "--data.init_args.val", "null",
                              "--data.init_args.batch_size", "4", "--trainer.max_steps", "2",
                              "--trainer.enable_progress_bar", "false", "--trainer.logger", "false")
    assert rc == 0 and "Traceback" not in err, err
    assert (tmp_path / "runs/tiny_clip/checkpoints/last.ckpt").is_file()


# --- text files -------------------------------------------------------------------------------------------

BOM = codecs.BOM_UTF8


def test_a_byte_order_mark_is_dropped_everywhere(files, tmp_path):
    image = files / "images/good0.png"
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(BOM + f"image,caption\r\n{image},a red square\r\n{files / 'images/good1.png'},a blue square\r\n"
                    .encode())
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_bytes(BOM + "".join(json.dumps({"image": str(files / f"images/good{i}.png"), "caption": f"a café {i}"},
                                                       ensure_ascii=False)
                                    + "\n" for i in range(2)).encode())
    for pairs in (csv, jsonl):
        assert read_pairs(pairs).images[0] == image
        rc, out, err = run_main("retrieve", "eval", "--checkpoint", files / "clip", "--pairs", pairs, "--json")
        assert rc == 0 and json.loads(out)["images"] == 2, err
    assert read_pairs(jsonl).captions[0] == ["a café 0"]

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(BOM + (json.dumps({"audio": str(files / "clip.wav"), "text": "ab"}) + "\n").encode())
    assert [u.text for u in read_manifest(manifest)[0]] == ["ab"]
    rc, out, err = run_main("transcribe", "--checkpoint", files / "speech", "--manifest", manifest, "--json")
    assert rc == 0 and json.loads(out)["utterances"] == 1, err

    classes = tmp_path / "classes.txt"
    classes.write_bytes(BOM + b"red\r\nblue\r\n")
    templates = tmp_path / "templates.txt"
    templates.write_bytes(BOM + b"a {}\n")
    assert read_lines(classes, "class") == ["red", "blue"] and read_lines(templates, "template") == ["a {}"]
    rc, out, err = run_main("zero_shot", "--checkpoint", files / "clip", "--images", image, "--classes-file", classes,
                            "--templates", templates, "--json")
    assert rc == 0 and json.loads(out)["classes"] == ["red", "blue"], err

    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "model.safetensors").write_bytes((files / "clip/model.safetensors").read_bytes())
    (exported / "config.json").write_bytes(BOM + (files / "clip/config.json").read_bytes())
    assert type(mm.load_model(exported)) is mm.CLIP


def latin1_pairs(tmp_path: Path, files: Path, suffix: str) -> Path:
    path = tmp_path / f"pairs{suffix}"
    image = files / "images/good0.png"
    text = (f"image,caption\n{image},a red square\n{image},un carré rouge\n" if suffix == ".csv" else
            f'{{"image": "{image}", "caption": "a red square"}}\n{{"image": "{image}", "caption": "un carré"}}\n')
    path.write_bytes(text.encode("latin-1"))
    return path


TEXT_FILES = [  # (id, write the file, read it through the API, script arguments, line, reason)
    ("pairs.csv latin-1", lambda t, f: latin1_pairs(t, f, ".csv"), read_pairs,
     ["retrieve", "eval", "--checkpoint", "{clip}", "--pairs", "{file}"], 3, "not a UTF-8 text file: byte 0xe9"),
    ("pairs.jsonl latin-1", lambda t, f: latin1_pairs(t, f, ".jsonl"), read_pairs,
     ["retrieve", "eval", "--checkpoint", "{clip}", "--pairs", "{file}"], 2, "not a UTF-8 text file: byte 0xe9"),
    ("pairs folder", lambda t, f: t, read_pairs,
     ["retrieve", "eval", "--checkpoint", "{clip}", "--pairs", "{file}"], None, "a folder, not a pairs file"),
    ("manifest latin-1", lambda t, f: _write(t / "m.jsonl", '{"audio": "a.wav", "text": "ça"}\n'.encode("latin-1")),
     read_manifest, ["transcribe", "--checkpoint", "{speech}", "--manifest", "{file}"], 1, "not a UTF-8 text file"),
    ("manifest utf-16", lambda t, f: _write(t / "m.jsonl", '{"audio": "a.wav", "text": "ab"}\n'.encode("utf-16")),
     read_manifest, ["transcribe", "--checkpoint", "{speech}", "--manifest", "{file}"], 1, "not a UTF-8 text file"),
    ("classes latin-1", lambda t, f: _write(t / "classes.txt", "rouge\nbleu clair\nvert foncé\n".encode("latin-1")),
     lambda p: read_lines(p, "class"),
     ["zero_shot", "--checkpoint", "{clip}", "--images", "{image}", "--classes-file", "{file}"], 3,
     "not a UTF-8 text file"),
    ("templates cp1252", lambda t, f: _write(t / "templates.txt", "a “{}”\n".encode("cp1252")),
     lambda p: read_lines(p, "template"),
     ["zero_shot", "--checkpoint", "{clip}", "--images", "{image}", "--classes", "red", "--templates", "{file}"], 1,
     "not a UTF-8 text file: byte 0x93"),
    ("classes missing", lambda t, f: t / "nothing.txt", lambda p: read_lines(p, "class"),
     ["zero_shot", "--checkpoint", "{clip}", "--images", "{image}", "--classes-file", "{file}"], None,
     "no such class file"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("make", "read", "script", "line", "reason"), [case[1:] for case in TEXT_FILES],
                         ids=[case[0] for case in TEXT_FILES])
def test_a_text_file_that_is_not_utf8_is_refused_naming_it(make, read, script, line, reason, files, tmp_path):
    path = make(tmp_path, files)
    with raises(path, reason, line):
        read(path)
    args = [a.format(clip=files / "clip", speech=files / "speech", image=files / "images/good0.png", file=path)
            for a in script]
    rc, out, err = run_main(*args)
    assert rc == 2 and out == ""
    one_error_line(err, f"{path}:{line}" if line else path, reason)


def test_read_text_names_the_line_and_offset_of_the_first_bad_byte(tmp_path):
    path = _write(tmp_path / "x.txt", BOM + b"ab\ncd\xff\n")
    with raises(path, "not a UTF-8 text file: byte 0xff at offset 8 ", line=2):
        read_text(path, "class")


# --- checkpoints ------------------------------------------------------------------------------------------

def _set(path: str, value):
    """A change of a checkpoint's dict at a "/"-separated path: value DELETE removes the entry."""
    def change(checkpoint: dict) -> dict:
        *parents, last = path.split("/")
        node = checkpoint
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        return checkpoint
    return change


DELETE = object()
CLASSIFIER_CONFIG = "multimodal_model/config"
CHECKPOINTS = [  # (id, model, change of the checkpoint's dict, reason)
    ("no task", "classifier", _set("multimodal_task", DELETE), "not a model this library knows"),
    ("task not a string", "classifier", _set("multimodal_task", ["ImageClassifier"]), "unknown task"),
    ("no hyper-parameters", "classifier", lambda c: _set("hyper_parameters", DELETE)(_set("multimodal_model", DELETE)(c)),
     "has no hyper-parameters"),
    ("hyper-parameters a list", "clip", lambda c: _set("hyper_parameters", [1])(_set("multimodal_model", DELETE)(c)),
     "hyper-parameters are list, not a dict"),
    ("old hyper-parameters without class names", "classifier",
     lambda c: _set("hyper_parameters", {"vit": VIT})(_set("multimodal_model", DELETE)(c)), "no 'class_names'"),
    ("no state_dict", "classifier", _set("state_dict", DELETE), "has no state_dict"),
    ("state_dict of lists", "classifier", _set("state_dict", {"model.head.bias": [0.0, 0.0]}),
     "state_dict is not a dict of named tensors"),
    ("description not a dict", "classifier", _set("multimodal_model", "Classifier"), "not a model description"),
    ("unknown model", "classifier", _set("multimodal_model/model", "Detector"), "unknown model 'Detector'"),
    ("no config", "classifier", _set(CLASSIFIER_CONFIG, DELETE), "no 'config'"),
    ("vit a number", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit", 5), "expected a ViTConfig or a dict, not int"),
    ("unknown field", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/depth", 3), "unexpected keyword argument 'depth'"),
    ("negative dim", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/transformer/dim", -3),
     "transformer dim must be a positive integer, got -3"),
    ("dim a string", "clip", _set("multimodal_model/config/text/transformer/dim", "32"),
     "transformer dim must be a positive integer, got '32'"),
    ("dim not divisible by heads", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/transformer/num_heads", 3),
     "dim 32 is not divisible by num_heads 3"),
    ("zero heads", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/transformer/num_heads", 0), "num_heads must be"),
    ("image size not a multiple of the patch", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/image_size", 30),
     "image_size 30 is not a multiple of patch_size 8"),
    ("dropout above 1", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/transformer/dropout", 1.5), "dropout must be"),
    ("unknown activation", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/transformer/activation", "relu6"),
     "activation must be one of"),
    ("four channels", "classifier", _set(f"{CLASSIFIER_CONFIG}/vit/channels", 4), "channels must be 1 .* or 3"),
    ("mean of two channels", "classifier", _set(f"{CLASSIFIER_CONFIG}/mean", [0.5, 0.5]), "mean must be 1 or 3"),
    ("zero std", "classifier", _set(f"{CLASSIFIER_CONFIG}/std", [0.0]), "std must be above 0"),
    ("class names a string", "classifier", _set("multimodal_model/class_names", "red,blue"),
     "class_names must be a list of strings"),
    ("class names numbers", "classifier", _set("multimodal_model/class_names", [1, 2]),
     "class_names must be a list of strings"),
    ("class names twice", "classifier", _set("multimodal_model/class_names", ["red", "red"]), "must be distinct"),
    ("negative embed_dim", "clip", _set("multimodal_model/config/embed_dim", -1), "embed_dim must be a positive"),
    ("no mel bins", "speech", _set("multimodal_model/config/encoder/n_mels", 0), "n_mels must be an integer from 1"),
    ("beam of zero", "speech", _set("multimodal_model/config/beam_size", 0), "beam_size must be a positive"),
    ("tokenizer a number", "clip", _set("multimodal_model/tokenizer", 5), "a tokenizer entry must be a dict"),
    ("tokenizer of unknown type", "clip", _set("multimodal_model/tokenizer", {"type": "word"}),
     "unknown tokenizer type 'word'"),
    ("bpe of bad JSON", "clip", _set("multimodal_model/tokenizer/json", "{not json"), "a bad 'bpe' tokenizer entry"),
    ("bpe without JSON", "clip", _set("multimodal_model/tokenizer/json", DELETE), "a bad 'bpe' tokenizer entry"),
    ("char of strings", "speech", _set("multimodal_model/tokenizer/chars", ["ab", " "]), "a bad 'char' tokenizer entry"),
    ("char of numbers", "speech", _set("multimodal_model/tokenizer/chars", [1, 2]), "a bad 'char' tokenizer entry"),
    ("tokenizer with an unknown field", "speech", _set("multimodal_model/tokenizer/lower", True),
     "a bad 'char' tokenizer entry"),
    ("tokenizer of another size", "speech", _set("multimodal_model/tokenizer/chars", list("abc ")),
     "weights do not fit the model; wrong shapes"),
    ("weights of another shape", "classifier", _set("state_dict/model.head.bias", torch.zeros(3)),
     "weights do not fit the model; wrong shapes .*head.bias"),
    ("a missing weight", "classifier", _set("state_dict/model.head.bias", DELETE), "missing keys: head.bias"),
    ("weights of NaN", "classifier", _set("state_dict/model.head.bias", torch.tensor([float("nan"), 0.0])),
     "weights hold NaN or infinite values .*head.bias"),
    ("weights not tensors", "classifier", _set("state_dict/model.head.bias", [0.0, 0.0]),
     "state_dict is not a dict of named tensors"),
]


@pytest.mark.parametrize(("model", "change", "reason"), [case[1:] for case in CHECKPOINTS],
                         ids=[case[0] for case in CHECKPOINTS])
def test_a_checkpoint_with_bad_contents_is_refused_naming_it(model, change, reason, files, tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save(change(torch.load(files / f"{model}.ckpt", weights_only=True)), path)
    with raises(path, reason):
        mm.load_model(path)
    rc, out, err = run_main("export", "--checkpoint", path, "--out", tmp_path / "out")
    assert rc == 2 and out == "" and not (tmp_path / "out").exists()
    one_error_line(err, path)
    assert re.search(reason, err), err


def test_the_checkpoints_changed_above_load_when_unchanged(files):
    for model, kind in (("classifier", mm.Classifier), ("clip", mm.CLIP), ("speech", mm.SpeechToText)):
        assert type(mm.load_model(files / f"{model}.ckpt")) is kind


def _ckpt_bytes(files: Path) -> bytes:
    return (files / "classifier.ckpt").read_bytes()


CHECKPOINT_FILES = [  # (id, the file's bytes from the fixture's folder, reason)
    ("empty", lambda f: b"", "empty file \\(0 bytes\\)"),
    ("truncated", lambda f: _ckpt_bytes(f)[:len(_ckpt_bytes(f)) // 2], "not a readable weights file, or a truncated one"),
    ("cut at the end", lambda f: _ckpt_bytes(f)[:-10], "not a readable weights file, or a truncated one"),
    ("text", lambda f: b"hello\n", "not a readable weights file"),
    ("a list", lambda f: _saved([1, 2]), "not a model this library knows"),
]


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("content", "reason"), [case[1:] for case in CHECKPOINT_FILES],
                         ids=[case[0] for case in CHECKPOINT_FILES])
def test_a_damaged_checkpoint_file_is_refused_naming_it(content, reason, files, tmp_path):
    path = _write(tmp_path / "model.ckpt", content(files))
    with raises(path, reason):
        mm.load_model(path)
    rc, out, err = run_main("classify", "--checkpoint", path, files / "images/good0.png")
    assert rc == 2 and out == ""
    one_error_line(err, path)
    assert re.search(reason, err), err


def _config(files: Path, change) -> bytes:
    config = json.loads((files / "classifier/config.json").read_text())
    return json.dumps(change(config)).encode()


EXPORTS = [  # (id, file name, its bytes from the fixture's folder, the file named, reason)
    ("config not JSON", "config.json", lambda f: b'{"format": "multimodal-export",\n "model": }', "config.json:2",
     "not valid JSON"),
    ("config empty", "config.json", lambda f: b"", "config.json:1", "not valid JSON"),
    ("config latin-1", "config.json", lambda f: '{"class_names": ["rouge", "bleu foncé"]}'.encode("latin-1"),
     "config.json:1", "not a UTF-8 text file"),
    ("config a list", "config.json", lambda f: b"[]", "config.json", "not a multimodal-export config"),
    ("config with a negative dim", "config.json",
     lambda f: _config(f, lambda c: _set("config/vit/transformer/dim", -3)(c)), "config.json",
     "transformer dim must be a positive integer"),
    ("config with class names a dict", "config.json",
     lambda f: _config(f, lambda c: _set("class_names", {"red": 0})(c)), "config.json",
     "class_names must be a list of strings"),
    ("weights empty", "model.safetensors", lambda f: b"", "model.safetensors", "empty file \\(0 bytes\\)"),
    ("weights truncated", "model.safetensors", lambda f: (f / "classifier/model.safetensors").read_bytes()[:300],
     "model.safetensors", "not a readable weights file, or a truncated one"),
    ("weights of text", "model.safetensors", lambda f: b"not weights", "model.safetensors",
     "not a readable weights file"),
]


@pytest.mark.parametrize(("name", "content", "named", "reason"), [case[1:] for case in EXPORTS],
                         ids=[case[0] for case in EXPORTS])
def test_a_damaged_exported_folder_is_refused_naming_the_file(name, content, named, reason, files, tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    for part in ("config.json", "model.safetensors"):
        (folder / part).write_bytes((files / "classifier" / part).read_bytes())
    (folder / name).write_bytes(content(files))
    with pytest.raises(mm.InputError, match=f"{re.escape(str(folder / named))}: .*{reason}"):
        mm.load_model(folder)
    rc, out, err = run_main("export", "--checkpoint", folder, "--out", tmp_path / "out")
    assert rc == 2 and out == "" and not (tmp_path / "out").exists()
    one_error_line(err, folder / named)
    assert re.search(reason, err), err


def test_no_warning_escapes_for_an_image_between_the_limit_and_twice_it(files):
    path = _write(files / "images/warned.png", png_claiming(10000, 10000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would be an error here
        with raises(path, "larger than the"):
            load_image(path)


def test_an_image_over_the_limit_is_one_line_in_a_process_of_its_own(files, tmp_path):
    """PIL's own DecompressionBombWarning never reaches the user: the one line names the size and the limit."""
    path = _write(tmp_path / "large.png", png_claiming(10000, 10000))
    result = run_script("classify", "--checkpoint", files / "classifier", path, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "DecompressionBomb" not in result.stderr, result.stderr
    one_error_line(result.stderr, path, f"image of 10000×10000 pixels is larger than the {LIMIT}")
