"""The cost of a search as the benchmark: the shipped DDRM-MF TPE + ASHA search at real fidelity.

Runs ``search_spaces/mf_ml1m_ddrm.yaml`` (40 seeded TPE trials over the paper's grids, ASHA, the released
epoch cap) as a real ``ddrm tune`` study in one precision, two 1-CPU trials at a time, into a tracking store
(the per-run record committed is its report's runs.csv); with ``--resume`` an interrupted search continues from
that store (finished trials are told to the searcher, never trained twice). Writes JSON: the host (CPU model, bf16 flags, GEMM rate
of the dtype), the wall time of each invocation, trials, trial-epochs spent (every epoch any trial trained,
read back from the store), the CPU and wall hours the trials logged (``cost_*``), the best trial's validation
R@20 (a search scores no test), and the trial-epochs the
full grid it replaces would cost (grid points x max_t), and the load average around each invocation (a wall
time measured while other jobs ran is not a benchmark). Example (docs/PERFORMANCE.md):

    python bench/search_cost.py --data-dir ../shared/datasets --precision fp32 \\
        --tracking-uri sqlite:///docs/results/tuned_ml1m/mlruns.db --json docs/results/benchmarks/search_cost_fp32.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "mf_ml1m_ddrm.yaml"


def host_facts(precision: str) -> dict:
    """CPU model, bf16 flags and the in-run ``torch.mm`` rate (GFLOP/s, 1 thread) of ``precision``."""
    import torch

    from ddrm.host import cpu_model
    from ddrm.precision import cpu_flags

    model, flags = cpu_model(), " ".join(sorted(cpu_flags()))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(2048, 1164, dtype=dtype), torch.randn(1164, 1000, dtype=dtype)
    torch.mm(a, b)
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        torch.mm(a, b)
    seconds = (time.perf_counter() - start) / reps
    torch.set_num_threads(previous)
    return {"cpu": model, "bf16_flags": sorted({f for f in flags.split() if "bf16" in f}),
            "gemm_gflops_1thread": round(2 * 2048 * 1164 * 1000 / seconds / 1e9, 1), "gemm_dtype": str(dtype)}


def grid_trial_epochs(space: dict, max_t: int) -> tuple[int, int]:
    """(points, trial-epochs) of the full grid over the space's ``choice`` keys, each trained to ``max_t``."""
    points = math.prod(len(d["values"]) for d in space.values() if d["type"] == "choice")
    return points, points * max_t


def epochs_in_store(uri: str, experiment: str) -> tuple[int, int, dict]:
    """(trial runs, trial-epochs, cost) of every FINISHED trial run of ``experiment``: each run's last epoch, and
    the sums of the runs' logged cost (``cpu_hours``, ``wall_hours``; runs without ``cost_*`` add nothing)."""
    from ddrm.metrics import COST_CPU, COST_WALL
    from ddrm.tracking import _client, search_all_runs

    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0, 0, {}
    runs = search_all_runs(client, [found.experiment_id], "tags.role = 'trial' and attributes.status = 'FINISHED'")
    cost = {"cpu_hours": round(sum(r.data.metrics.get(COST_CPU, 0.0) for r in runs) / 3600, 3),
            "wall_hours": round(sum(r.data.metrics.get(COST_WALL, 0.0) for r in runs) / 3600, 3)}
    return len(runs), int(sum(run.data.metrics.get("epoch", 0) for run in runs)), cost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--space", default=str(SPACE))
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--num-samples", type=int, help="trials (default: the spec's)")
    parser.add_argument("--storage", default="ray_results")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--resume", action="store_true", help="continue the search from the tracking store")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)

    from ddrm.tuning.runner import init_ray, run_search
    from ddrm.tuning.spec import load_search_spec

    spec = load_search_spec(args.space, {"train.precision": args.precision}, args.num_samples)
    spec = dataclasses.replace(spec, name=f"{spec.name}_{args.precision}")
    out = Path(args.json)
    record = json.loads(out.read_text()) if args.resume and out.is_file() else {"invocations": []}
    init_ray(2)
    load_before = os.getloadavg()
    start = time.perf_counter()
    summary = run_search(spec, storage=args.storage, tracking_uri=args.tracking_uri, data_dir=args.data_dir,
                         resume=args.resume)
    wall = time.perf_counter() - start
    trials, trial_epochs, cost = epochs_in_store(summary["tracking_uri"], spec.name)
    points, grid_epochs = grid_trial_epochs(spec.space, spec.scheduler.get("max_t") or 0)
    record["invocations"].append({"wall_seconds": round(wall, 1), "host": host_facts(args.precision),
                                  "load_average_1min": {"start": round(load_before[0], 2),
                                                        "end": round(os.getloadavg()[0], 2)},
                                  "trials_run": summary["trials"], "finished": summary["finished"],
                                  "errored": summary["errored"]})
    best = summary["best"] or {}
    record.update({
        "study": spec.name, "space": Path(args.space).resolve().relative_to(REPO).as_posix(),
        "precision": args.precision, "num_samples": spec.num_samples, "max_concurrent": spec.max_concurrent,
        "cpus_per_trial": spec.resources.cpu, "scheduler": spec.scheduler,
        "tracking_store": args.tracking_uri, "trials_in_store": trials, "trial_epochs": trial_epochs,
        "trial_cost": cost,
        "wall_seconds_total": round(sum(i["wall_seconds"] for i in record["invocations"]), 1),
        "grid_points": points, "grid_trial_epochs": grid_epochs,
        "complete": trials >= spec.num_samples,  # false: stopped early (Ctrl-C, a session's end); --resume continues
        "best": {"params": best.get("params"), "valid_recall_at_20": (best.get("valid") or {}).get("recall_at_20")},
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({k: record[k] for k in ("study", "trials_in_store", "trial_epochs", "grid_trial_epochs",
                                             "wall_seconds_total", "best")}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
