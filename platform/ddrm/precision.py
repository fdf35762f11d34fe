"""Numeric precision of the compute-heavy stages: ``train.precision: fp32 | bf16``.

``bf16`` runs the dense MLPs of two kinds of stage (:data:`BF16_STAGES`) under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matmuls in bf16, master weights and Adam state in fp32
(autocast never casts parameters), and the MLPs' outputs cast back to fp32 before anything else uses them.

- ``ddrm``: DDRM's denoisers (training forward/backward and every reverse step of inference); the losses
  (BPR's log-sigmoid, the MSE, the reweighting), the posterior-mean steps, the scores and the ranking stay fp32;
- ``model``: the standalone models that declare ``supports_bf16`` (:func:`model_supports_bf16`): Mult-VAE
  (encoder after its sparse first layer, decoder; the KL, log-softmax likelihood and scores stay fp32) and
  DiffRec (the denoiser in training and at every reverse step; the MSE, posterior-mean steps and scores stay
  fp32). CDAE, AdaGCL and the closed-form EASE / ItemKNN / MostPop do not declare it and run fp32 under
  ``train.precision: bf16`` exactly as under fp32 (AdaGCL propagates with sparse CSR products, which have no
  bf16 CPU kernel, see below; EASE / ItemKNN / MostPop train nothing; CDAE is not wired, not measured).

The backends (MF, LightGCN, SGL) train in fp32 under ``train.precision: bf16`` too, so a bf16 run reuses the
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

Mult-VAE and DiffRec under bf16: ``bench/vector_models.py`` (speed and, with ``--accuracy``, paired accuracy
over seeds); not yet measured.

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

__all__ = ["PRECISIONS", "BF16_STAGES", "PrecisionWarning", "autocast", "describe", "model_supports_bf16",
           "native_bf16", "stage_precision", "warn_if_emulated"]

BF16_STAGES: tuple[str, ...] = ("ddrm", "model")  # stages that autocast under bf16 ("model": only models that
# declare supports_bf16); the backend stage stays fp32
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


def model_supports_bf16(model: str | None) -> bool:
    """Whether the registered model ``model`` (``model.name``) runs its MLPs under bf16 autocast as a standalone
    model (its class sets ``supports_bf16 = True``: Mult-VAE, DiffRec); False for None."""
    if model is None:
        return False
    from .registry import get_model

    return bool(getattr(get_model(model), "supports_bf16", False))


def stage_precision(precision: str, stage: str, model: str | None = None) -> str:
    """The precision ``stage`` (``backend``, ``ddrm``, ``model``) actually runs at under ``train.precision``;
    for the ``model`` stage ``model`` is the standalone model's name (only those that support bf16 run it)."""
    if stage not in BF16_STAGES or (stage == "model" and not model_supports_bf16(model)):
        return "fp32"
    return precision


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


def describe(precision: str, device: torch.device | str, model: str | None = None) -> dict[str, object]:
    """What a run records in ``RunResult.info``: requested precision, per-stage precision (the ``model`` stage's
    for the run's ``model.name``), native support."""
    return {"precision": precision,
            "precision_stages": {stage: stage_precision(precision, stage, model)
                                 for stage in ("backend", "ddrm", "model")},
            "precision_native_bf16": native_bf16(device)}
