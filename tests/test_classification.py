import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_main, run_script
from PIL import Image

from multimodal.data.classification import MNISTData
from multimodal.data.images import EvalTransform, load_image, scan_class_folders, train_transform
from multimodal.errors import InputError
from multimodal.loading import load_model
from multimodal.models import Classifier


def test_odd_image_modes_load_as_8bit(tmp_path):
    Image.new("CMYK", (10, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    rgba = Image.new("RGBA", (10, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (255, 255, 255, 0))
    rgba.save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 10), 30000, dtype=np.uint16)).save(tmp_path / "gray16.png")

    assert np.asarray(load_image(tmp_path / "cmyk.jpg"))[0, 0].tolist() == pytest.approx([255, 0, 0], abs=3)
    rgba = np.asarray(load_image(tmp_path / "rgba.png"))
    assert rgba[0, 0].tolist() == [0, 0, 0] and rgba[1, 1].tolist() == [255, 0, 0]
    gray16 = load_image(tmp_path / "gray16.png", channels=1)
    assert gray16.mode == "L" and np.asarray(gray16)[0, 0] == round(30000 / 65535 * 255)  # scaled, not clipped


@pytest.mark.parametrize("content, reason", [(None, "no such image"), (b"", "0 bytes"), (b"\x89PNG garbage", "not a readable")])
def test_bad_image_names_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as error:
        load_image(path)
    assert "bad.png" in str(error.value)


def test_class_folders_skip_bad_images_and_refuse_empty_classes(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "ok.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*broken.png"):
        classes, paths, labels = scan_class_folders(tmp_path)
    assert classes == ["a", "b"] and labels == [0, 1]
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "broken.png").unlink()
    with pytest.raises(InputError, match="without readable images: .*c"):
        scan_class_folders(tmp_path)
    with pytest.raises(InputError, match="no class sub-folders"):
        scan_class_folders(tmp_path / "c")


def test_transforms_resize_crop_and_pickle_for_spawned_workers():
    wide = Image.fromarray(np.arange(40 * 60, dtype=np.uint8).reshape(40, 60) % 251, mode="L")
    square = wide.crop((10, 0, 50, 40)).resize((28, 28), Image.BILINEAR)
    for transform in (EvalTransform(28), train_transform(28, "affine", channels=1)):
        transform = pickle.loads(pickle.dumps(transform))  # DataLoader workers started by spawn pickle it
        for image in (wide, square):
            x = transform(image)
            assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    centre = EvalTransform(28)(wide)  # shorter side to 28, then the middle 28 columns
    assert torch.allclose(centre, EvalTransform(28)(wide.resize((42, 28), Image.BILINEAR)), atol=0.1)
    assert torch.allclose(EvalTransform(28)(square) * 255, torch.from_numpy(np.asarray(square)).float()[None], atol=1e-4)


def test_mnist_split_is_fixed_and_balanced():
    data = MNISTData()
    data.setup()
    assert (len(data.train_set), len(data.test_set)) == (4000, 1000)
    assert np.bincount(data.test_set.labels).tolist() == [100] * 10
    image, label = data.train_set[0]
    assert image.shape == (1, 28, 28) and 0 <= image.min() and image.max() <= 1


def test_checkpoint_runs_alone_and_classifies_a_labelled_folder(tiny_classifier, shape_folders):
    model = load_model(tiny_classifier)
    assert isinstance(model, Classifier) and "lightning" not in type(model).__module__
    assert model.class_names == sorted(p.name for p in (shape_folders / "test").iterdir())
    assert torch.load(tiny_classifier, weights_only=True)["multimodal_task"] == "ImageClassifier"

    result = json.loads(run_script("classify", "--checkpoint", tiny_classifier, shape_folders / "test",
                                   "--top-k", 3, "--json").stdout)
    assert result["images"] == 24 and result["accuracy"]["labelled_images"] == 24
    assert all(len(p["top"]) == 3 and p["true"] in model.class_names for p in result["predictions"])
    one = next((shape_folders / "test").rglob("*.png"))
    text = run_script("classify", "--checkpoint", tiny_classifier, one).stdout
    assert str(one) in text and "top1" not in text  # a single file has no label to score


def test_test_command_writes_confusion_matrix(tiny_classifier, shape_folders, tmp_path):
    status, _, err = run_main("train", "test", "--config", ROOT / "configs/tiny/vit_folder.yaml",
                              "--data.init_args.root", shape_folders / "test", "--ckpt_path", tiny_classifier,
                              "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert not status, err
    png = next(tmp_path.rglob("confusion_matrix.png"))
    assert Image.open(png).size[0] > 100


def test_classify_reports_bad_input_without_traceback(tiny_classifier, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"junk")
    Image.new("RGBA", (40, 40), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    result = run_script("classify", "--checkpoint", tiny_classifier, tmp_path, "--json")
    assert json.loads(result.stdout)["images"] == 1 and "broken.png" in result.stderr

    for args, message in [((tmp_path / "missing.ckpt", tmp_path), "missing.ckpt: no such checkpoint"),
                          ((tiny_classifier, tmp_path / "nowhere"), "nowhere: no such file or folder")]:
        status, _, err = run_main("classify", "--checkpoint", *args)
        assert status == 2 and message in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    status, _, err = run_main("classify", "--checkpoint", tiny_classifier, tmp_path / "empty")
    assert status == 2 and "no image files" in err


def test_checkpoints_of_another_task_or_format_are_refused(tmp_path):
    torch.save({"multimodal_task": "SpeechRecognizer", "hyper_parameters": {}, "state_dict": {}}, tmp_path / "asr.ckpt")
    with pytest.raises(InputError, match="asr.ckpt: this is a SpeechToText checkpoint; a Classifier"):
        load_model(tmp_path / "asr.ckpt", expect=Classifier)
    torch.save({"multimodal_task": "Nope", "hyper_parameters": {}, "state_dict": {}}, tmp_path / "nope.ckpt")
    with pytest.raises(InputError, match="nope.ckpt: unknown task 'Nope'"):
        load_model(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(InputError, match="not a model this library knows"):
        load_model(tmp_path / "plain.ckpt")
    torch.save({"evil": Path("x")}, tmp_path / "pickle.ckpt")  # needs full unpickling: refused
    with pytest.raises(InputError, match="not a readable weights file"):
        load_model(tmp_path / "pickle.ckpt")


def test_attention_script_draws_maps_for_a_classifier(tiny_classifier, shape_folders, tmp_path):
    images = sorted((shape_folders / "test").rglob("*.png"))[:2]
    result = json.loads(run_script("attention", "--checkpoint", tiny_classifier, *images, "--out", tmp_path, "--json").stdout)
    assert [r["input"] for r in result] == [str(p) for p in images]
    for r in result:
        assert Image.open(r["png"]).size[0] > 300  # the image and two overlays side by side
        for name in ("rollout", "last"):
            grid = torch.tensor(r[name])
            assert grid.shape == (4, 4) and abs(grid.sum().item() - 1) < 1e-4
