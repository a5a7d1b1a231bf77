"""Every recipe in configs/ parses and runs one batch of fit (fast_dev_run), from a fresh working folder
whose data/ holds tiny versions of the data sets that the recipes name (as make_data.py writes them)."""

import os

import pytest

from conftest import ROOT, run_script

CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))


@pytest.fixture(scope="session")
def recipe_data(shape_folders, tmp_path_factory):
    data = tmp_path_factory.mktemp("recipes") / "data"
    data.mkdir()
    os.symlink(shape_folders, data / "shape_classes")
    run_script("make_data", "speech", data / "speech", "--train-size", 8, "--test-size", 4)  # asr_*.yaml
    run_script("make_data", "shapes", data / "shapes_pairs", "--train-size", 16, "--test-size", 8,  # clip_*.yaml
               "--retrieval-size", 2, "--zero-shot-per-class", 1, "--image-size", 32)
    return data


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_recipe_runs_with_fast_dev_run(config, recipe_data, tmp_path):
    os.symlink(recipe_data, tmp_path / "data")
    run_script("train", "fit", "--config", config, "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu",
               "--trainer.enable_progress_bar", "false", cwd=tmp_path)
