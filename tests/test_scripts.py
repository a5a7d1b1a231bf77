import json

import pytest

from conftest import ROOT, run_script

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name):
    out = run_script(name, "--help").stdout
    assert "usage" in out.lower() and len(out) > 100


def test_benchmark_prints_json_with_a_ratio_on_cpu():
    report = json.loads(run_script("benchmark", "--task", "vit", "--steps", "1", "--json").stdout)
    assert report["device"] == "cpu" and "small CPU sizes" in report["sizes"]
    vit = report["results"]["vit"]
    assert vit["ours"]["throughput"] > 0 and vit["timm"]["tflops_per_step"] > 0
    # same architecture, so the FLOP counts agree; the ratio is what the GPU run reports
    assert abs(vit["ours"]["tflops_per_step"] / vit["timm"]["tflops_per_step"] - 1) < 0.02
    assert vit["ratio_ours_over_reference"] > 0


def _same_flops(ours: dict, reference: dict) -> bool:
    return ours["throughput"] > 0 and reference["throughput"] > 0 and \
        abs(ours["tflops_per_step"] / reference["tflops_per_step"] - 1) < 0.02


def test_benchmark_clip_against_open_clip_on_cpu():
    clip = json.loads(run_script("benchmark", "--task", "clip", "--steps", "1", "--json").stdout)["results"]["clip"]
    # ours is converted from the OpenCLIP model: the same architecture, so the same FLOPs
    assert _same_flops(clip["ours"], clip["open_clip"]) and clip["ratio_ours_over_reference"] > 0


def test_benchmark_asr_against_transformers_whisper_on_cpu():
    asr = json.loads(run_script("benchmark", "--task", "asr", "--steps", "1", "--json").stdout)["results"]["asr"]
    assert _same_flops(asr["train"]["ours"], asr["train"]["transformers"])
    assert asr["train"]["ratio_ours_over_reference"] > 0
    decode = asr["decode"]
    for row in (decode["ours"], decode["transformers"]):  # both decode exactly new_tokens tokens per clip
        assert row["tokens_per_s"] > 0 and row["tokens_per_clip"] == [decode["new_tokens"]]
    assert decode["ratio_ours_over_reference"] > 0
