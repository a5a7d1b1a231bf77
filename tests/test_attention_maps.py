"""scripts/attention.py for CLIP captions and images and for speech, checked against attention computed
here by hand from the checkpoints' weights. The classifier's image maps are tested in test_classification.py.

The models are built, not trained: what is checked (which positions and layers are read, shapes, sums,
causality) holds for any weights, and building takes a fraction of a second."""

import json

import numpy as np
import pytest
import torch
from conftest import run_main, run_script
from PIL import Image
from test_interop_export import save_checkpoint as save

from multimodal.data.audio import SAMPLE_RATE, load_audio, write_audio
from multimodal.inference.attention_maps import speech_attention, text_pooling_weights
from multimodal.loading import load_model
from multimodal.models import CLIP, SpeechToText
from multimodal.tasks import ImageClassifier, ImageTextContrastive, SpeechRecognizer
from multimodal.tokenizers import BPETokenizer, CharTokenizer

CAPTIONS = ["a small red star left of a large blue circle", "a gray cross"]
VIT = {"image_size": 32, "patch_size": 8, "transformer": {"dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}}


def manual_attention(attn, x, memory=None, causal=False) -> torch.Tensor:
    """Head-averaged softmax(q k^T / sqrt(d)) of one attention layer, from its projections alone: (B, T, S)."""
    D, H = x.shape[-1], attn.num_heads
    q, k = (attn.q(x), attn.kv(memory)[..., :D]) if memory is not None else attn.qkv(x)[..., :2 * D].chunk(2, dim=-1)
    q, k = (t.unflatten(-1, (H, D // H)).transpose(1, 2) for t in (q, k))  # (B, H, T or S, D/H)
    scores = q @ k.transpose(-2, -1) * (D // H) ** -0.5
    if causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(dim=-1).mean(dim=1)


def attention_inputs(layers, call) -> list[tuple]:
    """The (queries, memory) each attention layer was given during ``call()``, in call order."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, *args, None)[:3])) for m in layers]
    try:
        with torch.no_grad():
            call()
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("clip_maps")
    tokenizer = BPETokenizer.train(CAPTIONS * 10 + ["a blue star", "a large red circle"] * 10, 300)
    model = ImageTextContrastive(VIT, {"context_length": 32, "transformer": {"dim": 32, "depth": 2, "num_heads": 2}},
                                 embed_dim=16, tokenizer=tokenizer.to_dict())
    rng = np.random.default_rng(0)
    for name in ("noise", "other"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp / f"{name}.png")
    return save(model, tmp / "clip.ckpt"), tmp


@pytest.fixture(scope="module")
def asr(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("asr_maps")
    model = SpeechRecognizer(
        encoder=dict(num_masks=0, max_frames=100, transformer=dict(dim=32, depth=2, num_heads=2, mlp_ratio=2.0)),
        decoder=dict(context_length=12, transformer=dict(dim=32, depth=2, num_heads=2, mlp_ratio=2.0)),
        tokenizer=CharTokenizer(list("abcdef ")).to_dict())
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    (tmp / "clips").mkdir()
    write_audio(tmp / "tone.wav", 0.3 * torch.sin(2 * torch.pi * 440 * t), SAMPLE_RATE)  # 1 s: 100 mel frames
    write_audio(tmp / "clips/chirp.flac", 0.3 * torch.sin(2 * torch.pi * (200 + 900 * t[:12_345]) * t[:12_345]),
                SAMPLE_RATE)  # 77 mel frames: odd, the stride-2 conv gives 39
    return save(model, tmp / "asr.ckpt"), tmp


def test_clip_maps_images_and_the_tokens_the_text_tower_pools(clip, tmp_path):
    checkpoint, data = clip
    args = ["--text", CAPTIONS[0], "--text", CAPTIONS[1], "--out", tmp_path, "--json"]
    result = json.loads(run_script("attention", "--checkpoint", checkpoint, data, *args).stdout)
    images, captions = result[:2], result[2:]
    assert [r["input"] for r in images] == [str(data / "noise.png"), str(data / "other.png")]
    for r in images:
        for name in ("rollout", "last"):
            grid = torch.tensor(r[name])
            assert grid.shape == (4, 4) and abs(grid.sum().item() - 1) < 1e-4
    model = load_model(checkpoint, expect=CLIP)
    assert [r["caption"] for r in captions] == CAPTIONS
    for r in result:
        with Image.open(r["png"]) as png:
            assert png.size[0] > 300
    for r in captions:
        tokens, weights = r["tokens"], torch.tensor(r["weights"])
        assert tokens[0] == "<sos>" and tokens[-1] == "<eos>" and "".join(tokens[1:-1]) == r["caption"]
        assert len(weights) == len(tokens) and abs(weights.sum().item() - 1) < 1e-5
        # the last layer's head-averaged attention row of <eos>, from its q and k projections; the caption
        # alone here, padded in the script's batch
        ids, _ = model.tokenizer.encode_batch([r["caption"]], 32)
        (attn, x, _), = attention_inputs([model.text.transformer.blocks[-1].attn], lambda ids=ids: model.text(ids))
        torch.testing.assert_close(weights, manual_attention(attn, x, causal=True)[0, -1], atol=1e-5, rtol=1e-4)


def test_text_pooling_is_causal_and_reads_each_captions_own_eos(clip):
    model = load_model(clip[0], expect=CLIP)
    tokens, lengths = model.tokenizer.encode_batch(CAPTIONS, 32)
    weights = text_pooling_weights(model.text, tokens, lengths)
    short = int(lengths[1])
    assert short < tokens.shape[1] and weights[1, short:].abs().max() == 0  # nothing past <eos>: padding
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    alone = text_pooling_weights(model.text, *model.tokenizer.encode_batch(CAPTIONS[1:], 32))
    torch.testing.assert_close(weights[1, :short], alone[0], atol=1e-6, rtol=1e-5)


def test_speech_alignment_is_the_decoders_cross_attention_over_encoder_frames(asr, tmp_path):
    checkpoint, data = asr
    result = json.loads(run_script("attention", "--checkpoint", checkpoint, data / "tone.wav", data / "clips",
                                   "--out", tmp_path, "--json").stdout)
    assert [r["input"] for r in result] == [str(data / "tone.wav"), str(data / "clips/chirp.flac")]
    model = load_model(checkpoint, expect=SpeechToText)
    tok = model.tokenizer
    for r, frames in zip(result, (100, 77)):
        with Image.open(r["png"]) as png:
            assert png.size[0] >= 600
        alignment = torch.tensor(r["alignment"])
        assert r["tokens"] and alignment.shape == (len(r["tokens"]), (frames + 1) // 2) != (len(r["tokens"]),) * 2
        torch.testing.assert_close(alignment.sum(-1), torch.ones(len(r["tokens"])))
        assert r["text"] == "".join(t for t in r["tokens"] if t != "<eos>")
        # the cross-attention of every decoder layer, from its q and kv projections, averaged over heads and layers
        memory, _ = model.encoder(load_audio(r["input"])[None])
        inputs = torch.tensor([[tok.sos, *tok.encode("".join(r["tokens"][:-1]))]])
        seen = attention_inputs([b.cross for b in model.decoder.transformer.blocks],
                                lambda inputs=inputs, memory=memory: model.decoder(inputs, memory))
        expected = torch.stack([manual_attention(attn, x, mem)[0] for attn, x, mem in seen]).mean(0)
        assert len(seen) == 2 and expected.shape == alignment.shape
        torch.testing.assert_close(alignment, expected, atol=1e-5, rtol=1e-4)


def test_an_empty_transcript_gives_one_eos_row():
    torch.manual_seed(0)
    model = SpeechToText({"encoder": dict(num_masks=0, max_frames=100, transformer=dict(dim=16, depth=1, num_heads=2)),
                          "decoder": dict(context_length=8, transformer=dict(dim=16, depth=1, num_heads=2))},
                         CharTokenizer(list("ab"))).eval()
    with torch.no_grad():  # every position predicts <eos>
        model.decoder.transformer.norm.weight.zero_()
        model.decoder.transformer.norm.bias.fill_(1.0)
        model.decoder.token_embedding.weight[model.tokenizer.eos] = 1.0
    result = speech_attention(model, torch.randn(8_000))
    assert result.text == "" and result.tokens == ["<eos>"] and result.alignment.shape == (1, 25)
    assert result.mel.shape == (80, 50) and result.stride == 2


def test_wrong_input_kinds_are_refused(clip, asr, tmp_path):
    classifier = save(ImageClassifier(VIT, class_names=["a", "b"]), tmp_path / "classifier.ckpt")
    (clip_checkpoint, images), (asr_checkpoint, audio) = clip, asr
    cases = [((classifier, images, "--text", "a red star"), f"{classifier}: --text needs a CLIP checkpoint; "
                                                            f"this is a Classifier"),
             ((asr_checkpoint, audio / "tone.wav", "--text", "a"), "this is a SpeechToText"),
             ((classifier, audio / "tone.wav"), f"{audio / 'tone.wav'}: an audio file, but a Classifier "
                                                f"checkpoint draws attention maps for image inputs"),
             ((clip_checkpoint, audio / "tone.wav"), "an audio file, but a CLIP checkpoint"),
             ((asr_checkpoint, images / "noise.png"), "an image file, but a SpeechToText checkpoint draws "
                                                      "attention maps for audio inputs"),
             ((asr_checkpoint, images), f"{images}: no audio files found"),
             ((clip_checkpoint, audio / "clips"), "no image files found")]
    for (checkpoint, *args), message in cases:
        rc, _, err = run_main("attention", "--checkpoint", checkpoint, *args, "--out", tmp_path)
        assert rc == 2 and message in err, (args, err)
    assert not list(tmp_path.glob("*.png"))
