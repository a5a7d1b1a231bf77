"""The shared blocks. Imports only torch."""

from multimodal.nn.attention import KVCache, MultiHeadAttention, record_attention
from multimodal.nn.block import MLP, TransformerBlock
from multimodal.nn.pooling import AttentionPool
from multimodal.nn.positions import resize_grid_positions, sinusoids
from multimodal.nn.transformer import Transformer, TransformerConfig

__all__ = ["AttentionPool", "KVCache", "MLP", "MultiHeadAttention", "Transformer", "TransformerBlock", "TransformerConfig",
           "record_attention", "resize_grid_positions", "sinusoids"]
