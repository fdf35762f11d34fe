"""Run named config variants over several seeds and print a mean ± std table of test metrics.

Each variant is a list of dotted overrides (as ``ddrm train --set``). The backend is trained once per
seed and reused from the cache by every variant of that seed. Example (the MF rows of docs/RESULTS.md):

    python bench/seed_table.py --data-dir ../shared/datasets --seeds 0 1 2 \\
        --variant "MF-BPR=ddrm.enabled=false" \\
        --variant "MF + mean of liked items=ddrm.inference_steps=0" \\
        --variant "MF + DDRM=" --json docs/results/runs/mf_ml1m.json

Long runs survive interruption: after every evaluation the run's resumable state is saved under
``--checkpoint-dir`` (default ``~/.cache/ddrm/seed_table``, keyed by the run's full config), and a rerun
with ``--resume`` continues an unfinished (variant, seed) from its last evaluation instead of restarting
it (``ddrm.train.run(resume=...)``: it ends where an uninterrupted run would). The file is removed when
the run completes. With ``--resume`` the JSON keeps the runs of seeds not in ``--seeds``, so seeds can run as
separate processes (``--seeds 1`` and ``--seeds 2``) that fill one file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from ddrm.cache import cache_root
from ddrm.config import Config, load_config, parse_override
from ddrm.data import load_prepared
from ddrm.errors import ConfigError
from ddrm.stats import format_mean_std, mean_std
from ddrm.train import EvalEvent, run

METRICS = ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20")


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``"a=1,b=[2,3]"`` -> ``["a=1", "b=[2,3]"]``."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in items + [current] if item.strip()]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME=k=v,k=[1,2]"`` -> (NAME, ["k=v", "k=[1,2]"])."""
    name, _, rest = text.partition("=")
    return name, split_top_level(rest)


def log_evaluation(event: EvalEvent) -> None:
    """One stderr line per evaluation, so a long run can be followed."""
    loss = "-" if math.isnan(event.loss) else f"{event.loss:.4f}"  # epoch 0: evaluated before any training
    print(f"  {event.stage} epoch {event.epoch}: loss {loss} valid R@20 {event.valid['recall_at_20']:.4f} "
          f"(best {event.best_valid['recall_at_20']:.4f}, {event.seconds:.1f}s)", file=sys.stderr, flush=True)


def checkpoint_path(root: Path, config: Config) -> Path:
    """Where the resumable state of the run of ``config`` is kept (keyed by the whole flat config)."""
    blob = json.dumps(config.to_flat_dict(), sort_keys=True, default=str).encode()
    return root / f"{hashlib.sha256(blob).hexdigest()[:20]}.pt"


def saving_callback(path: Path):
    """An evaluation callback that logs the evaluation and saves the run's state to ``path`` atomically."""
    def callback(event: EvalEvent) -> None:
        log_evaluation(event)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(event.state(), partial)
        partial.replace(path)

    return callback


def merged_rows(path: str, seeds: list[int], rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """``rows`` (this run's variants and seeds) plus every other run already in the JSON at ``path``: other
    seeds of this run's variants, and all seeds of variants this run does not list.

    Read at every write, so processes running disjoint ``--seeds`` (or ``--variant`` lists) with ``--resume``
    fill one file.
    """
    target = Path(path)
    previous = json.loads(target.read_text())["rows"] if target.is_file() else {}
    names = list(previous) + [name for name in rows if name not in previous]
    merged = {}
    for name in names:
        others = [r for r in previous.get(name, []) if name not in rows or r["seed"] not in seeds]
        merged[name] = sorted(others + rows.get(name, []), key=lambda r: r["seed"])
    return merged


def write_json(path: str, dataset: str, common: list[str], rows: dict) -> None:
    """Write atomically, so an interrupted run leaves the last complete file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    seeds = sorted({r["seed"] for runs in rows.values() for r in runs})
    partial.write_text(json.dumps({"dataset": dataset, "seeds": seeds, "common": common, "rows": rows},
                                  indent=2, default=str))
    partial.replace(target)


def markdown_table(rows: dict[str, list[dict]]) -> str:
    """Mean ± std (:mod:`ddrm.stats`: sample std; the mean alone for one seed) of the test metrics per variant,
    best epochs."""
    header = "| variant | seeds | " + " | ".join(m.replace("_at_", "@").replace("recall", "R").replace("ndcg", "N")
                                                for m in METRICS) + " | best epoch |"
    lines = [header, "|" + "---|" * (len(METRICS) + 3)]
    for name, runs in rows.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        if not runs:
            continue
        cells = []
        for metric in METRICS:
            cells.append(format_mean_std(*mean_std(r["test"][metric] for r in runs)))  # one seed: no spread
        epochs = ",".join(str(r["best_epoch"]) for r in runs)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {epochs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--data-dir", help="folder of prepared datasets (required unless --table-only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", default=[], help="NAME=key=value,key=value")
    parser.add_argument("--set", dest="common", action="append", default=[], help="override for every variant")
    parser.add_argument("--json", help="write all per-seed results here (rewritten after every run)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the (variant, seed) runs already in --json (other seeds and variants included) "
                             "and run only the missing ones")
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs in --json, run nothing")
    parser.add_argument("--checkpoint-dir", help="where unfinished runs keep their state (default: "
                                                 "~/.cache/ddrm/seed_table, or $DDRM_CACHE_DIR/seed_table)")
    args = parser.parse_args(argv)
    if args.table_only:
        if not args.json or not Path(args.json).is_file():
            parser.error("--table-only needs an existing --json file")
        print(markdown_table(json.loads(Path(args.json).read_text())["rows"]))
        return 0
    if not args.variant or not args.data_dir:
        parser.error("--variant and --data-dir are required to run")

    variants = [parse_variant(v) for v in args.variant]
    for name, overrides in variants:  # every variant's config is checked before hours of runs start
        try:
            load_config(None, {"data.name": args.dataset, "seed": args.seeds[0],
                               **dict(parse_override(o) for o in args.common + overrides)})
        except (ConfigError, ValueError) as exc:
            parser.error(f"--variant {name!r}: {exc} (the form is NAME=key=value,...; NAME cannot contain '=')")
    data = load_prepared(args.dataset, args.data_dir)
    checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else cache_root() / "seed_table"
    rows: dict[str, list[dict]] = {name: [] for name, _ in variants}

    def file_rows() -> dict[str, list[dict]]:
        """What --json holds after this run: with --resume, other seeds' runs already there are kept."""
        return merged_rows(args.json, args.seeds, rows) if args.resume and args.json else rows

    if args.resume and args.json and Path(args.json).is_file():
        done = json.loads(Path(args.json).read_text())["rows"]
        rows.update({name: [r for r in done.get(name, []) if r["seed"] in args.seeds] for name in rows})
    for seed in args.seeds:
        for name, overrides in variants:
            if any(r["seed"] == seed for r in rows[name]):
                continue
            pairs = dict(parse_override(o) for o in args.common + overrides)
            config = load_config(None, {"data.name": args.dataset, "seed": seed, **pairs})
            checkpoint = checkpoint_path(checkpoints, config)
            resume = torch.load(checkpoint, weights_only=False) if args.resume and checkpoint.is_file() else None
            if resume is not None:
                print(f"seed {seed} {name}: resuming the {resume['stage']} stage after epoch "
                      f"{resume['track']['epoch']} ({checkpoint})", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = run(config, data=data, progress=False, callback=saving_callback(checkpoint), resume=resume)
            checkpoint.unlink(missing_ok=True)
            stage = result.ddrm or result.backend
            rows[name].append({"seed": seed, "test": result.test, "valid": result.valid,
                               "best_epoch": stage.best_epoch, "epochs_run": stage.epochs_run,
                               "stop_reason": stage.stop_reason,
                               "seconds": time.perf_counter() - start, "resumed": resume is not None,
                               "config": config.to_flat_dict()})
            if args.json:
                write_json(args.json, args.dataset, args.common, file_rows())
            print(f"seed {seed} {name}: test R@20 {result.test['recall_at_20']:.4f} (best epoch {stage.best_epoch}, "
                  f"{time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    print(markdown_table(file_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
