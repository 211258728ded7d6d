"""Inference precision: fp32, bf16/fp16 weights where the hardware runs them natively, or
ONNX Runtime (fp32, or int8 when asked for) on a CPU.

``auto`` picks reduced precision on a CUDA GPU (bf16 where supported, else fp16) and on a CPU
with native bf16 (AVX512-BF16 or AMX), and fp32 elsewhere: without native support torch
emulates bf16 and runs slower than fp32. A reduced precision chosen by ``auto`` is guarded:
a fixed set of calibration texts is embedded in fp32 and in the reduced precision, and the
model stays fp32 if any pair's cosine is below ``MIN_COSINE``. A forced ``bf16``/``fp16`` is
used as asked. Only the transformer is cast; pooling, the head and normalisation run in fp32.

On a CPU with onnx and onnxruntime installed, ``auto`` also builds the whole pipeline as an
ONNX graph (:mod:`jammi_sql.inference.onnx_backend`) and keeps it when its embeddings of the
calibration texts stay at cosine >= 0.9999 to torch fp32 and it embeds them in less than
90% of the time torch takes at the precision chosen above. ``onnx-int8`` (dynamic int8) is
never chosen by ``auto``: it moves embeddings too far (min cosine 0.971 on the calibration
texts with all-MiniLM-L6-v2).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..defaults import MIN_COSINE
from .encoder import Encoder

ONNX_MIN_COSINE = 0.9999  # ONNX Runtime fp32 against torch fp32, on CALIBRATION
ONNX_MARGIN = (
    0.9  # auto takes ONNX Runtime only when it embeds CALIBRATION in < 90% of torch's time
)
TIMING_COPIES = 4  # CALIBRATION embedded this many times over per timing
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


def auto_onnx(device: torch.device) -> bool:
    """Whether ``auto`` tries ONNX Runtime: on a CPU, where onnx and onnxruntime are installed."""
    from importlib.util import find_spec

    return device.type == "cpu" and all(find_spec(m) for m in ("onnx", "onnxruntime"))


def seconds(encoder: Encoder, texts: list[str], repeats: int = 2) -> float:
    """The best of ``repeats`` timings of embedding ``texts``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(texts)
        best = min(best, time.perf_counter() - start)
    return best


def settle(encoder: Encoder, requested: str) -> Encoder:
    """The encoder at the precision asked for (``auto``: reduced where it pays and passes;
    ONNX Runtime fp32 where it is faster still and keeps cosine >= ONNX_MIN_COSINE to torch
    fp32; int8 only when asked for)."""
    if requested in ("onnx", "onnx-int8"):
        from .onnx_backend import attach

        return attach(encoder, int8=requested == "onnx-int8")
    if requested != "auto":
        return encoder if requested == "fp32" else cast(encoder, requested)
    name = reduced(encoder.device)
    if not auto_onnx(encoder.device):
        return guarded(encoder, name) if name else encoder
    from .onnx_backend import Runtime

    texts = list(CALIBRATION)
    reference = encoder.encode(texts)  # torch fp32
    runtime = Runtime(encoder, int8=False)
    encoder.runtime = runtime
    onnx_fidelity = min_cosine(reference, encoder.encode(texts))
    onnx_time = seconds(encoder, texts * TIMING_COPIES)
    encoder.runtime = None
    encoder = guarded(encoder, name) if name else encoder
    torch_time = seconds(encoder, texts * TIMING_COPIES)
    if onnx_fidelity >= ONNX_MIN_COSINE and onnx_time < torch_time * ONNX_MARGIN:
        encoder.runtime, encoder.precision, encoder.backend = runtime, "onnx", "onnxruntime"
        encoder.fidelity = onnx_fidelity
    return encoder
