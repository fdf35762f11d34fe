"""``ddrm campaign plan|run SPEC --dataset D``: a dataset's whole tuned comparison from one command."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .errors import ConfigError


def add_campaign_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("campaign", help="a whole tuned comparison on one dataset: searches, then tables",
                              description="Run (or plan) every stage of a campaign spec in dependency order, then "
                                          "its tables, with the protocol enforced (equal budget, searches on "
                                          "validation only, table seeds disjoint from the search seed).")
    p.add_argument("action", choices=["plan", "run", "summary"],
                   help="plan: print the stage graph and the estimated cost; run: run it (resumes); summary: one "
                        "table across --dataset a,b,c (rows x datasets, R@20 / N@20) and each claim's verdict")
    p.add_argument("spec", help="campaign YAML, e.g. campaigns/tuned.yaml")
    p.add_argument("--dataset", required=True, help="prepared dataset name (data.name), e.g. ml-1m_noisy; "
                                                    "summary: comma-separated")
    p.add_argument("--data-dir", help="folder of prepared datasets (default: $DDRM_DATA_DIR, else ./data); a "
                                      "missing dataset is prepared there, or in ./data when it is read-only")
    p.add_argument("--out", help="campaign folder (default: the spec's `results` folder / <dataset>, else "
                                 "campaign_results/<name>/<dataset>); its runs.csv files are resumed from")
    p.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///<out>/mlruns.db)")
    p.add_argument("--storage", help="Tune results folder (default: ./ray_results)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all cores)")
    p.add_argument("--budget", type=int, help="trials per searched stage, replacing the spec's (every stage alike)")
    p.add_argument("--max-epochs", type=int, metavar="N", help="smoke run: cap every stage at N >= 1 epochs")
    p.add_argument("--no-probe", action="store_true", help="plan: skip the measured probe (no CPU-hours)")
    p.set_defaults(func=cmd_campaign)


def _spec(args: argparse.Namespace):
    from .campaign.spec import CampaignSpec, load_campaign

    spec = load_campaign(args.spec)
    changes: dict = {}
    if args.budget is not None:
        if args.budget < 1:
            raise ConfigError(f"--budget {args.budget}: expected an integer >= 1")
        changes["budget"] = args.budget
    if args.max_epochs is not None:
        if args.max_epochs < 1:
            raise ConfigError(f"--max-epochs {args.max_epochs}: expected an integer >= 1")
        base = dict(spec.base)
        base["train"] = {**(base.get("train") or {}), "max_epochs": args.max_epochs}
        changes["base"] = base
    return CampaignSpec.model_validate({**spec.model_dump(), **changes}) if changes else spec


def _out(spec, args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    if spec.results:
        return Path(spec.source).parent / spec.results / args.dataset
    return Path("campaign_results") / spec.name / args.dataset


def campaign_data_dir(dataset: str, data_dir: str | None) -> str:
    """A data folder holding ``dataset``: ``data_dir`` if it has it; else the dataset is prepared into
    ``data_dir``, or into ./data when ``data_dir`` is read-only (``../shared`` is), and that folder is used."""
    from .data.fetch import ensure_dataset
    from .data.prepared import resolve_data_dir

    root = resolve_data_dir(data_dir)
    if (root / dataset / "train_list.npy").is_file():
        return str(root)
    writable = root.is_dir() and os.access(root, os.W_OK) and root.stat().st_mode & 0o222  # root ignores access()
    target = root if writable else Path("data").resolve()
    if target != root:
        print(f"{root} is read-only: preparing {dataset} into {target}", flush=True)
    ensure_dataset(dataset, target)
    print(f"dataset {dataset}: {target / dataset}", flush=True)
    return str(target)


def cmd_campaign(args: argparse.Namespace) -> int:
    from .campaign.plan import format_plan, plan_campaign

    spec = _spec(args)
    if args.action == "summary":
        from .campaign.summary import across_datasets

        datasets = [d.strip() for d in args.dataset.split(",") if d.strip()]
        outs = {d: _out(spec, argparse.Namespace(**{**vars(args), "dataset": d})) for d in datasets}
        missing = [str(o / "campaign.json") for o in outs.values() if not (o / "campaign.json").is_file()]
        if missing:
            raise ConfigError(f"no campaign results at {', '.join(missing)}: run `ddrm campaign run` first")
        for table in spec.tables:
            print(f"## {table}\n\n{across_datasets(outs, table)}")
        return 0
    out = _out(spec, args)
    data_dir = campaign_data_dir(args.dataset, args.data_dir)
    cpus = args.num_cpus or os.cpu_count() or 1
    plan = plan_campaign(spec, args.dataset, out, data_dir, probe=not (args.action == "plan" and args.no_probe))
    print(format_plan(plan, cpus), flush=True)
    if args.action == "plan":
        return 0
    from .campaign.run import run_campaign
    from .tuning.runner import init_ray

    out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{(out / 'mlruns.db').resolve()}"
    init_ray(args.num_cpus)
    record = run_campaign(spec, args.dataset, out, storage=args.storage, tracking_uri=uri, data_dir=data_dir,
                          estimate=plan)
    done = all(t["finished"] == t["trials"] for t in record["tables"].values())
    print(f"campaign {spec.name} on {args.dataset}: {len(record['stages'])} stages, {len(record['tables'])} tables; "
          f"wrote {out / 'campaign.json'}")
    print(json.dumps({t: {k: v for k, v in r.items() if k != 'rows'} for t, r in record["tables"].items()}))
    return 0 if done else 1
