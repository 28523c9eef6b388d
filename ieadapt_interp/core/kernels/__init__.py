"""Fused GPU kernels (Triton). Importing this package never needs CUDA or triton; check ``fused_available``."""

from .flash_entropy import (
    attention_entropy_reference,
    flash_attention_with_entropy,
    fused_available,
    triton_available,
)

__all__ = [
    "attention_entropy_reference",
    "flash_attention_with_entropy",
    "fused_available",
    "triton_available",
]
