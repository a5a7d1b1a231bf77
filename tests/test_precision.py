"""bf16 autocast and torch.compile change speed, not results: each tower, run both ways, stays within a
stated tolerance of fp32 eager. Padding masks and causal attention are exercised, since they are where a
fast path would differ (a mask dropped under compile, a wrong kernel chosen)."""

import contextlib
import shutil

import pytest
import torch

from multimodal.encoders import ViT, ViTConfig
from multimodal.encoders.audio import AudioEncoder, AudioEncoderConfig
from multimodal.encoders.text import TextConfig, TextDecoder, TextEncoder

TRANSFORMER = dict(dim=32, depth=2, num_heads=4)
# bf16 keeps 8 bits of mantissa (a relative error of 2^-9 per rounding); through two blocks and the
# final norm the outputs (of order 1) move by a few hundredths
BF16_TOLERANCE = 0.05
COMPILE_TOLERANCE = 1e-4  # the same fp32 arithmetic, fused differently


@pytest.fixture(scope="module")
def models() -> dict:
    """name -> (callable, inputs): the three encoders and the decoder, in eval mode, with padded inputs."""
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=32, patch_size=8, channels=3, transformer=TRANSFORMER)).eval()
    audio = AudioEncoder(AudioEncoderConfig(n_mels=80, max_frames=64, num_masks=0, transformer=TRANSFORMER)).eval()
    text = TextEncoder(TextConfig(vocab_size=50, context_length=16, embed_dim=24, transformer=TRANSFORMER)).eval()
    decoder = TextDecoder(TextConfig(vocab_size=50, context_length=16, transformer=TRANSFORMER), memory_dim=32).eval()
    mel, frames = torch.randn(2, 80, 100), torch.tensor([100, 61])
    memory, memory_mask = torch.randn(2, 50, 32), torch.arange(50) < torch.tensor([[50], [31]])
    return {"vit": (vit, (torch.rand(2, 3, 32, 32),)),
            "audio": (lambda m, f: audio.forward_features(m, f)[0], (mel, frames)),
            "text": (text, (torch.randint(3, 50, (2, 16)), torch.tensor([16, 9]))),
            "decoder": (decoder, (torch.randint(3, 50, (2, 12)), memory, memory_mask))}


@pytest.mark.parametrize("name", ["vit", "audio", "text", "decoder"])
@torch.no_grad()
def test_bf16_autocast_stays_close_to_fp32(models, name):
    model, inputs = models[name]
    reference = model(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(*inputs)
    error = (low.float() - reference).abs().max().item()
    assert 0 < error <= BF16_TOLERANCE * reference.abs().max().item()  # > 0: autocast really used bf16


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on a CPU needs a C compiler")
@pytest.mark.parametrize("name", ["vit", "audio", "text", "decoder"])
@torch.no_grad()
def test_compiled_tower_matches_eager(models, name):
    model, inputs = models[name]
    compiled = torch.compile(model, dynamic=False)
    torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=COMPILE_TOLERANCE, rtol=COMPILE_TOLERANCE)


def test_cpu_bf16_autocast_attends_in_float32_and_trains(monkeypatch):
    """CPU bf16 attention kernels are several times slower than float32 ones (the backward above all), so under CPU
    autocast the attention itself runs in float32 while the projections around it use bf16; the output and the
    gradients stay those of fp32 within bf16's tolerance."""
    from multimodal.nn.attention import F as attention_functional
    from multimodal.nn.attention import MultiHeadAttention
    torch.manual_seed(0)
    layer, x = MultiHeadAttention(32, 4), torch.randn(2, 10, 32)
    mask = torch.arange(10) < torch.tensor([[10], [6]])
    seen, sdpa = [], attention_functional.scaled_dot_product_attention
    monkeypatch.setattr(attention_functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(q.dtype) or sdpa(q, k, v, **kw))
    reference = layer(x, key_padding_mask=mask)
    reference_grad = torch.autograd.grad(reference.square().sum(), layer.qkv.weight)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x, key_padding_mask=mask)
    assert low.dtype == torch.bfloat16 and seen == [torch.float32, torch.float32]
    low_grad = torch.autograd.grad(low.float().square().sum(), layer.qkv.weight)[0]
    assert 0 < (low.float() - reference).abs().max() <= BF16_TOLERANCE * reference.abs().max()
    assert (low_grad - reference_grad).abs().max() <= BF16_TOLERANCE * reference_grad.abs().max()


@pytest.mark.parametrize("has_bf16", [False, True])
def test_a_cpu_recipe_in_bf16_trains_in_float32_where_the_cpu_has_no_bf16_instructions(has_bf16, shape_folders,
                                                                                          monkeypatch):
    """Without AVX-512 BF16 or AMX, PyTorch emulates bf16 matrix products about 8x slower than float32 ones, so
    a recipe's bf16-mixed (clip_shapes_cpu.yaml's) runs in float32 there, with a warning; elsewhere as asked."""
    import sys
    from pathlib import Path

    from lightning import LightningDataModule

    from multimodal.cli.train import CLI
    from multimodal.tasks import Task

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: has_bf16)
    monkeypatch.setattr(sys, "argv", ["train"])
    recipe = Path(__file__).parents[1] / "configs/tiny/vit_folder.yaml"
    args = ["--config", str(recipe), "--data.init_args.root", str(shape_folders / "train"),
            "--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed"]
    with pytest.warns(UserWarning, match="no bf16 matrix instructions") if not has_bf16 else contextlib.nullcontext():
        cli = CLI(Task, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args)
    assert cli.trainer.precision == ("bf16-mixed" if has_bf16 else "32-true")
