import pytest
import torch
from torch import nn

from multimodal.encoders import ViT, ViTConfig
from multimodal.nn import KVCache, MultiHeadAttention, Transformer, TransformerConfig, record_attention, sinusoids

torch.manual_seed(0)
CFG = TransformerConfig(dim=32, depth=2, num_heads=4)


def reference_attention(attn: MultiHeadAttention, x, memory=None, mask=None):
    """softmax(QK^T / sqrt(d)) V written out by hand; mask is (B, T, S) boolean, True = attend."""
    B, T, D = x.shape
    H = attn.num_heads
    if memory is None:
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
    else:
        q, (k, v) = attn.q(x), attn.kv(memory).chunk(2, dim=-1)
    split = lambda t: t.view(B, -1, H, D // H).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / (D // H) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    return attn.proj(out)


def test_self_attention_matches_hand_computation():
    attn = MultiHeadAttention(32, 4)
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(x), reference_attention(attn, x))
    causal = torch.ones(7, 7, dtype=torch.bool).tril().expand(2, 7, 7)
    torch.testing.assert_close(attn(x, causal=True), reference_attention(attn, x, mask=causal))


def test_cross_attention_with_padding_matches_hand_computation():
    attn = MultiHeadAttention(32, 4, kv_dim=24)
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 9, 24)
    keep = torch.tensor([[True] * 9, [True] * 4 + [False] * 5])
    expected = reference_attention(attn, x, memory, mask=keep[:, None, :].expand(2, 5, 9))
    torch.testing.assert_close(attn(x, memory, key_padding_mask=keep), expected)


def test_matches_torch_multihead_attention_with_same_weights():
    ours, theirs = MultiHeadAttention(32, 4), nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(ours.qkv.weight)
        theirs.in_proj_bias.copy_(ours.qkv.bias)
        theirs.out_proj.weight.copy_(ours.proj.weight)
        theirs.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 6, 32)
    keep = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [True] * 5 + [False]])
    expected, _ = theirs(x, x, x, key_padding_mask=~keep, need_weights=False)
    got = ours(x, key_padding_mask=keep)
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_sequence_gives_same_outputs_as_unpadded(causal):
    model = Transformer(CFG).eval()
    x = torch.randn(1, 5, 32)
    padded = torch.cat([x, torch.randn(1, 3, 32)], dim=1)
    keep = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(model(padded, key_padding_mask=keep, causal=causal)[:, :5],
                               model(x, causal=causal), atol=1e-5, rtol=1e-5)


def test_causal_attention_leaks_nothing_from_the_future():
    model = Transformer(CFG)
    x = torch.randn(1, 8, 32, requires_grad=True)
    probe = torch.randn(32)  # a plain sum of a LayerNorm output is constant: its gradient is zero
    (model(x, causal=True)[0, 3] @ probe).backward()
    reached = x.grad[0].abs().sum(-1)
    assert reached[4:].max() == 0 and reached[:4].min() > 0
    x.grad = None
    (model(x)[0, 3] @ probe).backward()  # without causal the future does flow in: the check above can fail
    assert x.grad[0].abs().sum(-1)[4:].min() > 0


def test_kv_cache_decoding_equals_full_forward():
    decoder = Transformer(CFG, cross_dim=24).eval()
    x, memory = torch.randn(2, 6, 32), torch.randn(2, 10, 24)
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[1, 7:] = False
    full = decoder(x, causal=True, memory=memory, memory_mask=keep)
    cache = KVCache()
    first = decoder(x[:, :2], causal=True, memory=memory, memory_mask=keep, cache=cache)  # a prompt of 2 tokens
    steps = [decoder(x[:, t:t + 1], causal=True, memory=memory, memory_mask=keep, cache=cache) for t in range(2, 6)]
    assert len(cache) == 6
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)
    # a chunk of several new tokens after a cached prefix needs the bottom-right aligned triangle
    cache = KVCache()
    decoder(x[:, :3], causal=True, memory=memory, memory_mask=keep, cache=cache)
    rest = decoder(x[:, 3:], causal=True, memory=memory, memory_mask=keep, cache=cache)
    torch.testing.assert_close(rest, full[:, 3:], atol=1e-5, rtol=1e-5)


def test_cache_reorder_follows_beams():
    """Two utterances of two beams each: after reordering, every row goes on from the history it was given, and
    the cross-attention entries, the same for the beams of an utterance, need no copy."""
    decoder = Transformer(CFG, cross_dim=24).eval()
    x, memory = torch.randn(4, 4, 32), torch.randn(2, 10, 24).repeat_interleave(2, dim=0)  # rows 0, 1 | 2, 3
    cache = KVCache()
    decoder(x[:, :3], causal=True, memory=memory, cache=cache)
    cross = {m: kv for m, kv in cache.layers.items() if m.is_cross}
    order = torch.tensor([1, 1, 3, 2])
    cache.reorder(order)
    assert all(cache.layers[m][0] is k and cache.layers[m][1] is v for m, (k, v) in cross.items())
    step = decoder(x[order, 3:], causal=True, memory=memory, cache=cache)
    torch.testing.assert_close(step, decoder(x[order], causal=True, memory=memory)[:, 3:], atol=1e-5, rtol=1e-5)


def test_recording_weights_leaves_outputs_unchanged():
    model = Transformer(CFG).eval()
    x = torch.randn(2, 6, 32)
    keep = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    fast = model(x, key_padding_mask=keep, causal=True)
    with record_attention(model) as maps:
        recorded = model(x, key_padding_mask=keep, causal=True)
    torch.testing.assert_close(recorded, fast, atol=1e-5, rtol=1e-5)
    assert len(maps) == 2
    weights = maps["blocks.0.attn"][0]
    assert weights.shape == (2, 4, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
    assert weights[..., 4:][1].abs().max() == 0  # padding gets no attention
    assert weights.triu(1).abs().max() == 0  # nor does the future
    assert all(m.recorded is None for m in model.modules() if isinstance(m, MultiHeadAttention))


def test_gradient_checkpointing_gives_same_gradients():
    model = Transformer(CFG)
    x = torch.randn(2, 5, 32)
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).square().sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_sinusoids_match_whisper_layout():
    table = sinusoids(10, 8)
    assert table.shape == (10, 8)
    torch.testing.assert_close(table[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(table[3, 0], torch.tensor(3.0).sin())


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_runs_at_another_image_size(pool):
    vit = ViT(ViTConfig(image_size=32, patch_size=8, channels=1, pool=pool, transformer=CFG)).eval()
    assert vit(torch.randn(2, 1, 32, 32)).shape == (2, 32)
    assert vit(torch.randn(2, 1, 48, 48)).shape == (2, 32)
    assert vit.forward_tokens(torch.randn(1, 1, 48, 48)).shape == (1, 36 + (pool == "cls"), 32)



def test_conv_stem_gives_the_patch_grid_and_refuses_other_patch_sizes():
    vit = ViT(ViTConfig(image_size=28, patch_size=4, channels=1, pool="mean", stem="conv", transformer=CFG)).eval()
    convs = [m for m in vit.patch_embed if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((3, 3), (2, 2)), ((3, 3), (2, 2)), ((1, 1), (1, 1))]
    assert vit.forward_tokens(torch.randn(2, 1, 28, 28)).shape == (2, 49, 32)  # 28 -> 14 -> 7: the 4x4 patch grid
    # each token sees only its neighbourhood: a pixel changed in one corner leaves the far corner's embedding alone
    image = torch.randn(1, 1, 28, 28)
    changed = image.clone()
    changed[..., 0, 0] += 5
    difference = (vit.patch_embed(changed) - vit.patch_embed(image)).abs().squeeze(0).sum(0)  # (7, 7)
    assert difference[0, 0] > 0 and difference[2:, 2:].max() == 0
    for patch in (6, 1):
        with pytest.raises(ValueError, match="power of 2"):
            ViTConfig(image_size=24, patch_size=patch, stem="conv", transformer=CFG)
    with pytest.raises(ValueError, match="stem must be"):
        ViTConfig(stem="hybrid")


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_color_apart_reads_a_shape_alike_in_every_colour_and_still_tells_the_colours(stem):
    vit = ViT(ViTConfig(image_size=16, patch_size=4, channels=3, pool="mean", stem=stem, color="apart",
                        transformer=CFG)).eval()
    red, green = torch.full((1, 3, 16, 16), -1.0), torch.full((1, 3, 16, 16), -1.0)
    red[:, 0, 4:12, 6:10], green[:, 1, 4:12, 6:10] = 0.8, 0.8  # one bar, drawn red and drawn green
    # the colour of a patch reaches its own token only: the bar's colour leaves the corner patches' embeddings alone
    difference = (vit.embed_patches(red) - vit.embed_patches(green)).abs().sum(1).squeeze(0)  # (4, 4)
    assert difference[1:3, 1:3].min() > 0 and difference[0, 0] == difference[3, 3] == 0
    assert vit(red).shape == (1, 32)
    with torch.no_grad():  # without the colour embedding the two bars are one: the stem never sees the colour
        vit.color_embed.weight.zero_()
    assert torch.equal(vit.embed_patches(red), vit.embed_patches(green))
    with pytest.raises(ValueError, match="needs 3 channels"):
        ViTConfig(channels=1, color="apart")
    with pytest.raises(ValueError, match="color must be"):
        ViTConfig(color="hsv")
