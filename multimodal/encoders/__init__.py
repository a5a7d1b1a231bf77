from multimodal.encoders.audio import AudioEncoder, AudioEncoderConfig, LogMel
from multimodal.encoders.text import TextConfig, TextDecoder, TextEncoder, beam_search, greedy_decode
from multimodal.encoders.vision import ViT, ViTConfig

__all__ = ["AudioEncoder", "AudioEncoderConfig", "LogMel", "TextConfig", "TextDecoder", "TextEncoder", "ViT",
           "ViTConfig", "beam_search", "greedy_decode"]
