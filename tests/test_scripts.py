import pytest

from conftest import ROOT, run_script

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name):
    out = run_script(name, "--help").stdout
    assert "usage" in out.lower() and len(out) > 100
