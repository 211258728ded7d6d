"""Inference precision: fp32, or bf16/fp16 weights where the hardware runs them natively.

``auto`` picks reduced precision on a CUDA GPU (bf16 where supported, else fp16) and on a CPU
with native bf16 (AVX512-BF16 or AMX), and fp32 elsewhere: without native support torch
emulates bf16 and runs slower than fp32. A reduced precision chosen by ``auto`` is guarded:
a fixed set of calibration texts is embedded in fp32 and in the reduced precision, and the
model stays fp32 if any pair's cosine is below ``MIN_COSINE``. A forced ``bf16``/``fp16`` is
used as asked. Only the transformer is cast; pooling, the head and normalisation run in fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..defaults import MIN_COSINE
from .encoder import Encoder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Short and long, plain and technical, numbers, code, other scripts: the kinds of text whose
# embeddings a lower precision could move most.
CALIBRATION = (
    "hello",
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Error KS-503: the VPN client could not reach the gateway (timeout after 30 s).",
    "SELECT id, title FROM tickets WHERE status = 'open' ORDER BY created_at DESC LIMIT 10;",
    "3.14159 2.71828 1.41421 0.57721 1729 65537 2147483647",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "def add(a, b):\n    return a + b",
    "Mutations in the BRCA1 gene increase the lifetime risk of breast and ovarian cancer; "
    "carriers are offered screening from the age of thirty and may consider preventive surgery. "
    * 6,
    "Solar panels convert sunlight into electricity, and lithium-ion batteries store the "
    "energy for use at night; grid operators balance supply and demand minute by minute. " * 4,
    "?!",
)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX; ARM BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def reduced(device: torch.device) -> str | None:
    """The reduced precision ``auto`` tries on this device, or None (fp32)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else None


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest row-wise cosine between two (n, d) arrays."""
    dots = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float((dots / np.maximum(norms, 1e-12)).min())


def cast(encoder: Encoder, name: str) -> Encoder:
    encoder.transformer.to(DTYPES[name])
    encoder.precision = name
    return encoder


def guarded(encoder: Encoder, name: str, threshold: float = MIN_COSINE) -> Encoder:
    """The encoder in ``name`` if the calibration texts keep cosine >= threshold to fp32,
    else in fp32. ``encoder.fidelity`` records the lowest cosine measured."""
    texts = list(CALIBRATION)
    reference = encoder.encode(texts)
    weights = {k: v.detach().clone() for k, v in encoder.transformer.state_dict().items()}
    got = cast(encoder, name).encode(texts)
    encoder.fidelity = min_cosine(reference, got)
    if encoder.fidelity < threshold:  # back to the exact fp32 weights
        cast(encoder, "fp32").transformer.load_state_dict(weights)
    return encoder


def settle(encoder: Encoder, requested: str) -> Encoder:
    """The encoder at the precision asked for (``auto``: reduced where it pays and passes)."""
    if requested == "auto":
        name = reduced(encoder.device)
        return guarded(encoder, name) if name else encoder
    return encoder if requested == "fp32" else cast(encoder, requested)
