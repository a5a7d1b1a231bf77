import pytest
import torch
import yaml
from conftest import ROOT
from torch.nn.attention.flex_attention import flex_attention

import multimodal.nn.attention as attention
from multimodal.data.audio import SAMPLE_RATE
from multimodal.data.speech import collate_speech
from multimodal.nn import MultiHeadAttention, Transformer, TransformerConfig
from multimodal.tasks import SpeechRecognizer
from multimodal.tokenizers import CharTokenizer

torch.manual_seed(0)


def test_window_covering_the_whole_sequence_equals_full_attention():
    full = Transformer(TransformerConfig(dim=32, depth=2, num_heads=4)).eval()
    local = Transformer(TransformerConfig(dim=32, depth=2, num_heads=4, attention="local", window=9)).eval()
    local.load_state_dict(full.state_dict())
    x = torch.randn(2, 10, 32)
    keep = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    for causal in (False, True):
        torch.testing.assert_close(local(x, key_padding_mask=keep, causal=causal),
                                   full(x, key_padding_mask=keep, causal=causal), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_sees_only_its_window(causal):
    attn = MultiHeadAttention(16, 2, window=3)
    x = torch.randn(1, 12, 16, requires_grad=True)
    attn(x, causal=causal)[0, 6].sum().backward()
    reached = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert reached == ([3, 4, 5, 6] if causal else [3, 4, 5, 6, 7, 8, 9])


def test_flex_path_equals_masked_sdpa(monkeypatch):
    # on a GPU local attention runs through FlexAttention; its eager form runs on the CPU too
    monkeypatch.setattr(attention, "_compiled_flex_attention", lambda: flex_attention)
    attn = MultiHeadAttention(32, 4, window=5)
    x = torch.randn(2, 40, 32)
    keep = torch.ones(2, 40, dtype=torch.bool)
    keep[1, 30:] = False
    with torch.no_grad():  # eager FlexAttention has no backward on the CPU
        q, k, v = attn._heads(attn.qkv(x), 3)
    for causal, padding in ((False, None), (True, None), (False, keep)):
        flex = attn._flex_local(q, k, v, padding, causal)
        mask = attn._mask(padding, causal, 40, 40, x.device, window=5)
        sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        valid = slice(None) if padding is None else keep[:, None, :, None].expand_as(sdpa)
        torch.testing.assert_close(flex[valid], sdpa[valid], atol=1e-5, rtol=1e-5)


def test_linformer_attention_is_linear_in_length_and_refuses_what_it_cannot_do():
    model = Transformer(TransformerConfig(dim=32, depth=2, num_heads=4, attention="linformer", low_rank=8, max_len=64))
    assert model(torch.randn(2, 50, 32)).shape == (2, 50, 32)
    attn = model.blocks[0].attn
    assert attn._compress(*attn._heads(torch.randn(1, 64, 64), 2), None, False)[0].shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="cannot be causal"):
        model(torch.randn(1, 10, 32), causal=True)
    with pytest.raises(ValueError, match="longer than .* max_len 64"):
        model(torch.randn(1, 65, 32))
    with pytest.raises(ValueError, match="attention must be"):
        TransformerConfig(attention="sparse")


def tone_speech(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each character a 60 ms tone of its own pitch (a space: silence), so that the encoder must listen
    to the audio; (B, samples) zero-padded waveforms and (B,) lengths."""
    t = torch.arange(960) / SAMPLE_RATE
    alphabet = sorted(set("".join(texts)) - {" "})
    tone = {c: 0.3 * torch.sin(2 * torch.pi * (200 + 150 * i) * t) for i, c in enumerate(alphabet)} | {" ": 0 * t}
    waveforms, lengths, _ = collate_speech([(torch.cat([tone[c] for c in text]), text) for text in texts])
    return waveforms, lengths


@pytest.mark.parametrize("variant", [{}, {"attention": "local", "window": 8},
                                     {"attention": "linformer", "low_rank": 16}], ids=["full", "local", "linformer"])
def test_each_attention_variant_trains_the_tiny_speech_model(variant):
    """The tiny speech recipe with the variant in its audio encoder: 40 steps on one batch lower the loss.
    Local windows of 8 frames (160 ms) and a rank of 16 are below the clips' 21 to 33 encoder frames, so
    both differ from full attention here."""
    recipe = yaml.safe_load((ROOT / "configs/tiny/asr_tiny.yaml").read_text())["model"]["init_args"]
    encoder = recipe["encoder"]
    # linformer's projection covers every frame the encoder takes; no SpecAugment: the batch stays fixed
    encoder = {**encoder, "num_masks": 0, "transformer": {**encoder["transformer"], "max_len": encoder["max_frames"],
                                                          **variant}}
    texts = ["seven three", "one nine four", "two six", "eight five"]
    waveforms, lengths = tone_speech(texts)
    torch.manual_seed(0)
    model = SpeechRecognizer(encoder=encoder, decoder=recipe["decoder"], ctc_weight=recipe["ctc_weight"],
                             tokenizer=CharTokenizer.from_texts(texts).to_dict())
    attn = model.model.encoder.transformer.blocks[0].attn
    assert (attn.window, attn.compress is not None) == (variant.get("window"), "low_rank" in variant)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"])
    losses = []
    for _ in range(40):
        loss = model.losses(waveforms, lengths, texts)["loss"]
        assert torch.isfinite(loss)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0], losses
