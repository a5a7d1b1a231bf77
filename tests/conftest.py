import contextlib
import importlib.util
import io
import subprocess
import sys
import unittest.mock
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run scripts/NAME.py as a user would, in a fresh process."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args)],
                            capture_output=True, text=True, cwd=cwd or ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_main(name: str, *args, cwd: Path | None = None) -> tuple[int, str, str]:
    """scripts/NAME.py's main(ARGS) in this process (no interpreter start-up of several seconds), in the folder
    ``cwd`` (default: this one): exit status, stdout, stderr; argparse's exit (a usage error, --help) counts as
    the status it gives. Use run_script where the script must also be proven to run as its own process."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or Path.cwd()), \
            unittest.mock.patch.object(sys, "argv", [spec.origin]):
        try:
            rc = module.main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def shape_folders(tmp_path_factory) -> Path:
    """A tiny single-object shapes-world ImageFolder: train/CLASS/*.png and test/CLASS/*.png."""
    out = tmp_path_factory.mktemp("shape_classes")
    assert run_main("make_data", "shape-classes", out, "--train-size", 96, "--test-size", 24, "--image-size", 32)[0] == 0
    return out


@pytest.fixture(scope="session")
def tiny_classifier(shape_folders, tmp_path_factory) -> Path:
    """A classifier trained for two seconds-long epochs with the tiny recipe; returns its checkpoint."""
    work = tmp_path_factory.mktemp("train")  # the recipe writes runs/tiny_vit/ under the working folder
    run_script("train", "fit", "--config", ROOT / "configs/tiny/vit_folder.yaml", "--data.init_args.root",
               shape_folders / "train", "--trainer.enable_progress_bar", "false", cwd=work)
    return work / "runs/tiny_vit/checkpoints/last.ckpt"
