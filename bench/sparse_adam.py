"""MF training epoch with dense Adam vs sparse gradients + SparseAdam (``model.sparse_grad``), one host, one run.

Times one full MF training epoch (sampling, forward, backward, optimiser step; no evaluation) on ML-1M and on
the generated Yelp-sized data of ``bench/run``'s scale section, alternating dense and sparse ``--reps`` times,
and reports the median seconds of each and their ratio. The accuracy side (3 seeds, paired t-test) is the
ablation ``ablations/sparse_adam_ml1m.yaml``. Both sides run in this process with the same threads, so the
ratio is a same-host figure; the host's CPU is recorded with it.

    python bench/sparse_adam.py --data-dir ../shared/datasets --json docs/results/benchmarks/sparse_adam_speed.json
    python bench/sparse_adam.py --data-dir ../shared/datasets --quick     # 1/20-size Yelp, 10 % of an epoch
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from backend_throughput import measure  # noqa: E402
from precision import host_facts  # noqa: E402


def _bench_run_module():
    """``bench/run`` (a script without .py) as a module, for its generated Yelp-sized data."""
    loader = importlib.machinery.SourceFileLoader("bench_run", str(BENCH / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def epoch_seconds(data, reps: int, fraction: float) -> dict:
    """Median seconds of one MF epoch (``fraction`` of it, scaled up) with dense and with sparse gradients."""
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for _ in range(reps):  # alternated, so drift in the machine's speed hits both sides alike
        for name, sparse in (("dense", False), ("sparse", True)):
            out = measure("mf", {"model.sparse_grad": sparse}, data, batch_size=2048, fraction=fraction,
                          device=torch.device("cpu"))
            times[name].append(out["seconds"] / fraction)
    dense, sparse = statistics.median(times["dense"]), statistics.median(times["sparse"])
    return {"users": data.n_users, "items": data.n_items, "train_pairs": len(data.train),
            "dense_epoch_s": dense, "sparse_epoch_s": sparse, "speedup": dense / sparse, "runs": times,
            "epoch_fraction_timed": fraction}


def main(argv: list[str] | None = None) -> int:
    from ddrm.data import load_prepared

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fraction = 0.1 if args.quick else 1.0
    results = {"host": host_facts(), "threads": args.threads, "dtype": "fp32", "torch": torch.__version__,
               "ml1m": epoch_seconds(load_prepared("ml-1m_noisy", args.data_dir), args.reps, fraction),
               "yelp_sized": epoch_seconds(_bench_run_module().yelp_sized(0.05 if args.quick else 1.0),
                                           args.reps, fraction)}
    for name in ("ml1m", "yelp_sized"):
        row = results[name]
        print(f"{name} ({row['users']:,} users x {row['items']:,} items, {row['train_pairs']:,} train): MF epoch "
              f"dense Adam {row['dense_epoch_s']:.2f} s, sparse + SparseAdam {row['sparse_epoch_s']:.2f} s "
              f"({row['speedup']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
