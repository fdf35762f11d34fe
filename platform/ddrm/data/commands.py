"""The ``ddrm data fetch|prepare|stats`` command group. Handlers return 0 and raise DDRMError on bad input."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ConfigError, DataError
from .fetch import DATASETS, fetch
from .prepared import load_prepared, resolve_data_dir
from .raw import FORMATS, kcore, read_ratings
from .split import DEFAULT_RATIOS, SETTINGS, SETTING_ALIASES, format_stats, prepare, table1_stats


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` → (0.7, 0.1, 0.2); ConfigError on anything else (the sum is checked by prepare)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--ratios must be three numbers train,valid,test like 0.7,0.1,0.2, got {text!r}")
    return values  # type: ignore[return-value]


def _print_stats(folder: Path) -> None:
    folder = folder.resolve()
    data = load_prepared(folder.name, folder.parent)
    print(format_stats(table1_stats(data), title=f"dataset {folder}"))


def cmd_fetch(args: argparse.Namespace) -> int:
    path = fetch(args.dataset, args.data_dir, url=args.url, md5=args.md5, sha256=args.sha256,
                 timeout=args.timeout, overwrite=args.force)
    print(path)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.out and args.name:
        raise ConfigError("give either --out DIR or --name NAME (with --data-dir), not both")
    if args.out:
        out = Path(args.out)
    elif args.name:
        if Path(args.name).name != args.name or args.name in ("", ".", ".."):
            raise ConfigError(f"--name must be a plain folder name, got {args.name!r} (use --out for a path)")
        out = resolve_data_dir(args.data_dir) / args.name
    else:
        raise ConfigError("ddrm data prepare needs --out DIR or --name NAME (written under --data-dir)")
    ratios = parse_ratios(args.ratios) if args.ratios else DEFAULT_RATIOS
    if args.kcore is not None and args.kcore < 1:
        raise ConfigError(f"--kcore must be an integer >= 1, got {args.kcore}")
    df = read_ratings(args.raw_path, fmt=args.format)
    if args.kcore:
        df = kcore(df, args.kcore)
        if df.empty:
            raise DataError(f"{args.raw_path}: no interactions left after the {args.kcore}-core filter")
    path = prepare(df, out, args.setting, ratios=ratios, noise_ratio=args.noise_ratio,
                   positive_threshold=args.threshold, seed=args.seed, overwrite=args.force,
                   source=str(args.raw_path))
    print(path)
    _print_stats(path)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir() and not folder.is_absolute():
        candidate = resolve_data_dir(args.data_dir) / args.dir
        if candidate.is_dir():
            folder = candidate
    if not folder.is_dir():
        raise DataError(f"{args.dir}: not a prepared dataset folder")
    _print_stats(folder.resolve())
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data`` with sub-commands fetch / prepare / stats (each sets ``func``)."""
    data = subparsers.add_parser("data", help="fetch raw datasets, prepare splits, show statistics",
                                 description="Fetch raw datasets, prepare train/valid/test splits, show statistics.")
    sub = data.add_subparsers(dest="data_command", metavar="{fetch,prepare,stats}")
    sub.required = True

    p = sub.add_parser("fetch", help="download and extract a MovieLens archive into <data-dir>/raw/<dataset>/")
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--data-dir", help="data folder (default $DDRM_DATA_DIR, else ./data)")
    p.add_argument("--url", help="archive URL (default $DDRM_FETCH_BASE_URL/<dataset>.zip, else GroupLens)")
    p.add_argument("--md5", help="expected md5 of the archive (default: the published one)")
    p.add_argument("--sha256", help="expected sha256 of the archive (checked instead of md5)")
    p.add_argument("--timeout", type=float, default=30, help="network timeout in seconds (default 30)")
    p.add_argument("--force", action="store_true", help="download again even if already extracted")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("prepare", help="split a raw ratings file into a prepared dataset folder")
    p.add_argument("raw_path", metavar="RAW_PATH", help="ratings file (or a folder holding ratings.dat / u.data)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--name", help="output folder name under --data-dir")
    p.add_argument("--data-dir", help="data folder for --name (default $DDRM_DATA_DIR, else ./data)")
    p.add_argument("--setting", required=True, choices=list(SETTINGS) + list(SETTING_ALIASES),
                   help="clean: positives only; natural (= noisy): ratings below threshold kept in train/valid; "
                        "random: clean plus injected unobserved pairs")
    p.add_argument("--noise-ratio", type=float, help="random setting: injected pairs per clean pair, in [0, 1]")
    p.add_argument("--ratios", help="train,valid,test fractions (default 0.7,0.1,0.2)")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="raw format (default auto)")
    p.add_argument("--kcore", type=int, help="keep only the K-core (users and items with >= K interactions)")
    p.add_argument("--threshold", type=float, default=4.0, help="rating >= threshold is a true positive (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random setting (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("stats", help="Table-1 style statistics of a prepared dataset folder")
    p.add_argument("dir", metavar="DIR", help="prepared folder (or a dataset name under --data-dir)")
    p.add_argument("--data-dir", help="data folder for a bare name (default $DDRM_DATA_DIR, else ./data)")
    p.set_defaults(func=cmd_stats)
