import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

import multimodal.nn.attention as attention
from multimodal.nn import MultiHeadAttention, Transformer, TransformerConfig

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
