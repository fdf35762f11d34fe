"""Per-trial overhead of a study, with and without Tune reusing a finished trial's worker process.

Runs the same real ablation (MF-BPR alone on a prepared dataset, ``--trials`` seeds x ``--epochs`` epochs, two
1-CPU trials at a time, a sqlite MLflow store in a temporary folder) once per mode, the modes interleaved over
``--repeats`` rounds after one unrecorded warm-up study, all in one process on one local Ray. Per mode: the study's
wall seconds, wall seconds per trial, trials per hour, the machine's CPU seconds around the study (``/proc/stat``:
Ray's daemons and worker start-ups included), and the trials' own recorded cost (``cost_wall_seconds`` /
``cost_cpu_seconds``: the training inside each trial; what a fresh worker costs before its trial starts is not in
them). It checks that both modes give every trial the same validation and test metrics (bit-identical: the
process a trial runs in must change nothing). Example (docs/PERFORMANCE.md):

    python bench/actor_reuse.py --data-dir ../shared/datasets --dataset ml-1m_noisy \\
        --json docs/results/benchmarks/actor_reuse.json

Time it with nothing else running: a wall time taken beside other jobs is not a benchmark (the load average
before and after each study is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPEC = """name: actor_reuse
base:
  data: {{name: {dataset}}}
  model: {{name: mf, layers: 0, lr: 0.001}}
  ddrm: {{enabled: false}}
  train: {{epochs: {epochs}, patience: {epochs}}}
seeds: {seeds}
variants:
  mf: {{}}
resources: {{cpu: 1}}
max_concurrent: 2
"""


def machine_cpu_seconds() -> float | None:
    """CPU seconds every process of this machine has used (user + nice + system + irq + softirq of ``/proc/stat``;
    None where there is none): on an idle machine the difference around a study is its whole CPU, Ray's daemons and
    worker start-ups included, which no trial's own record holds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:8]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def one_study(reuse: bool, folder: Path, args) -> dict:
    """Run the ablation once with ``REUSE_ACTORS = reuse``; its wall time, per-trial records and metrics."""
    import mlflow.tracking

    import ddrm.tuning.runner as runner
    from ddrm.tuning.spec import load_ablation_spec

    runner.REUSE_ACTORS = reuse
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(dataset=args.dataset, epochs=args.epochs, seeds=list(range(args.trials))))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    load_before = os.getloadavg()[0]
    cpu_before = machine_cpu_seconds()
    start = time.perf_counter()
    summary = runner.run_ablation(load_ablation_spec(spec), storage=str(folder / "ray"), tracking_uri=uri,
                                  data_dir=args.data_dir)
    wall = time.perf_counter() - start
    cpu_after = machine_cpu_seconds()
    machine_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("actor_reuse").experiment_id
    trials = [r for r in client.search_runs([experiment]) if r.data.tags.get("role") == "trial"]
    metrics = {r.data.tags["seed"]: {k: v for k, v in sorted(r.data.metrics.items())
                                     if k.startswith(("valid_", "test_"))} for r in trials}
    spans = sorted((r.info.start_time, r.info.end_time) for r in trials)
    return {"reuse_actors": reuse, "finished": summary["finished"], "study_wall_s": wall,
            "trial_loop_wall_s": (spans[-1][1] - spans[0][0]) / 1000 if spans else None,
            "wall_per_trial_s": wall / max(1, summary["finished"]),
            "trials_per_hour": 3600 * summary["finished"] / wall,
            "trial_cost_wall_s": sum(r.data.metrics.get("cost_wall_seconds", 0.0) for r in trials),
            "trial_cost_cpu_s": sum(r.data.metrics.get("cost_cpu_seconds", 0.0) for r in trials),
            "machine_cpu_s": machine_cpu,
            "machine_cpu_per_trial_s": machine_cpu / max(1, summary["finished"]) if machine_cpu is not None else None,
            "load_before": load_before, "load_after": os.getloadavg()[0], "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DDRM_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--trials", type=int, default=8, help="seeds of the ablation: its trials (default 8)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each runs both modes (order alternates)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.repeats < 1 or args.epochs < 1:
        parser.error("--trials must be >= 2, --repeats and --epochs >= 1")
    sys.path.insert(0, str(Path(__file__).parent))
    from precision import host_facts

    from ddrm.tuning.runner import init_ray

    init_ray(2)
    with tempfile.TemporaryDirectory() as folder:  # warm-up, not recorded: the driver's first study imports more
        one_study(True, Path(folder), argparse.Namespace(**{**vars(args), "trials": 2}))
    rounds = []
    for round_no in range(args.repeats):
        order = (True, False) if round_no % 2 == 0 else (False, True)
        for reuse in order:
            with tempfile.TemporaryDirectory() as folder:
                row = one_study(reuse, Path(folder), args)
            row["round"] = round_no
            rounds.append(row)
            print(f"round {round_no} reuse_actors={reuse}: {row['finished']} trials in {row['study_wall_s']:.1f} s "
                  f"({row['wall_per_trial_s']:.2f} s per trial; trials' own training {row['trial_cost_wall_s']:.1f} s "
                  f"wall; machine CPU {row['machine_cpu_s'] or float('nan'):.1f} s), load {row['load_before']:.2f} -> "
                  f"{row['load_after']:.2f}", flush=True)
    identical = all(r["metrics"] == rounds[0]["metrics"] for r in rounds)
    summary = {}
    for reuse in (True, False):
        rows = [r for r in rounds if r["reuse_actors"] is reuse]
        summary["reuse" if reuse else "fresh"] = {
            "median_study_wall_s": statistics.median(r["study_wall_s"] for r in rows),
            "median_wall_per_trial_s": statistics.median(r["wall_per_trial_s"] for r in rows),
            "median_trials_per_hour": statistics.median(r["trials_per_hour"] for r in rows),
            "median_machine_cpu_per_trial_s": (statistics.median(r["machine_cpu_per_trial_s"] for r in rows)
                                               if all(r["machine_cpu_per_trial_s"] is not None for r in rows) else None)}
    speedup = summary["fresh"]["median_study_wall_s"] / summary["reuse"]["median_study_wall_s"]
    result = {"host": host_facts(), "dataset": args.dataset, "trials": args.trials, "epochs": args.epochs,
              "repeats": args.repeats, "metrics_identical": identical, "summary": summary,
              "study_wall_ratio_fresh_over_reuse": speedup, "rounds": rounds,
              "command": "python bench/actor_reuse.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(f"reused workers: {summary['reuse']['median_wall_per_trial_s']:.2f} s per trial, fresh workers: "
          f"{summary['fresh']['median_wall_per_trial_s']:.2f} s ({speedup:.2f}x study wall); metrics identical: "
          f"{identical}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
