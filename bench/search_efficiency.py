"""Search efficiency: a reduced DDRM grid run in full vs seeded TPE + ASHA over the same points.

Both strategies run as real Ray Tune studies (MLflow-tracked) on the same space
(``search_spaces/mf_ml1m_ddrm_grid24.yaml``, 24 points) with the same backend (pretrained once and shared).
Reported: best validation Recall@20 found and the total DDRM epochs each strategy spent (the cost); a
search's trials score no test split (rerun the best config for its test metrics). Example (docs/RESULTS.md):

    python bench/search_efficiency.py --data-dir ../shared/datasets --epochs 3 --tpe-samples 12 \\
        --json docs/results/benchmarks/search_efficiency.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ddrm.tuning.runner import init_ray, run_search
from ddrm.tuning.spec import load_search_spec

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "mf_ml1m_ddrm_grid24.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--space", default=str(SPACE))
    parser.add_argument("--epochs", type=int, default=3, help="max DDRM epochs per trial (train.epochs)")
    parser.add_argument("--tpe-samples", type=int, default=12)
    parser.add_argument("--storage", default="bench_results/search_efficiency")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    overrides = {"train.epochs": args.epochs, "train.patience": args.epochs}
    grid = load_search_spec(args.space, overrides)
    tpe = dataclasses.replace(grid, name=f"{grid.name}_tpe_asha", mode="tpe", num_samples=args.tpe_samples,
                              scheduler={"type": "asha", "grace_period": 1, "max_t": args.epochs,
                                         "reduction_factor": 2})
    grid = dataclasses.replace(grid, name=f"{grid.name}_full")
    init_ray(args.num_cpus)
    rows = {}
    for label, spec in (("grid (all 24 points, FIFO)", grid), (f"TPE + ASHA ({args.tpe_samples} trials)", tpe)):
        start = time.perf_counter()
        summary = run_search(spec, storage=args.storage, tracking_uri=args.tracking_uri, data_dir=args.data_dir)
        summary["wall_seconds"] = time.perf_counter() - start
        rows[label] = summary
        print(f"{label}: best valid R@20 {summary['best']['valid']['recall_at_20']:.4f}, "
              f"{summary['epochs_spent']} epochs, {summary['wall_seconds']:.0f}s", file=sys.stderr, flush=True)
    lines = ["| strategy | trials | epochs spent | wall time | best valid R@20 | best params |",
             "|---|---|---|---|---|---|"]
    for label, s in rows.items():
        best = s["best"]
        params = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(best["params"].items()) if k != "seed")
        lines.append(f"| {label} | {s['trials']} | {s['epochs_spent']} | {s['wall_seconds'] / 60:.1f} min | "
                     f"{best['valid']['recall_at_20']:.4f} | {params} |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
