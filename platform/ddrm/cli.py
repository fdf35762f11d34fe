"""``ddrm`` command line: ``ddrm data|train|tune|ablate|report`` (DESIGN §7). Bad input: one ``error:`` line,
exit code 2. The study commands live in :mod:`.cli_study`, printing helpers in :mod:`.cli_output`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .cli_output import METRIC_ROWS, _check_writable, format_metrics, write_json_atomic  # noqa: F401
from .cli_campaign import add_campaign_parser
from .cli_study import _mlflow_hint, _with_study_flags, add_study_parsers  # noqa: F401 - the CLI's API
from .errors import DDRMError


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a backend (+ DDRM) and report full-ranking metrics",
                              description="Train a backend, optionally DDRM on its embeddings; writes OUT/metrics.json.")
    p.add_argument("--config", help="YAML config with sections data/model/denoise/ddrm/train and seed (the old shape with backend is read too)")
    p.add_argument("--backend", help="a backend to train, with DDRM unless --no-ddrm (model.name), e.g. mf, lightgcn, sgl")
    p.add_argument("--dataset", help="prepared dataset folder name under the data dir (data.name)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ddrm", dest="ddrm", action="store_true", default=None, help="train DDRM (default)")
    group.add_argument("--no-ddrm", dest="ddrm", action="store_false", help="evaluate the backend alone")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, repeatable, e.g. --set ddrm.steps=20")
    p.add_argument("--model", help="any registered model (model.name), e.g. multivae or ease; DDRM is on by default only for backends "
                   "(an unknown name lists the registered ones)")
    p.add_argument("--denoise", choices=["none", "tce", "rce", "deca"],
                   help="loss-side denoising of the backend's training (denoise.name): T-CE, R-CE or DeCA")
    p.add_argument("--seed", type=int, help="random seed (seed)")
    p.add_argument("--epochs", type=int, help="max epochs per stage (train.epochs)")
    p.add_argument("--data-dir", help="folder holding prepared datasets (default: $DDRM_DATA_DIR, else ./data)")
    p.add_argument("--out", help="output folder (default: runs/<dataset>-<backend>[-ddrm]-seed<S>-<time>)")
    p.add_argument("--no-cache", action="store_true", help="retrain the backend even if a cached one exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .config import parse_override

    overrides: dict[str, Any] = {}
    for flag, key in (("backend", "model.name"), ("model", "model.name"), ("dataset", "data.name"), ("seed", "seed"),
                      ("epochs", "train.epochs"), ("ddrm", "ddrm.enabled"), ("data_dir", "data.dir"),
                      ("denoise", "denoise.name")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.fetch import ensure_dataset
    from .data.prepared import resolve_data_dir
    from .train import load_dataset, run

    config = load_config(args.config, _train_overrides(args))
    data_dir = resolve_data_dir(config.data.dir)
    ensure_dataset(config.data.name, data_dir)
    data = load_dataset(config, data_dir)
    what = f"{config.model.name}{'-ddrm' if config.ddrm.enabled else ''}"
    out = Path(args.out) if args.out else Path("runs") / (
        f"{config.data.name}-{what}-seed{config.seed}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}")
    _check_writable(out, "--out")  # before training, not a traceback after the whole run
    print(f"dataset {data.name}: {data.n_users} users, {data.n_items} items, {len(data.train)} train pairs "
          f"({data.path})", flush=True)
    def report(event) -> None:
        print(f"{event.stage} epoch {event.epoch:>3}: loss {event.loss:.4f}  valid recall_at_20 "
              f"{event.valid['recall_at_20']:.4f} (best {event.best_valid.get('recall_at_20', float('nan')):.4f})  "
              f"{event.seconds:.0f}s", flush=True)

    result = run(config, data=data, progress=not args.quiet, use_cache=not args.no_cache, callback=report)
    payload = result.to_json()
    from .host import host_tags
    from .report.runs import relative_path  # a metrics.json may be committed: no absolute machine paths in it

    payload["info"].update(host_tags())  # where it ran: the same seed can round differently on another CPU

    for holder, field in ((payload["config"]["data"], "dir"), (payload["info"], "dataset")):
        if isinstance(holder.get(field), str):
            holder[field] = relative_path(holder[field])
    write_json_atomic(out / "metrics.json", payload)
    first = config.model.name if config.final_stage == "model" else "backend"
    columns = {f"{first} valid": result.backend.valid, f"{first} test": result.backend.test}
    if result.ddrm is not None:
        columns.update({"ddrm valid": result.ddrm.valid, "ddrm test": result.ddrm.test})
    print(format_metrics(columns))
    cached = " (backend from cache)" if result.backend.from_cache else ""
    ddrm_part = (f"; ddrm best epoch {result.ddrm.best_epoch} (stopped: {result.ddrm.stop_reason})"
                 if result.ddrm else "")
    print(f"{first} best epoch {result.backend.best_epoch}{cached} (stopped: {result.backend.stop_reason}){ddrm_part}")
    if result.diagnostics:
        print("denoising diagnostics (injected training pairs): "
              + ", ".join(f"{k} {v:.4f}" for k, v in result.diagnostics.items()))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data.commands import add_data_parser

    parser = argparse.ArgumentParser(prog="ddrm", description="DDRM research platform")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_data_parser(subparsers)
    _add_train_parser(subparsers)
    add_study_parsers(subparsers)
    add_campaign_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DDRMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
