"""``ddrm campaign plan|run SPEC --dataset D``: a dataset's whole tuned comparison from one command."""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    p.add_argument("--no-probe", action="store_true", help="skip the measured probe: no CPU-hours in the plan (or "
                                                           "in campaign.json's estimate), minutes sooner to the trials")
    p.add_argument("--max-concurrent", metavar="K", help="trials running at once in all, replacing the spec's "
                                                         "max_concurrent")
    p.add_argument("--stages-at-once", metavar="N", help="stages (and tables) running side by side, each as soon as "
                                                         "the stages it needs are chosen, sharing the trials; 1: "
                                                         "one at a time (default: the spec's stages_at_once, else "
                                                         "max_concurrent)")
    p.add_argument("--cpus-per-trial", metavar="N", help="CPUs (and torch threads) per trial, replacing the spec's "
                                                         "cpus_per_trial")
    p.add_argument("--gpus-per-trial", metavar="F", help="GPU share per trial, replacing the spec's gpus_per_trial: a "
                                                         "fraction in (0, 1] (0.125: 8 trials share one GPU) or whole "
                                                         "GPUs; 0: none")
    p.add_argument("--device", metavar="cuda|cpu|auto",
                   help="every trial's train.device, replacing the spec's device (default: what the spaces say, "
                        "auto). Where trials run, not what they compute: a campaign resumes across devices")
    p.set_defaults(func=cmd_campaign)


def _number(flag: str, text: str, kind: type, expected: str, ok) -> float | int:
    """``text`` of ``flag`` as ``kind`` when ``ok`` holds for it, else one :class:`ConfigError` line."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ConfigError(f"{flag} {text}: expected {expected}")
    return value


def resource_changes(args: argparse.Namespace) -> dict:
    """The spec keys ``--max-concurrent`` / ``--stages-at-once`` / ``--cpus-per-trial`` / ``--gpus-per-trial`` /
    ``--device`` replace, each validated (one :class:`ConfigError` line)."""
    from .campaign.spec import gpu_share_error
    from .campaign.spec import DEVICES

    changes: dict = {}
    if args.max_concurrent is not None:
        changes["max_concurrent"] = _number("--max-concurrent", args.max_concurrent, int, "an integer >= 1",
                                            lambda v: v >= 1)
    if args.stages_at_once is not None:
        changes["stages_at_once"] = _number("--stages-at-once", args.stages_at_once, int, "an integer >= 1",
                                            lambda v: v >= 1)
    if args.cpus_per_trial is not None:
        changes["cpus_per_trial"] = _number("--cpus-per-trial", args.cpus_per_trial, float, "a number > 0",
                                            lambda v: 0 < v < float("inf"))
    if args.gpus_per_trial is not None:
        changes["gpus_per_trial"] = _number("--gpus-per-trial", args.gpus_per_trial, float,
                                            "a fraction of one GPU in (0, 1] or a whole number of GPUs (0: none)",
                                            lambda v: v < float("inf") and not gpu_share_error(v))
    if args.device is not None:
        if args.device not in DEVICES:
            raise ConfigError(f"--device {args.device}: expected one of {', '.join(DEVICES)}")
        changes["device"] = args.device
    return changes


def check_device(spec) -> None:
    """On a local Ray: ``device: cuda`` needs a GPU torch can see here (one line, before any trial fails on it);
    without ``gpus_per_trial`` a notice that Ray does not count the GPU. A cluster's driver is not checked."""
    if spec.device != "cuda" or os.environ.get("RAY_ADDRESS"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: torch {torch.__version__} sees no CUDA device on this machine; use "
                          f"--device cpu or auto, or run where a GPU is")
    if not spec.gpus_per_trial:
        print("notice: --device cuda without --gpus-per-trial: Ray does not count the GPU, so up to "
              f"{spec.max_concurrent} trials share it unscheduled", flush=True)


def _spec(args: argparse.Namespace):
    from .campaign.spec import CampaignSpec, load_campaign

    spec = load_campaign(args.spec)
    changes: dict = resource_changes(args)
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
            print(f"## {table}\n\n{across_datasets(outs, table, list(spec.tables[table].rows))}")
        return 0
    if args.action == "run":
        check_device(spec)  # before the data and the plan's probe: minutes, for trials that would all fail
    out = _out(spec, args)
    data_dir = campaign_data_dir(args.dataset, args.data_dir)
    cpus = args.num_cpus or os.cpu_count() or 1
    plan = plan_campaign(spec, args.dataset, out, data_dir, probe=not args.no_probe)
    print(format_plan(plan, cpus), flush=True)
    if args.action == "plan":
        return 0
    from .campaign.run import CampaignInterrupted, run_campaign
    from .tuning.runner import init_ray

    out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{(out / 'mlruns.db').resolve()}"
    init_ray(args.num_cpus)
    try:
        record = run_campaign(spec, args.dataset, out, storage=args.storage, tracking_uri=uri, data_dir=data_dir,
                              estimate=plan, replan=lambda: plan_campaign(spec, args.dataset, out, data_dir,
                                                                          probe=not args.no_probe))
    except CampaignInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr, flush=True)
        return 130
    done = all(t["finished"] == t["trials"] for t in record["tables"].values())
    print(f"campaign {spec.name} on {args.dataset}: {len(record['stages'])} stages, {len(record['tables'])} tables; "
          f"wrote {out / 'campaign.json'}")
    print(json.dumps({t: {k: v for k, v in r.items() if k != 'rows'} for t, r in record["tables"].items()}))
    return 0 if done else 1
