"""End to end: one ``ddrm train`` of MF + DDRM on ML-1M from scratch (backend not cached), wall time and peak RSS.

Each precision runs as its own child process, one after the other, in the same invocation:

    ddrm train --backend mf --no-cache --set ddrm.epochs=20 --set ddrm.patience=4 --set train.precision=P \\
        --data-dir DATA --quiet --out <tmp>

and the JSON records, per precision, the wall seconds from start to the final test metrics, the child's peak RSS
(``os.wait4``), its test/valid metrics and the config it ran, with the host (CPU model, bf16 flags) and the
load average around it (a wall time measured while other jobs ran is not a benchmark). Example
(docs/PERFORMANCE.md):

    python bench/end_to_end.py --data-dir ../shared/datasets --json docs/results/benchmarks/end_to_end.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from precision import host_facts, host_kind  # noqa: E402


def train_once(data_dir: str, precision: str, extra: list[str]) -> dict:
    """Run one ``ddrm train`` child; its wall seconds, peak RSS (MB), exit code and metrics.json."""
    with tempfile.TemporaryDirectory(prefix="ddrm_e2e_") as out:
        command = [sys.executable, "-m", "ddrm.cli", "train", "--backend", "mf", "--no-cache",
                   "--set", "ddrm.epochs=20", "--set", "ddrm.patience=4", "--set", f"train.precision={precision}",
                   "--data-dir", data_dir, "--quiet", "--out", out, *extra]
        load_start = os.getloadavg()[0]
        start = time.perf_counter()
        child = subprocess.Popen(command)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        metrics_path = Path(out) / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {"precision": precision, "exit_code": code, "wall_seconds": round(wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: ru_maxrss in KiB
            "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
            "test": metrics.get("test"), "valid": metrics.get("valid"),
            "train_config": (metrics.get("config") or {}).get("train")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--json", help="write the record here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (e.g. ddrm.epochs=1 for a smoke run)")
    args = parser.parse_args(argv)
    extra = [token for item in args.set for token in ("--set", item)]
    runs = []
    for precision in args.precisions:
        run = train_once(args.data_dir, precision, extra)
        test = run["test"] or {}
        print(f"{precision}: {run['wall_seconds']:.1f} s wall, peak RSS {run['peak_rss_mb']:.0f} MB, "
              f"test R@20 {test.get('recall_at_20', float('nan')):.4f}, exit {run['exit_code']}", flush=True)
        runs.append(run)
    record = {"command": "ddrm train --backend mf --no-cache --set ddrm.epochs=20 --set ddrm.patience=4 "
                         "--set train.precision=P --data-dir DATA --quiet --out TMP " + " ".join(extra),
              "host_kind": host_kind(), "host": host_facts(), "runs": runs}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.json).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.json)
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
