import dataclasses
import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_main
from torch import nn

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))
BENCHMARK = ROOT / "benchmarks" / "benchmark.py"  # beside the package, not in it (like timm's benchmark.py)


def run_benchmark(*args: str) -> dict:
    """``python benchmarks/benchmark.py ARGS --json`` from the repository root, as a user runs it: its JSON."""
    result = subprocess.run([sys.executable, str(BENCHMARK.relative_to(ROOT)), *map(str, args), "--json"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, \
        f"benchmark failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def load_benchmark():
    """benchmarks/benchmark.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name):  # in this process: other tests run each script as its own
    status, out, _ = run_main(name, "--help")
    assert status == 0 and "usage" in out.lower() and len(out) > 100


def test_benchmark_has_help():
    result = subprocess.run([sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "usage" in result.stdout.lower() and "--task" in result.stdout


def test_benchmark_prints_json_with_a_ratio_on_cpu():
    report = run_benchmark("--task", "vit", "--steps", "1", "--precision", "bf16", "--batch", "3", "--repeats", "2")
    assert report["device"] == "cpu" and "small CPU sizes" in report["sizes"] and report["precision"] == "bf16 autocast"
    vit = report["results"]["vit"]
    assert vit["batch"] == 3
    for side in ("ours", "timm"):  # two alternated measurements of each; of two, the slower one is reported
        each = vit[side]["throughput_of_each_run"]
        assert len(each) == 2 and vit[side]["throughput"] == min(each)
    assert vit["ratio_ours_over_reference"] == vit["ours"]["throughput"] / vit["timm"]["throughput"]
    assert vit["ours"]["throughput"] > 0 and vit["timm"]["tflops_per_step"] > 0
    # same architecture, so the FLOP counts agree; the ratio is what the GPU run reports
    assert abs(vit["ours"]["tflops_per_step"] / vit["timm"]["tflops_per_step"] - 1) < 0.02
    assert vit["ratio_ours_over_reference"] > 0


def _same_flops(ours: dict, reference: dict) -> bool:
    return ours["throughput"] > 0 and reference["throughput"] > 0 and \
        abs(ours["tflops_per_step"] / reference["tflops_per_step"] - 1) < 0.02


def test_benchmark_clip_against_open_clip_on_cpu():
    clip = run_benchmark("--task", "clip", "--steps", "1", "--repeats", "1")["results"]["clip"]
    # ours is converted from the OpenCLIP model: the same architecture, so the same FLOPs
    assert _same_flops(clip["ours"], clip["open_clip"]) and clip["ratio_ours_over_reference"] > 0


def test_benchmark_recipe_sizes_are_the_cpu_recipes_models():
    import yaml

    def recipe(name):
        return yaml.safe_load((ROOT / "configs" / name).read_text())["model"]["init_args"]

    vit, ours = recipe("vit_mnist.yaml")["vit"], load_benchmark().VIT_SIZES["recipe"]
    assert {k: ours[k] for k in ("image_size", "patch_size", "channels")} == \
        {k: vit[k] for k in ("image_size", "patch_size", "channels")}
    assert {k: ours[k] for k in ("dim", "depth", "num_heads", "mlp_ratio")} == \
        {k: vit["transformer"][k] for k in ("dim", "depth", "num_heads", "mlp_ratio")}

    report = run_benchmark("--task", "clip", "--sizes", "recipe", "--steps", "1", "--repeats", "1", "--batch", "4")
    clip, cfg = report["results"]["clip"], recipe("clip_shapes_cpu.yaml")
    assert report["sizes"] == "the CPU recipes' models" and _same_flops(clip["ours"], clip["open_clip"])
    assert clip["model"] == {"patch_size": cfg["vit"]["patch_size"], "image_layers": cfg["vit"]["transformer"]["depth"],
                             "text_layers": cfg["text"]["transformer"]["depth"], "width": cfg["vit"]["transformer"]["dim"],
                             "embed_dim": cfg["embed_dim"], "vocab": cfg["tokenizer_vocab_size"]}
    assert (clip["image_size"], clip["context_length"]) == (cfg["vit"]["image_size"], cfg["text"]["context_length"])

    asr = run_benchmark("--task", "asr", "--sizes", "recipe", "--steps", "1", "--repeats", "1",
                        "--batch", "2")["results"]["asr"]
    cfg = recipe("asr_shapes_cpu.yaml")
    encoder, decoder = cfg["encoder"]["transformer"], cfg["decoder"]["transformer"]
    assert asr["model"]["d_model"] == encoder["dim"] == decoder["dim"]
    assert asr["model"]["layers"] == f"{encoder['depth']} + {decoder['depth']}"
    assert asr["model"]["context"] == cfg["decoder"]["context_length"]
    assert _same_flops(asr["train"]["ours"], asr["train"]["transformers"])
    # both decode the same number of tokens, so tokens/s compare the same work
    assert asr["decode"]["ours"]["tokens_per_clip"] == asr["decode"]["transformers"]["tokens_per_clip"] == [48]


def test_benchmark_attention_rows_crossover_and_plot(tmp_path):
    plot = tmp_path / "attention.png"
    attention = run_benchmark("--task", "attention", "--steps", "1", "--plot", plot)["results"]["attention"]
    measured = {(r["variant"], r["length"]) for r in attention["rows"] if r["ms"] > 0}
    assert measured == {(v, n) for v in ("full", "local", "linformer") for n in (256, 512, 1024)}
    assert set(attention["faster_than_full_from"]) == {"local", "linformer"}
    assert plot.stat().st_size > 10_000


def test_crossover_is_the_length_from_which_a_variant_stays_faster():
    crossover = load_benchmark().crossover

    def rows(full, local):
        return [{"variant": v, "length": n, "ms": ms} for v, times in (("full", full), ("local", local))
                for n, ms in zip((1, 2, 4, 8), times)]

    assert crossover(rows([1, 2, 4, 8], [2, 3, 3, 4]), "local") == 4
    assert crossover(rows([1, 2, 4, 8], [0.5, 3, 3, 4]), "local") == 4  # a lucky short length is no crossover
    assert crossover(rows([1, 2, 4, None], [2, 3, 5, 9]), "local") == 8  # full ran out of memory
    assert crossover(rows([1, 2, 4, 8], [2, 3, 5, 9]), "local") is None


def test_benchmark_inference_against_open_clip_timm_and_openai_whisper():
    """Tiny models through the rows of ``--task inference``: each pair computes the same function, every ratio is
    measured, and ours decodes exactly as many tokens as openai-whisper."""
    bench = load_benchmark()
    rows = bench.inference_rows(bench.Setting(torch.device("cpu"), batch=2, steps=1, warmup=0, compile=False, bf16=False),
                                clips=2, new_tokens=3, size="tiny")
    assert rows["image_embedding"]["min_cosine_ours_vs_reference"] > 0.9999
    assert rows["vit_classification"]["max_logit_difference"] < 1e-4
    assert rows["transcription"]["greedy_tokens_identical_on_30s_mel"] and rows["transcription"]["max_encoder_difference"] < 1e-4
    for row in (rows["image_embedding"], rows["vit_classification"], rows["transcription"]["greedy"],
                rows["transcription"]["beam5"]):
        assert row["ratio_ours_over_reference"] > 0
    assert rows["transcription"]["beam5"]["ratio_ours_padded_over_reference"] > 0
    for row in (rows["image_embedding"], rows["vit_classification"]):  # the products found, timed and counted
        bound = row["ours_matmul_bound"]
        assert 0 < bound["matmul_share"] < 1 and bound["matmul_gflop_per_s"] > 0


def test_matmul_bound_finds_times_and_counts_the_products_of_a_model_made_of_them():
    """Two bias-free 1024-wide products around a GELU: nearly all the time is theirs, each counted once (a double
    count would put their rate near twice the machine's best)."""
    bench = load_benchmark()
    mlp = nn.Sequential(nn.Linear(1024, 1024, bias=False), nn.GELU(), nn.Linear(1024, 1024, bias=False))
    x = torch.randn(512, 1024)
    bound = bench.matmul_bound(lambda: mlp(x))
    assert bound["matmul_share"] > 0.5
    assert 0 < bound["matmul_gflop_per_s"] < 1.5 * bound["machine_matmul_gflop_per_s"]


def test_benchmark_int8_inference_quantizes_ours_and_also_compares_with_the_references_quantized():
    bench = load_benchmark()
    setting = bench.Setting(torch.device("cpu"), batch=2, steps=1, warmup=0, compile=False, bf16=False, int8=True)
    rows = bench.inference_rows(setting, clips=2, new_tokens=3, size="tiny")
    assert 0.99 < rows["image_embedding"]["min_cosine_ours_vs_reference"] < 0.99999  # int8 numbers, close to float32
    for row, reference in ((rows["image_embedding"], "open_clip"), (rows["vit_classification"], "timm")):
        assert row["ratio_ours_over_reference"] > 0 and row[f"against_{reference}_int8"]["ratio_ours_over_reference"] > 0
    assert rows["transcription"]["precision"] == "ours int8, openai-whisper fp32"
    assert "ours_matmul_bound" not in rows["image_embedding"]  # a float32 bound says nothing of int8 products


def test_int8_benchmark_scores_a_shipped_model_in_float32_and_int8(monkeypatch, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmarks_int8", ROOT / "benchmarks" / "int8.py")
    int8 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(int8)
    digits = torch.rand(16, 1, 28, 28)

    def mean_top_logit(model):  # a stand-in for the 1,000 test digits' top-1: cheap, and it sees int8 numbers
        with torch.inference_mode():
            return {"mean_top_logit": model(digits).max(-1).values.mean().item()}

    build = int8.BUILDS["mnist-vit"]
    monkeypatch.setitem(int8.BUILDS, "mnist-vit", dataclasses.replace(
        build, data=[["make-data", "mnist", str(tmp_path)]], evaluate=mean_top_logit))
    assert int8.main(["mnist-vit", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["models"]["mnist-vit"]
    float32, quantized = row["float32"]["scores"]["mean_top_logit"], row["int8"]["scores"]["mean_top_logit"]
    assert float32 != quantized and abs(float32 - quantized) < 0.05 * abs(float32)
    assert row["int8_worse_by"] == float32 - quantized and row["speed_up"] > 0
    with pytest.raises(SystemExit):
        int8.main(["no-such-model"])


def test_benchmark_asr_against_transformers_whisper_on_cpu():
    asr = run_benchmark("--task", "asr", "--steps", "1", "--repeats", "1")["results"]["asr"]
    assert _same_flops(asr["train"]["ours"], asr["train"]["transformers"])
    assert asr["train"]["ratio_ours_over_reference"] > 0
    decode = asr["decode"]
    for row in (decode["ours"], decode["transformers"]):  # both decode exactly new_tokens tokens per clip
        assert row["tokens_per_s"] > 0 and row["tokens_per_clip"] == [decode["new_tokens"]]
    assert decode["ratio_ours_over_reference"] > 0


@pytest.fixture
def ttq():
    """benchmarks/time_to_quality.py as a module, under the name its callbacks are given to the CLI by."""
    spec = importlib.util.spec_from_file_location("time_to_quality", ROOT / "benchmarks" / "time_to_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_time_to_quality_stops_at_the_target_and_reports_a_miss(ttq, shape_folders, tmp_path, monkeypatch):
    (tmp_path / "configs/tiny").mkdir(parents=True)
    (tmp_path / "configs/tiny/vit_folder.yaml").write_text((ROOT / "configs/tiny/vit_folder.yaml").read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data/shape_classes").symlink_to(shape_folders)
    monkeypatch.setattr(ttq, "ROOT", tmp_path)
    tested = []
    for name, target in (("easy", 0.0), ("impossible", 1.01)):
        monkeypatch.setitem(ttq.TARGETS, name, ttq.Target("configs/tiny/vit_folder.yaml", {"val/top1": [">=", target]},
                                                          lambda checkpoint: tested.append(checkpoint) or {"top1": 0.5},
                                                          "24 shapes"))
    easy, impossible = ttq.run("easy", 0), ttq.run("impossible", 0)
    assert easy["reached"] and easy["epochs"] == 1 and len(easy["validations"]) == 1  # stopped at the first (of 2)
    assert 0 < easy["seconds_to_target"] <= easy["wall_seconds"] and easy["test"] == {"top1": 0.5}
    assert not impossible["reached"] and impossible["seconds_to_target"] is None and impossible["epochs"] == 2
    assert [v["met"] for v in impossible["validations"]] == [False, False]
    assert tested == [tmp_path / f"runs/time_to_quality/{n}/seed_0/runs/tiny_vit/checkpoints/last.ckpt"
                      for n in ("easy", "impossible")] and all(p.is_file() for p in tested)


def test_time_to_quality_validates_a_clip_on_its_targets_draw(ttq, tmp_path, monkeypatch):
    """The CLIP's targets are measured by the CLIPTargets callback on a draw of its own, written first."""
    (tmp_path / "configs/tiny").mkdir(parents=True)
    (tmp_path / "configs/tiny/clip_tiny.yaml").write_text((ROOT / "configs/tiny/clip_tiny.yaml").read_text())
    assert run_main("make_data", "shapes", tmp_path / "data/shapes_pairs", "--train-size", 64, "--test-size", 16,
                    "--retrieval-size", 8, "--zero-shot-per-class", 1, "--image-size", 32)[0] == 0
    monkeypatch.setattr(ttq, "ROOT", tmp_path)
    validation = ("make-data", "shapes", str(tmp_path / "data/shapes_val"), "--train-size", "0", "--test-size", "0",
                  "--retrieval-size", "8", "--zero-shot-per-class", "1", "--image-size", "32", "--seed", "3")
    targets = {"target/zero_shot_48_classes": [">=", 0.0], "target/text_to_image_R@1": [">=", 0.0]}
    monkeypatch.setitem(ttq.TARGETS, "tiny-clip", ttq.Target(
        "configs/tiny/clip_tiny.yaml", targets, lambda checkpoint: {}, "none",
        ("--trainer.callbacks+=time_to_quality.CLIPTargets", "--trainer.callbacks.data", str(tmp_path / "data/shapes_val"),
         "--trainer.max_epochs", "1"), (validation,)))
    result = ttq.run("tiny-clip", 0)
    assert (tmp_path / "data/shapes_val/two_object_test.jsonl").is_file() and result["reached"]
    (validated,) = result["validations"]
    assert 0 <= validated["target/zero_shot_48_classes"] <= 1 and 0 <= validated["target/text_to_image_R@1"] <= 1
