"""Attention settings for PyTorch models on CUDA, shared by embedding, generation and
training."""
from __future__ import annotations


def use_shape_agnostic_attention(device: str) -> None:
    """Keep PyTorch's scaled-dot-product attention off cuDNN on CUDA: cuDNN builds an
    execution plan for every new sequence shape, and decoding (one more token each step)
    and real training data (a new length each batch) rarely repeat one. On an H100
    with a 3B model this tripled decoding speed (13 -> 41 tokens/s) and training
    throughput on varied lengths (4.7k -> 13.9k tokens/s); fixed shapes lose ~4%.
    Flash and memory-efficient attention remain."""
    if device.startswith("cuda"):
        import torch
        torch.backends.cuda.enable_cudnn_sdp(False)
