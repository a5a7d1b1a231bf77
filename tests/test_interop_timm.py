import pytest
import timm
import torch
from safetensors.torch import save_file

from multimodal.errors import InputError
from multimodal.interop.timm import load_timm_vit
from multimodal.models import Classifier

torch.manual_seed(0)


def reference_models():
    yield timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    yield timm.create_model("vit_small_patch32_224", pretrained=False, num_classes=7)
    # the mean-pool layout of timm's *_gap_* models: no class token, norm before pooling
    yield timm.models.VisionTransformer(img_size=64, patch_size=16, embed_dim=128, depth=2, num_heads=2, num_classes=5,
                                        class_token=False, global_pool="avg", fc_norm=False)


@pytest.mark.parametrize("reference", list(reference_models()), ids=["tiny16-cls", "small32-cls", "gap-mean"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_vit_logits_and_features_match(reference, suffix, tmp_path):
    reference.eval()
    for p in reference.parameters():  # random init leaves the head at zero: make logits informative
        torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 and p.shape[0] < 20 else None
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    ours = load_timm_vit(path)
    size = reference.patch_embed.img_size[0]
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        expected_features = reference.forward_features((images - 0.5) / 0.5)
        expected = reference((images - 0.5) / 0.5)
        features = ours.vit.forward_tokens((images - ours.mean) / ours.std)
        logits = ours(images)
    assert (features - expected_features).abs().max() <= 1e-4
    assert (logits - expected).abs().max() <= 1e-4
    assert expected.abs().max() > 1e-2  # the comparison is not between two near-zero tensors


def test_converted_model_takes_class_names(tmp_path):
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3)
    torch.save(reference.state_dict(), tmp_path / "vit.pth")
    model = load_timm_vit(tmp_path / "vit.pth", class_names=["cat", "dog", "fox"])
    assert model.class_names == ["cat", "dog", "fox"] and isinstance(model, Classifier)
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 3)


def test_mismatched_weights_are_refused_with_the_keys_listed(tmp_path):
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3).state_dict()
    del state["blocks.0.norm1.weight"]
    state["blocks.1.attn.extra"] = torch.zeros(1)
    state["blocks.2.mlp.fc2.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(InputError) as error:
        load_timm_vit(tmp_path / "broken.pth")
    message = str(error.value)
    assert "broken.pth" in message and "blocks.0.norm1.weight" in message
    assert "blocks.1.attn.extra" in message and "blocks.2.mlp.3.bias (5,) vs (192,)" in message
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.pth: not a readable weights file"):
        load_timm_vit(tmp_path / "junk.pth")
