"""The ``ddrm data fetch|prepare|stats`` command group. Handlers return 0 and raise DDRMError on bad input."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ConfigError, DataError
from .fetch import DATASETS, fetch
from .prepared import load_prepared, resolve_data_dir
from .presets import build_preset, parse_preset, preset_names
from .raw import FORMATS, kcore, read_ratings
from .split import DEFAULT_RATIOS, SETTING_ALIASES, SETTINGS, SPLIT_KINDS, format_stats, prepare, table1_stats


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


def _prepare_preset(args: argparse.Namespace, preset: tuple) -> Path:
    """``ddrm data prepare amazon-hin_noisy ...``: the preset fixes format, setting and split kind."""
    name, (_, spec, setting) = args.raw_path, preset
    fixed = (("--setting", args.setting and SETTING_ALIASES.get(args.setting, args.setting), setting),
             ("--format", None if args.format == "auto" else args.format, spec.fmt),
             ("--split", None if args.split == "auto" else args.split, spec.split))
    for flag, given, wanted in fixed:
        if given is not None and given != wanted:
            raise ConfigError(f"{name} is built with {flag} {wanted}, not {given}; to build it otherwise pass the "
                              f"raw file as RAW_PATH with --name")
    if args.noise_ratio is not None:
        raise ConfigError(f"{name} has no --noise-ratio (it is a {setting} split; --noise-ratio goes with "
                          f"--setting random and a RAW_PATH)")
    if args.name and (Path(args.name).name != args.name or args.name in ("", ".", "..")):
        raise ConfigError(f"--name must be a plain folder name, got {args.name!r} (use --out for a path)")
    out = Path(args.out) if args.out else resolve_data_dir(args.data_dir) / (args.name or name)
    return build_preset(name, args.data_dir, raw=args.raw, out=out,
                        ratios=parse_ratios(args.ratios) if args.ratios else None, seed=args.seed,
                        threshold=args.threshold, kcore=args.kcore, overwrite=args.force)


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.out and args.name:
        raise ConfigError("give either --out DIR or --name NAME (with --data-dir), not both")
    if args.kcore is not None and args.kcore < 1:
        raise ConfigError(f"--kcore must be an integer >= 1, got {args.kcore}")
    preset = None if Path(args.raw_path).exists() else parse_preset(args.raw_path)
    if preset is not None:
        path = _prepare_preset(args, preset)
        print(path)
        _print_stats(path)
        return 0
    if args.raw:
        raise ConfigError(f"--raw goes with a dataset name ({', '.join(preset_names())}), not with a RAW_PATH")
    if not args.setting:
        raise ConfigError("ddrm data prepare RAW_PATH needs --setting (clean, natural = noisy, or random)")
    if args.out:
        out = Path(args.out)
    elif args.name:
        if Path(args.name).name != args.name or args.name in ("", ".", ".."):
            raise ConfigError(f"--name must be a plain folder name, got {args.name!r} (use --out for a path)")
        out = resolve_data_dir(args.data_dir) / args.name
    else:
        raise ConfigError("ddrm data prepare needs --out DIR or --name NAME (written under --data-dir)")
    ratios = parse_ratios(args.ratios) if args.ratios else DEFAULT_RATIOS
    df = read_ratings(args.raw_path, fmt=args.format)
    if args.kcore:
        df = kcore(df, args.kcore)
        if df.empty:
            raise DataError(f"{args.raw_path}: no interactions left after the {args.kcore}-core filter")
    path = prepare(df, out, args.setting, ratios=ratios, noise_ratio=args.noise_ratio,
                   positive_threshold=args.threshold, seed=args.seed, overwrite=args.force,
                   source=str(args.raw_path), split=args.split)
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
    p.add_argument("raw_path", metavar="RAW_PATH",
                   help="ratings file (or a folder holding ratings.dat / u.data), or a dataset name "
                        f"({', '.join(preset_names())}) built from its raw file into --data-dir/NAME")
    p.add_argument("--out", help="output folder")
    p.add_argument("--name", help="output folder name under --data-dir")
    p.add_argument("--data-dir", help="data folder for --name (default $DDRM_DATA_DIR, else ./data)")
    p.add_argument("--raw", help="with a dataset name: its raw file (default: looked for under --data-dir, "
                                 "$DDRM_SHARED_DATASETS and ../shared/datasets)")
    p.add_argument("--setting", choices=list(SETTINGS) + list(SETTING_ALIASES),
                   help="clean: positives only; natural (= noisy): ratings below threshold kept in train/valid; "
                        "random: clean plus injected unobserved pairs (required with a RAW_PATH)")
    p.add_argument("--split", default="auto", choices=SPLIT_KINDS,
                   help="per-user order of the 7:1:2 cut: chronological (ties by item id), random (seeded by "
                        "--seed), auto (default: chronological, random when the file has no timestamps)")
    p.add_argument("--noise-ratio", type=float, help="random setting: injected pairs per clean pair, in [0, 1]")
    p.add_argument("--ratios", help="train,valid,test fractions (default 0.7,0.1,0.2)")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                   help="raw format (default auto; a tab-separated file: 4 fields = uirt, 3 = uir)")
    p.add_argument("--kcore", type=int, help="keep only the K-core (users and items with >= K interactions)")
    p.add_argument("--threshold", type=float, default=4.0, help="rating >= threshold is a true positive (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random setting and of a random split (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("stats", help="Table-1 style statistics of a prepared dataset folder")
    p.add_argument("dir", metavar="DIR", help="prepared folder (or a dataset name under --data-dir)")
    p.add_argument("--data-dir", help="data folder for a bare name (default $DDRM_DATA_DIR, else ./data)")
    p.set_defaults(func=cmd_stats)
