"""OpenCLIP ViT checkpoints -> CLIP: parity on small random reference models."""

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from safetensors.torch import save_file  # noqa: E402

from multimodal.errors import InputError  # noqa: E402
from multimodal.interop.open_clip import OPENAI_MEAN, OPENAI_STD, load_open_clip, logits  # noqa: E402
from multimodal.models import CLIP  # noqa: E402
from multimodal.tokenizers import CLIPTokenizer  # noqa: E402

TEXTS = ["a red circle", "a small green star left of a large blue square", "Two cats!"]


def tiny_clip(quick_gelu: bool):
    torch.manual_seed(0)
    vision = dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32)
    text = dict(context_length=20, vocab_size=49408, width=64, heads=2, layers=2)
    return open_clip.model.CLIP(32, vision, text, quick_gelu=quick_gelu).eval()


def check_parity(reference, model, image_size: int, context_length: int):
    images = torch.rand(2, 3, image_size, image_size)
    mean, std = torch.tensor(OPENAI_MEAN).view(-1, 1, 1), torch.tensor(OPENAI_STD).view(-1, 1, 1)
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=context_length)(TEXTS)
    with torch.no_grad():
        image = reference.encode_image((images - mean) / std)
        text = reference.encode_text(tokens)
        expected = reference.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        ours_image = model.encode_image(images, normalize=False)
        ours_text = model.encode_text(TEXTS, normalize=False)
        ours = logits(model, images, TEXTS)
    assert (ours_image - image).abs().max() <= 1e-4
    assert (ours_text - text).abs().max() <= 1e-4
    assert (ours - expected).abs().max() <= 1e-4
    assert image.abs().max() > 1e-1 and text.abs().max() > 1e-1


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["quickgelu", "gelu"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_open_clip_embeddings_and_logits_match(quick_gelu, suffix, tmp_path):
    reference = tiny_clip(quick_gelu)
    path = tmp_path / f"clip{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, path)
    else:  # as open_clip's training saves it: {"epoch", "state_dict": {"module." + key}} from DDP
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = load_open_clip(path, activation="quick_gelu" if quick_gelu else "gelu", text_heads=2, vision_heads=2)
    assert isinstance(model, CLIP)
    check_parity(reference, model, 32, 20)


def test_real_vit_b_32_layout(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32").eval()  # GELU (the OpenAI weights would be ViT-B-32-quickgelu)
    torch.save(reference.state_dict(), tmp_path / "vit_b_32.pt")
    model = load_open_clip(tmp_path / "vit_b_32.pt", activation="gelu")
    assert model.vit.cfg.transformer.num_heads == 12 and model.text.cfg.transformer.num_heads == 8
    check_parity(reference, model, 224, 77)


def test_clip_tokenizer_matches_open_clip():
    tok = CLIPTokenizer()
    reference = open_clip.get_tokenizer("ViT-B-32")
    tokens, lengths = tok.encode_batch(TEXTS, 77)
    expected = reference(TEXTS)
    assert torch.equal(tokens, expected[:, :tokens.shape[1]]) and (expected[:, tokens.shape[1]:] == 0).all()
    assert lengths.tolist() == [int(row.argmax()) + 1 for row in expected]  # <eos> = the highest id, last
    assert tok.vocab_size == 49408 and tok.decode(tokens[0]) == "a red circle"
    assert tok.to_dict() == {"type": "open_clip_bpe"}


def test_mismatched_clip_weights_are_refused(tmp_path):
    state = tiny_clip(True).state_dict()
    del state["visual.ln_pre.weight"]
    state["transformer.resblocks.1.attn.extra"] = torch.zeros(1)
    state["ln_final.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(InputError) as error:
        load_open_clip(tmp_path / "broken.pt", text_heads=2, vision_heads=2)
    message = str(error.value)
    assert "broken.pt" in message and "vit.norm_pre.weight" in message
    assert "text.transformer.blocks.1.attn.extra" in message
    assert "text.transformer.norm.bias (5,) vs (64,)" in message


def test_zero_shot_and_retrieval_run_on_a_converted_checkpoint(tmp_path):
    from PIL import Image

    from multimodal.inference.retrieval import build_index, query
    from multimodal.inference.zero_shot import zero_shot

    torch.save(tiny_clip(True).state_dict(), tmp_path / "clip.pt")
    model = load_open_clip(tmp_path / "clip.pt", text_heads=2, vision_heads=2)
    for name, color in [("cat", (200, 30, 30)), ("dog", (30, 200, 30))]:
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("RGB", (40, 32), color).save(tmp_path / "images" / name / "a.png")
    result = zero_shot(model, [tmp_path / "images"], quiet=True)
    assert len(result["predictions"]) == 2
    build_index(model, [tmp_path / "images"], tmp_path / "index", quiet=True)
    assert len(query(model, tmp_path / "index", text="a photo of a cat", top_k=2)["results"]) == 2
