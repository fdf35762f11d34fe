#!/usr/bin/env python
"""fp32 vs bf16 (``train.precision``) on this host: GEMM, DDRM training and evaluation, backend epochs.

    python bench/precision.py --data-dir ../shared/datasets            # ~6-8 min on 1 thread
    python bench/precision.py --data-dir ../shared/datasets --quick    # ~1-2 min (small epoch fractions)

Sections (every ratio is measured in this run; fp32 and bf16 repetitions are interleaved, with the order
alternating, and medians reported, because the machine is shared):

- ``gemm``: GFLOP/s of ``torch.mm`` (2048 x 1164) @ (1164 x 1000), the denoiser's largest layer, in fp32
  and bf16;
- ``emulation``: the same GEMM in child processes with oneDNN limited to ``AVX512_CORE`` (AVX-512 without
  the bf16 instructions) and to ``AVX2``, i.e. what bf16 costs on a CPU without native bf16 (skipped where
  the host itself has none: then the ``gemm`` section already is that measurement);
- ``ddrm_train``: a DDRM training epoch (or ``--ddrm-fraction`` of one) at the released MF settings
  (the default config: dims [100, 1000], T = 20, batch 2048, frozen MF backend), exactly what
  ``ddrm.train.fit`` does per batch: sample, loss, backward, Adam step;
- ``ddrm_eval``: one full validation pass with DDRM inference (T' reverse steps per user, then ranking);
- ``backends``: MF and LightGCN (3 layers) BPR epochs (fractions) with the backend's loss under bf16
  autocast — the question is whether ``train.precision: bf16`` should reach the backends. LightGCN's
  propagation is a sparse CSR product, which has no bf16 kernel on CPU: the section records the error and
  times that product in fp32 (CSR) against the bf16 alternative that exists (COO).

The backend DDRM uses is the cached trained MF of the default config when present (``ddrm train --backend mf
--no-ddrm``), else an untrained one — timings do not depend on the weights; the JSON says which.
Writes ``docs/results/benchmarks/precision_<hostkind>.json`` (hostkind: ``cpu_avx512_bf16``, ``cpu_amx_bf16``,
``cpu_no_bf16`` or ``cuda``) unless ``--json`` says otherwise.

Accuracy (paired, same cached backend per seed — under ``train.precision: bf16`` the backend stays fp32, so
its cache key is the fp32 one)::

    python bench/seed_table.py --data-dir ../shared/datasets --seeds 0 1 2 --set train.threads=1 \\
        --variant "MF + DDRM fp32=" --variant "MF + DDRM bf16=train.precision=bf16" \\
        --json docs/results/runs/precision_accuracy_ml1m.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
DTYPES = ("fp32", "bf16")
GEMM_SHAPE = (2048, 1164, 1000)


def host_facts() -> dict:
    """CPU model, bf16-relevant flags, torch build: recorded with every number."""
    from ddrm.host import cpu_model
    from ddrm.precision import CPU_BF16_FLAGS, cpu_flags, native_bf16

    model = cpu_model()
    flags = cpu_flags()
    interesting = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2", "fma")))
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "bf16_flags": [f for f in CPU_BF16_FLAGS if f in flags],
            "simd_flags": interesting, "native_bf16_cpu": native_bf16("cpu"), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def host_kind() -> str:
    """``cpu_avx512_bf16`` | ``cpu_amx_bf16`` | ``cpu_no_bf16`` (this bench times the CPU)."""
    from ddrm.precision import cpu_flags

    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "cpu_amx_bf16"
    return "cpu_avx512_bf16" if "avx512_bf16" in flags else "cpu_no_bf16"


def interleaved(measure: Callable[[str], float], reps: int) -> dict:
    """``measure(dtype) -> seconds`` run ``reps`` times per dtype, alternating the order; medians and ratio."""
    samples: dict[str, list[float]] = {d: [] for d in DTYPES}
    for rep in range(reps):
        for dtype in (DTYPES if rep % 2 == 0 else DTYPES[::-1]):
            samples[dtype].append(measure(dtype))
    medians = {d: statistics.median(v) for d, v in samples.items()}
    return {"seconds": samples, "median_s": medians, "speedup_bf16": medians["fp32"] / medians["bf16"]}


def gemm_seconds(dtype: str, seconds: float) -> float:
    """Seconds per ``torch.mm`` of GEMM_SHAPE in ``dtype`` (a loop of about ``seconds``)."""
    m, k, n = GEMM_SHAPE
    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    a, b = torch.randn(m, k).to(torch_dtype), torch.randn(k, n).to(torch_dtype)
    torch.mm(a, b)  # warm-up (oneDNN builds its kernel on the first call)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count == 0:
        torch.mm(a, b)
        count += 1
    return (time.perf_counter() - start) / count


def gemm(reps: int, seconds: float) -> dict:
    flops = 2 * math.prod(GEMM_SHAPE)
    out = interleaved(lambda d: gemm_seconds(d, seconds), reps)
    out["gflops"] = {d: flops / s / 1e9 for d, s in out["median_s"].items()}
    out["shape"] = list(GEMM_SHAPE)
    return out


def emulation(reps: int, seconds: float, threads: int) -> dict:
    """The GEMM section in child processes with ``ONEDNN_MAX_CPU_ISA`` = AVX512_CORE / AVX2."""
    out = {}
    for isa in ("AVX512_CORE", "AVX2"):
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
        command = [sys.executable, __file__, "--child-gemm", "--threads", str(threads), "--reps", str(reps),
                   "--gemm-seconds", str(seconds)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            out[isa] = {"error": done.stderr[-500:]}
            continue
        out[isa] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def released_config(data_name: str, overrides: dict | None = None):
    from ddrm.config import load_config

    return load_config(None, {"data.name": data_name, "model.name": "mf", **(overrides or {})})


def mf_backend(config, data, device):
    """The cached trained backend of ``config`` when present (no training here), else an untrained one."""
    from ddrm import cache
    from ddrm.train import backend_cache_key, build_backend

    torch.manual_seed(config.seed)
    backend = build_backend(config, data, device)
    hit = cache.load_entry(backend_cache_key(config, data))
    if hit is not None:
        backend.load_state_dict(hit[0])
    return backend, hit is not None


def ddrm_sections(data, reps: int, fraction: float, eval_reps: int, device: torch.device) -> dict:
    """DDRM training-epoch fraction and a full validation pass, fp32 vs bf16 (``DDRM.precision`` toggled)."""
    from ddrm.data.sampling import BPRSampler
    from ddrm.diffusion.ddrm import DDRM
    from ddrm.evaluation import evaluate

    config = released_config(data.name)
    backend, trained = mf_backend(config, data, device)
    torch.manual_seed(1)
    model = DDRM(config.ddrm, backend, data.csr("train"), seed=0).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.ddrm.lr)
    sampler = BPRSampler(data.csr("train"), seed=1, mode=config.ddrm.sampling)
    batch_size = config.train.batch_size
    n_batches = max(1, math.ceil(fraction * math.ceil(sampler.n_train / batch_size)))
    losses: dict[str, list[float]] = {d: [] for d in DTYPES}

    def step(users, pos, neg) -> float:
        loss = model.loss(users, pos, neg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def train_epoch(dtype: str) -> float:
        model.precision = dtype
        model.train()
        batches = sampler.batches(batch_size, device)
        step(*next(batches))  # warm-up batch, not timed
        start = time.perf_counter()
        total = 0.0
        for index, batch in enumerate(sampler.batches(batch_size, device)):
            if index >= n_batches:
                break
            total += step(*batch)
        seconds = time.perf_counter() - start
        losses[dtype].append(total / n_batches)
        return seconds

    train = interleaved(train_epoch, reps)
    train.update(batches=n_batches, epoch_fraction=min(1.0, n_batches * batch_size / sampler.n_train),
                 est_epoch_s={d: s * sampler.n_train / min(sampler.n_train, n_batches * batch_size)
                              for d, s in train["median_s"].items()},
                 mean_loss=losses, backend_trained=trained, settings={
                     "hidden_dims": list(config.ddrm.hidden_dims), "steps": config.ddrm.steps,
                     "activation": config.ddrm.activation, "batch_size": batch_size})

    metrics: dict[str, dict] = {}

    def eval_pass(dtype: str) -> float:
        model.precision = dtype
        model.eval()
        start = time.perf_counter()
        metrics[dtype] = evaluate(model.scorer(), data, "valid", batch_size=config.train.eval_batch_size,
                                  device=device)
        return time.perf_counter() - start

    evaluation = interleaved(eval_pass, eval_reps)
    evaluation["valid"] = {d: {k: metrics[d][k] for k in ("recall_at_20", "ndcg_at_20", "n_users")} for d in DTYPES}
    evaluation["reverse_steps"] = config.ddrm.reverse_steps
    return {"ddrm_train": train, "ddrm_eval": evaluation}


def backend_epochs(data, reps: int, fractions: dict[str, float], device: torch.device) -> dict:
    """BPR epoch fractions of each backend with its loss under bf16 autocast vs fp32."""
    from ddrm.data.sampling import BPRSampler
    from ddrm.precision import autocast
    from ddrm.train import build_backend

    out: dict[str, dict] = {}
    for name, fraction in fractions.items():
        config = released_config(data.name, {"model.name": name})
        torch.manual_seed(0)
        backend = build_backend(config, data, device)
        optimizer = torch.optim.Adam(backend.parameters(), lr=config.model.lr)
        sampler = BPRSampler(data.csr("train"), seed=0, mode=config.model.sampling)
        batch_size = config.train.batch_size
        n_batches = max(1, math.ceil(fraction * math.ceil(sampler.n_train / batch_size)))

        def step(batch, dtype: str) -> None:
            with autocast(dtype, device):
                loss = backend.loss(*batch)
            optimizer.zero_grad(set_to_none=True)
            loss.float().backward()
            optimizer.step()

        generator = torch.Generator().manual_seed(0)

        def epoch(dtype: str) -> float:
            backend.train()
            step(next(sampler.batches(batch_size, device)), dtype)  # warm-up
            start = time.perf_counter()
            backend.start_epoch(1, generator)  # SGL redraws its views (timed, as in ddrm.train.fit)
            for index, batch in enumerate(sampler.batches(batch_size, device)):
                if index >= n_batches:
                    break
                step(batch, dtype)
            return time.perf_counter() - start

        try:
            row = interleaved(epoch, reps)
            row["est_epoch_s"] = {d: s * sampler.n_train / min(sampler.n_train, n_batches * batch_size)
                                  for d, s in row["median_s"].items()}
        except (RuntimeError, NotImplementedError) as error:  # e.g. no bf16 sparse-CSR kernel on CPU
            row = {"bf16_error": f"{type(error).__name__}: {str(error).splitlines()[0]}",
                   "where": traceback.extract_tb(error.__traceback__)[-1].line}
            row["fp32_epoch_s"] = statistics.median(epoch("fp32") for _ in range(reps))
        row.update(layers=config.model.layers, batches=n_batches,
                   epoch_fraction=min(1.0, n_batches * batch_size / sampler.n_train))
        if name in ("lightgcn", "sgl"):
            row["spmm"] = spmm(backend, reps)
        out[name] = row
    return out


def spmm(backend, reps: int) -> dict:
    """One propagation product ``Â @ X`` (X: (U+I, d)): fp32 CSR (what LightGCN uses) vs fp32 / bf16 COO."""
    graph = backend.graph
    csr = backend.csr("graph")
    x = torch.randn(graph.shape[0], backend.config.dim)
    variants = {"fp32_csr": (csr, x), "fp32_coo": (graph, x),
                "bf16_coo": (graph.to(torch.bfloat16), x.to(torch.bfloat16))}
    out: dict[str, float | str] = {}
    for name, (matrix, dense) in variants.items():
        try:
            torch.sparse.mm(matrix, dense) if matrix.layout == torch.sparse_coo else matrix @ dense
            times = []
            for _ in range(max(3, reps)):
                start = time.perf_counter()
                torch.sparse.mm(matrix, dense) if matrix.layout == torch.sparse_coo else matrix @ dense
                times.append(time.perf_counter() - start)
            out[f"{name}_ms"] = 1000 * statistics.median(times)
        except (RuntimeError, NotImplementedError) as error:
            out[f"{name}_error"] = str(error).splitlines()[0]
    try:
        csr.to(torch.bfloat16) @ x.to(torch.bfloat16)
    except (RuntimeError, NotImplementedError) as error:
        out["bf16_csr_error"] = str(error).splitlines()[0]
    return out


def _row(figure: str, values: dict, unit: str, digits: int, speedup: float) -> str:
    """One table row: ``| figure | fp32 | bf16 | speed-up |`` with ``values`` = {"fp32": x, "bf16": y}."""
    return (f"| {figure} | {values['fp32']:.{digits}f} {unit} | {values['bf16']:.{digits}f} {unit} | "
            f"{speedup:.2f}x |")


def summary_lines(results: dict) -> list[str]:
    lines = ["| figure | fp32 | bf16 | bf16 speed-up |", "|---|---|---|---|"]
    if "gemm" in results:
        gemm = results["gemm"]
        lines.append(_row("torch.mm 2048x1164 @ 1164x1000", gemm["gflops"], "GFLOP/s", 0, gemm["speedup_bf16"]))
    for isa, row in results.get("emulation", {}).items():
        if "gflops" in row:
            lines.append(_row(f"same GEMM, oneDNN limited to {isa}", row["gflops"], "GFLOP/s", 0, row["speedup_bf16"]))
    if "ddrm_train" in results:
        row = results["ddrm_train"]
        lines.append(_row(f"DDRM-MF training epoch (est. from {row['epoch_fraction']:.2f})", row["est_epoch_s"], "s", 1,
                          row["speedup_bf16"]))
    if "ddrm_eval" in results:
        row = results["ddrm_eval"]
        lines.append(_row(f"DDRM validation pass ({row['reverse_steps']} reverse steps)", row["median_s"], "s", 2,
                          row["speedup_bf16"]))
    for name, row in results.get("backends", {}).items():
        if "est_epoch_s" in row:
            lines.append(_row(f"{name} epoch (est. from {row['epoch_fraction']:.2f})", row["est_epoch_s"], "s", 2,
                              row["speedup_bf16"]))
        else:
            lines.append(f"| {name} epoch fraction {row['epoch_fraction']:.2f} | {row['fp32_epoch_s']:.2f} s | "
                         f"fails: {row['bf16_error'][:60]} | - |")
        if "spmm" in row:
            s = row["spmm"]
            lines.append(f"| {name} propagation product Â @ X | {s.get('fp32_csr_ms', float('nan')):.1f} ms (CSR) | "
                         f"{s.get('bf16_coo_ms', float('nan')):.1f} ms (COO; no bf16 CSR kernel) | "
                         f"{s.get('fp32_csr_ms', math.nan) / s.get('bf16_coo_ms', math.nan):.2f}x |")
    return lines


SECTIONS = ("gemm", "emulation", "ddrm", "backends")


def collect(sections: list[str] | tuple[str, ...], data_dir: str, dataset: str = "ml-1m_noisy", quick: bool = False,
            reps: int = 3, threads: int = 1, ddrm_fraction: float | None = None,
            gemm_seconds: float = 1.5) -> dict:
    """All requested sections' figures, the host facts and a markdown table (``"table"``: list of lines).

    Also what ``bench/run --sections precision`` calls. Sets ``threads`` torch threads.
    """
    from ddrm.data import load_prepared

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    start = time.perf_counter()
    rel_dir = os.path.relpath(data_dir, REPO)  # paths in the JSON are relative to the repository
    command = (f"python bench/precision.py --data-dir {rel_dir} --threads {threads} --reps {reps}"
               + (" --quick" if quick else "") + f" --sections {' '.join(sections)}"
               + (f" --ddrm-fraction {ddrm_fraction}" if ddrm_fraction else ""))
    results: dict = {"host": host_facts(), "host_kind": host_kind(), "quick": quick, "reps": reps,
                     "dataset": dataset, "data_dir": rel_dir, "command": command}
    if "gemm" in sections:
        results["gemm"] = gemm(reps, gemm_seconds)
        print(f"gemm done ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    if "emulation" in sections and results["host"]["native_bf16_cpu"]:
        results["emulation"] = emulation(reps, gemm_seconds, threads)
        print(f"emulation done ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    data = None
    if "ddrm" in sections or "backends" in sections:
        data = load_prepared(dataset, data_dir)
    if "ddrm" in sections:
        fraction = ddrm_fraction or (0.05 if quick else 1.0)
        results.update(ddrm_sections(data, reps, fraction, 1 if quick else reps, device))
        print(f"ddrm done ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    if "backends" in sections:
        fractions = {"mf": 0.2, "lightgcn": 0.03} if quick else {"mf": 1.0, "lightgcn": 0.25, "sgl": 0.05}
        results["backends"] = backend_epochs(data, reps, fractions, device)
        print(f"backends done ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    results["wall_s"] = time.perf_counter() - start
    results["table"] = summary_lines(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DDRM_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--quick", action="store_true", help="small epoch fractions, 2 repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, help="repetitions per dtype (default 3, --quick 2)")
    parser.add_argument("--ddrm-fraction", type=float, help="share of a DDRM epoch timed (default 1, --quick 0.05)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--json",
                        help="default docs/results/benchmarks/precision_<hostkind>.json (--quick: bench_results/)")
    parser.add_argument("--gemm-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child-gemm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = args.reps or (2 if args.quick else 3)
    gemm_secs = args.gemm_seconds or (0.5 if args.quick else 1.5)
    if args.child_gemm:
        print(json.dumps({**gemm(reps, gemm_secs), "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}))
        return 0

    results = collect(args.sections, args.data_dir, args.dataset, args.quick, reps, args.threads,
                      args.ddrm_fraction, gemm_secs)
    lines = results["table"]
    host = results["host"]
    print(f"\n{host['cpu_model']}, bf16 flags {host['bf16_flags'] or 'none'}, torch {host['torch']}, "
          f"{args.threads} thread(s), medians of {reps} interleaved repetitions\n")
    print("\n".join(lines))
    folder = Path("bench_results") if args.quick else Path("docs/results/benchmarks")
    default = folder / f"precision_{results['host_kind']}.json"
    target = Path(args.json) if args.json else REPO / default
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {os.path.relpath(target, Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
