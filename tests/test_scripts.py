import pytest

from conftest import ROOT, run_script

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name):
    out = run_script(name, "--help").stdout
    assert "usage" in out.lower() and len(out) > 100


def test_benchmark_prints_json_with_a_ratio_on_cpu():
    import json

    report = json.loads(run_script("benchmark", "--task", "vit", "--steps", "1", "--json").stdout)
    assert report["device"] == "cpu" and "small CPU sizes" in report["sizes"]
    vit = report["results"]["vit"]
    assert vit["ours"]["throughput"] > 0 and vit["timm"]["tflops_per_step"] > 0
    # same architecture, so the FLOP counts agree; the ratio is what the GPU run reports
    assert abs(vit["ours"]["tflops_per_step"] / vit["timm"]["tflops_per_step"] - 1) < 0.02
    assert vit["ratio_ours_over_reference"] > 0
