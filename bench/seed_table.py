"""Run named config variants over several seeds and print a mean ± std table of test metrics.

Each variant is a list of dotted overrides (as ``ddrm train --set``). The backend is trained once per
seed and reused from the cache by every variant of that seed. Example (the MF rows of docs/RESULTS.md):

    python bench/seed_table.py --data-dir ../shared/datasets --seeds 0 1 2 \\
        --variant "MF-BPR=ddrm.enabled=false" \\
        --variant "MF + mean of liked items=ddrm.inference_steps=0" \\
        --variant "MF + DDRM=" --json docs/results/mf_ml1m.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ddrm.config import load_config, parse_override
from ddrm.data import load_prepared
from ddrm.train import run

METRICS = ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME=k=v,k=v"`` -> (NAME, ["k=v", "k=v"])."""
    name, _, rest = text.partition("=")
    return name, [item for item in rest.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", required=True, help="NAME=key=value,key=value")
    parser.add_argument("--set", dest="common", action="append", default=[], help="override for every variant")
    parser.add_argument("--json", help="write all per-seed results here")
    args = parser.parse_args(argv)

    data = load_prepared(args.dataset, args.data_dir)
    variants = [parse_variant(v) for v in args.variant]
    rows: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for seed in args.seeds:
        for name, overrides in variants:
            pairs = dict(parse_override(o) for o in args.common + overrides)
            config = load_config(None, {"data.name": args.dataset, "seed": seed, **pairs})
            start = time.perf_counter()
            result = run(config, data=data, progress=False)
            stage = result.ddrm or result.backend
            rows[name].append({"seed": seed, "test": result.test, "valid": result.valid,
                               "best_epoch": stage.best_epoch, "epochs_run": stage.epochs_run,
                               "seconds": time.perf_counter() - start, "config": config.to_flat_dict()})
            print(f"seed {seed} {name}: test R@20 {result.test['recall_at_20']:.4f} (best epoch {stage.best_epoch}, "
                  f"{time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    header = "| variant | seeds | " + " | ".join(m.replace("_at_", "@").replace("recall", "R").replace("ndcg", "N")
                                                for m in METRICS) + " | best epoch |"
    lines = [header, "|" + "---|" * (len(METRICS) + 3)]
    for name, runs in rows.items():
        cells = []
        for metric in METRICS:
            values = np.array([r["test"][metric] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}")
        epochs = ",".join(str(r["best_epoch"]) for r in runs)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {epochs} |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "seeds": args.seeds, "common": args.common,
                                               "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
