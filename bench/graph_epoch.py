#!/usr/bin/env python
"""LightGCN and SGL training epochs: the graph propagation as it was vs the fused one that ships, in one run.

    # speed: one training epoch per arm and model (1 thread, medians of 3 interleaved repetitions), ~12 min
    python bench/graph_epoch.py --dataset ml-1m_noisy --data-dir ../shared/datasets
    # the two arms that matter only (old vs new), ~6 min
    python bench/graph_epoch.py --dataset ml-1m_noisy --data-dir ../shared/datasets --arms reference fused
    # smoke run on generated data (what the test runs; its timings mean nothing)
    python bench/graph_epoch.py --quick --generated 120 80 1500

Arms (each a full training step as ``ddrm.loop`` runs it: ``start_epoch``, then per BPR batch loss, backward, Adam):

- ``reference``: the code before the fused propagation, kept only in ``bench/graph_reference.py`` (the tests check
  the shipped code against it too): CSR with int64 indices (the CPU product
  converts them to int32 on every call), the layer loop under autograd (one node per product, ``F.normalize``,
  running sum, slices), the full ``(U+I, d)`` propagation and then the batch's rows indexed (SGL: per view too);
- ``reference_int32``: the same with int32 CSR indices (the first lever alone);
- ``fused_all_rows``: the fused propagation (one autograd node, hand-written backward) over every node, then indexed;
- ``fused``: what ships: int32 CSR, fused propagation, only the batch's nodes pooled
  (``LightGCN.batch_embeddings``, ``SGL.ssl_loss``).

Every arm of a model is built from the same seed (same initial weights) with its own Adam optimiser, BPR sampler and
view generator, so all arms train the same sequence of batches: their per-batch losses must be identical (checked:
``losses_identical``, and ``parameters_identical`` after the last repetition). One untimed warm-up batch per arm,
then repetitions of one epoch (``--fraction`` of one, or ``--batches``), the arm order rotating per repetition;
medians and ratios within this run. ``op_counts``: aten ops and allocations of one more batch per arm under
``torch.profiler`` (counts only, never times).

Settings: ``model.name`` = lightgcn / sgl with the platform defaults (3 layers, batch 2048; SGL ``normalized_sum``
pooling), ``--config`` (a config file for both) and ``--set KEY=VALUE`` overrides. JSON: host (CPU model, flags,
torch, threads), the command, the dataset's shape, settings, per arm seconds / losses, speed-ups; default
``docs/results/benchmarks/graph_epoch_<dataset>.json`` (``--quick``: ``bench_results/``).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))  # this checkout's package, whatever ``pip install -e`` points at
sys.path.insert(1, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from ddrm.backends.base import Backend  # noqa: E402
from ddrm.backends.lightgcn import LightGCN  # noqa: E402
from ddrm.backends.sgl import SGL  # noqa: E402
from graph_reference import FullThenIndex, Int64CSR, LayerLoop, reference_class  # noqa: E402

MODELS = {"lightgcn": LightGCN, "sgl": SGL}
ARMS = ("reference", "reference_int32", "fused_all_rows", "fused")
ARM_MIXINS: dict[str, tuple[type, ...]] = {"reference": (Int64CSR, LayerLoop), "reference_int32": (LayerLoop,),
                                           "fused_all_rows": (FullThenIndex,), "fused": ()}


def arm_class(arm: str, name: str) -> type:
    """The backend class of ``arm`` for model ``name`` (``fused``: the shipped class itself)."""
    return reference_class(MODELS[name], ARM_MIXINS[arm])


# --------------------------------------------------------------------------- timing


def model_config(name: str, dataset: str, path: str | None, overrides: list[str]):
    from ddrm.config import load_config, parse_override

    values = dict(parse_override(item) for item in overrides)
    return load_config(path, {"data.name": dataset, **values, "model.name": name})


def build(arm: str, name: str, config, data) -> tuple[Backend, torch.optim.Optimizer]:
    """The backend of ``arm`` and its Adam, as ``ddrm.train`` builds them (same seed: same initial weights)."""
    from ddrm.train import backend_optimizer

    torch.manual_seed(config.seed)
    backend = arm_class(arm, name)(config.model, data.n_users, data.n_items, data.csr("train"), config.denoise)
    return backend, backend_optimizer(backend, config)


def op_counts(backend: Backend, optimizer: torch.optim.Optimizer, batch) -> dict:
    """One training step under the profiler, counted (never timed): aten calls, allocation calls, MB allocated
    (the bytes every op's outputs and temporaries took: a proxy for the elementwise traffic), the busiest ops."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        backend.training_step(batch, optimizer)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    counts = collections.Counter({e.key: e.count for e in events})
    allocations = sum(c for k, c in counts.items() if k.startswith(("aten::empty", "aten::new_empty")))
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in events)
    return {"aten_calls": sum(counts.values()), "allocation_calls": allocations, "allocated_mb": allocated / 2 ** 20,
            "top": dict(counts.most_common(15))}


def speed(name: str, config, data, arms: list[str], reps: int, fraction: float, max_batches: int | None) -> dict:
    """Epoch seconds of every arm of ``name``, interleaved; medians, ratios, loss identity across arms."""
    from ddrm.data.sampling import BPRSampler

    batch_size = config.train.batch_size
    built = {}
    for arm in arms:
        backend, optimizer = build(arm, name, config, data)
        sampler = BPRSampler(data.csr("train"), seed=config.seed, mode=config.model.sampling)
        generator = torch.Generator().manual_seed(config.seed)
        backend.train()
        backend.start_epoch(0, generator)
        backend.training_step(next(sampler.batches(batch_size)), optimizer)  # warm-up, not timed
        built[arm] = (backend, optimizer, sampler, generator)
    n_train = next(iter(built.values()))[2].n_train
    n_batches = max(1, math.ceil(fraction * math.ceil(n_train / batch_size)))
    if max_batches:
        n_batches = min(n_batches, max_batches)
    rows = {arm: {"train_s": [], "mean_loss": [], "losses": []} for arm in arms}
    for rep in range(reps):
        for arm in arms[rep % len(arms):] + arms[:rep % len(arms)]:
            backend, optimizer, sampler, generator = built[arm]
            losses = []
            start = time.perf_counter()
            backend.start_epoch(rep + 1, generator)  # SGL redraws its views (timed, as in the loop)
            for index, batch in enumerate(sampler.batches(batch_size)):
                if index >= n_batches:
                    break
                losses.append(backend.training_step(batch, optimizer))
            rows[arm]["train_s"].append(time.perf_counter() - start)
            losses = [float(v) for v in losses]
            rows[arm]["losses"].append(losses)
            rows[arm]["mean_loss"].append(sum(losses) / len(losses))
        print(f"  {name}: repetition {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    share = min(1.0, n_batches * batch_size / n_train)
    for row in rows.values():
        row["median_train_s"] = statistics.median(row["train_s"])
        row["est_epoch_s"] = row["median_train_s"] / share
    reference = arms[0]
    identical = all(rows[arm]["losses"] == rows[reference]["losses"] for arm in arms)
    worst = max((abs(a - b) / max(abs(b), 1e-30) for arm in arms for ra, rb in
                 zip(rows[arm]["losses"], rows[reference]["losses"]) for a, b in zip(ra, rb)), default=0.0)
    params = {arm: list(built[arm][0].parameters()) for arm in arms}
    same_params = all(torch.equal(a, b) for arm in arms for a, b in zip(params[arm], params[reference]))
    batch = next(built[arms[0]][2].batches(batch_size))
    counts = {arm: op_counts(built[arm][0], built[arm][1], batch) for arm in arms}
    for row in rows.values():
        del row["losses"]  # per-batch lists: compared above, too long for the JSON
    speedup = {f"{arm}_vs_{reference}": rows[reference]["median_train_s"] / rows[arm]["median_train_s"]
               for arm in arms[1:]}
    settings = {"model": config.model.settings(), "batch_size": batch_size, "seed": config.seed}
    return {"arms": rows, "speedup": speedup, "losses_identical": identical, "max_rel_loss_diff": worst,
            "parameters_identical": same_params, "batches": n_batches, "epoch_fraction": share,
            "train_pairs": n_train, "op_counts": counts, "settings": settings}


def summary_lines(results: dict) -> list[str]:
    lines = []
    for name, row in results["speed"].items():
        lines += [f"\n{name} ({row['batches']} batches = {row['epoch_fraction']:.2f} of an epoch; losses identical "
                  f"across arms: {row['losses_identical']}, parameters identical: {row['parameters_identical']})",
                  "| arm | training epoch (est.) | median s | aten calls / batch | MB allocated / batch |",
                  "|---|---|---|---|---|"]
        for arm, v in row["arms"].items():
            ops = row["op_counts"][arm]
            lines.append(f"| {arm} | {v['est_epoch_s']:.2f} s | {v['median_train_s']:.3f} | {ops['aten_calls']} | "
                         f"{ops['allocated_mb']:.0f} |")
        lines += ["| speed-up | training |", "|---|---|"]
        lines += [f"| {key} | {value:.2f}x |" for key, value in row["speedup"].items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DDRM_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--generated", nargs=3, type=int, metavar=("USERS", "ITEMS", "PAIRS"),
                        help="generated interactions instead of --data-dir/--dataset")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS,
                        help="arms to time (default all four; the first is the baseline of every ratio)")
    parser.add_argument("--config", help="config file for both models (default: the platform defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (both models)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, help="repetitions per arm (default 3, --quick 2)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of an epoch timed (default 1)")
    parser.add_argument("--batches", type=int, help="at most this many batches per repetition")
    parser.add_argument("--quick", action="store_true", help="2 repetitions, at most 3 batches")
    parser.add_argument("--json", help="output (default: docs/results/benchmarks/graph_epoch_<dataset>.json; "
                                       "--quick: bench_results/)")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    torch.set_num_threads(args.threads)

    import ddrm
    from ddrm.data import load_prepared
    from precision import host_facts, host_kind  # bench/precision.py

    if args.generated:
        from vector_models import generated  # bench/vector_models.py

        data = generated(*args.generated)
        dataset, data_dir = "generated_{}x{}x{}".format(*args.generated), None
    else:
        data = load_prepared(args.dataset, args.data_dir)
        dataset, data_dir = args.dataset, os.path.relpath(args.data_dir, REPO)
    overrides = list(args.set) + [f"train.threads={args.threads}"]
    reps = args.reps or (2 if args.quick else 3)
    max_batches = 3 if args.quick and not args.batches else args.batches
    results: dict = {"host": host_facts(), "host_kind": host_kind(),
                     "package": os.path.relpath(Path(ddrm.__file__).parent, REPO),
                     "command": "python bench/graph_epoch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "dataset": dataset, "data_dir": data_dir, "quick": args.quick, "reps": reps, "arms": args.arms,
                     "load_average": list(os.getloadavg()),
                     "shape": {"users": data.n_users, "items": data.n_items, "train": len(data.train)}, "speed": {}}
    start = time.perf_counter()
    for name in args.models:
        config = model_config(name, data.name, args.config, overrides)
        results["speed"][name] = speed(name, config, data, list(args.arms), reps, args.fraction, max_batches)
    results["wall_s"] = time.perf_counter() - start
    results["load_average_after"] = list(os.getloadavg())
    results["table"] = summary_lines(results)
    host = results["host"]
    print(f"\n{host['cpu_model']}, torch {host['torch']}, {args.threads} thread(s), {dataset} "
          f"({data.n_users} users x {data.n_items} items, {len(data.train)} train), load {results['load_average']}")
    print("\n".join(results["table"]))
    folder = Path("bench_results") if args.quick else Path("docs/results/benchmarks")
    target = Path(args.json) if args.json else REPO / folder / f"graph_epoch_{dataset}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {os.path.relpath(target, Path.cwd())}")
    mismatch = [name for name, row in results["speed"].items()
                if not (row["losses_identical"] and row["parameters_identical"])]
    if mismatch:
        print(f"error: the arms' losses or parameters differ for {mismatch}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
