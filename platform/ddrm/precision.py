"""Numeric precision of the compute-heavy stages: ``train.precision: fp32 | bf16``.

``bf16`` runs DDRM's denoisers (training forward/backward and every reverse step of inference) under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matmuls in bf16, master weights and Adam state in
fp32 (autocast never casts parameters), and the denoisers' outputs cast back to fp32 before anything
else uses them, so the losses (BPR's log-sigmoid, the MSE, the reweighting), the posterior-mean steps,
the scores and the ranking all stay fp32.

Only DDRM's denoisers use it (:data:`BF16_STAGES`): the backends (MF, LightGCN, SGL) and the standalone
models (not wired, not measured) train in fp32 under ``train.precision: bf16`` too, so a bf16 run reuses the
fp32 backend's cache entry. Measured with ``bench/precision.py``
(docs/results/benchmarks/precision_cpu_avx512_bf16.json; AMD EPYC with avx512_bf16, 1 thread, torch 2.13, a shared
and busy machine, medians of 3 interleaved repetitions):

- DDRM-MF at the released settings: a training epoch 54.6 s fp32 -> 15.9 s bf16 (3.4x), a validation pass
  with 20 reverse steps 1.71 s -> 1.06 s (1.6x; ranking stays fp32); ``torch.mm`` 56 -> 183 GFLOP/s;
- MF: nothing in its loss is an autocast op (embedding gathers, elementwise products, softplus), so under
  bf16 autocast it computes bit-identical gradients; epoch 1.27 s vs 0.95 s is noise — nothing to gain;
- LightGCN / SGL: propagation is a sparse CSR product, which has no bf16 kernel on CPU (autocast fails
  with ``"addmm_out_sparse_csr_impl_mkl" not implemented for 'BFloat16'``); the bf16 product that exists
  (COO) is 5.8x slower than the fp32 CSR one (28.8 vs 5.0 ms per layer). Not measured on CUDA.

The fast path needs bf16 hardware: on CPU the ``avx512_bf16`` or ``amx_bf16`` instructions, on CUDA a
GPU with native bf16 (Ampere or newer). Elsewhere bf16 still runs (one warning line says so) but is
emulated: on the host above with oneDNN limited to ``AVX512_CORE`` (AVX-512 without bf16 instructions) a
bf16 ``torch.mm`` ran at 0.6-1.0x the fp32 rate, limited to ``AVX2`` at 0.04x.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import ContextManager

import torch

from .config import PRECISIONS  # ("fp32", "bf16"), validated as train.precision

__all__ = ["PRECISIONS", "BF16_STAGES", "PrecisionWarning", "autocast", "describe", "native_bf16",
           "stage_precision", "warn_if_emulated"]

BF16_STAGES: tuple[str, ...] = ("ddrm",)  # stages that autocast under bf16; the rest stay fp32
CPU_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")

_warned: set[str] = set()


class PrecisionWarning(UserWarning):
    """bf16 was requested on a device without a native bf16 fast path."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has bf16 arithmetic in hardware (CPU: avx512_bf16/amx_bf16; CUDA: native bf16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)
    return False


def stage_precision(precision: str, stage: str) -> str:
    """The precision ``stage`` (``backend``, ``ddrm``, ``model``) actually runs at under ``train.precision``."""
    return precision if stage in BF16_STAGES else "fp32"


def autocast(precision: str, device: torch.device | str) -> ContextManager:
    """A context running eligible ops at ``precision``: ``nullcontext`` for fp32, bf16 autocast for bf16.

    Parameters keep their dtype (fp32); ops autocast computes in bf16 (matmuls, linear layers) return bf16
    tensors, so callers cast results back with ``.float()`` where fp32 matters.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def warn_if_emulated(precision: str, device: torch.device | str) -> None:
    """One warning per process and device type when bf16 is asked for on a device without native bf16."""
    device = torch.device(device)
    if precision != "bf16" or native_bf16(device) or device.type in _warned:
        return
    _warned.add(device.type)
    what = "CPU without avx512_bf16/amx_bf16" if device.type == "cpu" else f"{device.type} device without native bf16"
    warnings.warn(f"train.precision bf16 on a {what}: runs anyway, but emulated with no fast path (a bf16 GEMM "
                  f"measured 0.6-1.0x the fp32 rate with AVX-512, 0.04x with AVX2 only); fp32 is faster here",
                  PrecisionWarning, stacklevel=2)


def describe(precision: str, device: torch.device | str) -> dict[str, object]:
    """What a run records in ``RunResult.info``: requested precision, per-stage precision, native support."""
    return {"precision": precision,
            "precision_stages": {stage: stage_precision(precision, stage) for stage in ("backend", "ddrm", "model")},
            "precision_native_bf16": native_bf16(device)}
