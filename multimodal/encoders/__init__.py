from multimodal.encoders.vision import ViT, ViTConfig

__all__ = ["ViT", "ViTConfig"]
