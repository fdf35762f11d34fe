"""``ddrm tune|ablate|report``: studies on Ray Tune logged to MLflow, and their reports (DESIGN §7)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_output import _check_writable, format_metrics
from .errors import DDRMError

if TYPE_CHECKING:
    from .tuning.spec import AblationSpec, SearchSpec


def _add_study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every trial, e.g. --set train.epochs=2")
    p.add_argument("--max-epochs", type=int, metavar="N",
                   help="smoke run: cap every stage of every trial (backend, DDRM, standalone model) at N >= 1 "
                        "epochs (train.max_epochs; recorded with each run and marked in the report)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db)")
    p.add_argument("--storage", help="Tune results folder, shared storage on a cluster (default: ./ray_results)")
    p.add_argument("--data-dir", help="folder holding prepared datasets (default: $DDRM_DATA_DIR, else ./data)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study of the same name")
    p.add_argument("--import-runs", metavar="RUNS_CSV",
                   help="with --resume: first log the finished trials of this committed runs.csv (ddrm report's) that "
                        "the tracking store lacks, so a study whose store was lost continues without retraining them")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all cores); ignored on a cluster")
    p.add_argument("--cpus-per-trial", type=float,
                   help="CPUs (and torch threads) per trial, replacing the spec's resources.cpu")
    p.add_argument("--max-concurrent", type=int, help="trials running at once, replacing the spec's max_concurrent")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, replacing the spec's resources.gpu; fractions share a GPU (0.125: 8 trials)")


def _with_study_flags(spec: SearchSpec | AblationSpec, args: argparse.Namespace) -> SearchSpec | AblationSpec:
    """``spec`` with ``--cpus-per-trial`` / ``--gpus-per-trial`` / ``--max-concurrent`` applied (validated like
    the spec's keys)."""
    from dataclasses import replace

    from .errors import ConfigError
    from .tuning.spec import Resources

    if args.cpus_per_trial is not None:
        if not args.cpus_per_trial > 0:
            raise ConfigError(f"--cpus-per-trial {args.cpus_per_trial:g}: expected a number > 0")
        spec = replace(spec, resources=Resources(float(args.cpus_per_trial), spec.resources.gpu))
    if getattr(args, "gpus_per_trial", None) is not None:
        if not args.gpus_per_trial >= 0:
            raise ConfigError(f"--gpus-per-trial {args.gpus_per_trial:g}: expected a number >= 0 (fractions allowed)")
        spec = replace(spec, resources=Resources(spec.resources.cpu, float(args.gpus_per_trial)))
    if args.max_concurrent is not None:
        if args.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent {args.max_concurrent}: expected an integer >= 1")
        spec = replace(spec, max_concurrent=args.max_concurrent)
    return spec


def _study_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` overrides of a study, plus ``train.max_epochs`` from ``--max-epochs``."""
    overrides = _overrides(args.overrides)
    if args.max_epochs is not None:
        if args.max_epochs < 1:  # 0 would run a whole study of untrained models
            from .errors import ConfigError

            raise ConfigError(f"--max-epochs {args.max_epochs}: expected an integer >= 1 (the most epochs every "
                              "stage of every trial trains)")
        overrides["train.max_epochs"] = args.max_epochs
    return overrides


def _overrides(texts: list[str]) -> dict[str, Any]:
    from .config import parse_override

    return dict(parse_override(t) for t in texts)


def _mlflow_hint(uri: str, experiment: str) -> str:
    """How to open the study in MLflow: the ``mlflow ui`` command (a local store) and the URL of the
    experiment's runs view in the model-training pages (MLflow 3 opens on its GenAI pages otherwise)."""
    from .tracking import runs_view_url

    url = runs_view_url(uri, experiment)
    if uri.startswith(("http://", "https://")):
        return f"compare the runs of '{experiment}' in MLflow: {url or uri}"
    lines = [f"compare the runs: mlflow ui --backend-store-uri {uri}   (experiment '{experiment}')"]
    if url:
        lines.append(f"  then open {url}")
    return "\n".join(lines)


def _report_hint(summary: dict[str, Any]) -> str | None:
    """Where the study's report went (None when none was written)."""
    if not summary.get("report"):
        return None
    return (f"report (every study in experiment '{summary['experiment']}'; also the parent run's artifacts): "
            f"{Path(summary['report']) / 'report.html'}")


def _check_study_outputs(args: argparse.Namespace) -> None:
    """Before Ray starts: the tracking URI is one MLflow has a store for (and its server answers), the Tune
    storage folder can be written, and an ``--import-runs`` file (only with ``--resume``) is a runs.csv."""
    from .errors import ConfigError
    from .tracking import check_tracking_server, resolve_tracking_uri
    from .tuning.importer import read_runs_csv

    if args.import_runs:
        if not args.resume:
            raise ConfigError(f"--import-runs {args.import_runs}: only with --resume (it continues a study)")
        read_runs_csv(args.import_runs)

    check_tracking_server(resolve_tracking_uri(args.tracking_uri))
    _check_writable(Path(args.storage or "ray_results"), "--storage")


def _check_datasets(names: set[str], data_dir: str | None) -> None:
    """Fail with one line before Ray starts when a dataset is missing or malformed."""
    from .data.fetch import ensure_dataset
    from .data.prepared import load_prepared, resolve_data_dir

    for name in sorted(names):
        ensure_dataset(name, resolve_data_dir(data_dir))
        load_prepared(name, resolve_data_dir(data_dir))


@contextlib.contextmanager
def _tracking_server_watch(tracking_uri: str | None):
    """A study that fails while its ``http(s)://`` tracking server does not answer ends in one ``error:`` line
    naming the server (MLflow's client retries for minutes first); other failures propagate unchanged."""
    from .tracking import check_tracking_server, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        yield
    except Exception as exc:
        if not uri.startswith(("http://", "https://")):
            raise
        try:
            check_tracking_server(uri, timeout=5.0)
        except DDRMError:
            raise DDRMError(f"the study stopped: the MLflow tracking server {uri} stopped answering "
                            f"({type(exc).__name__}); the runs logged so far are kept (RUNNING) — start the server "
                            f"again and rerun the same command with --resume") from None
        raise


def cmd_tune(args: argparse.Namespace) -> int:
    from .tuning.spec import load_search_spec

    spec = _with_study_flags(load_search_spec(args.space, _study_overrides(args), args.num_samples), args)
    from .config import config_from_dict
    from .tuning.runner import init_ray, run_search

    _check_datasets({config_from_dict(spec.base).data.name}, args.data_dir)  # a search's trials share its data
    _check_study_outputs(args)
    init_ray(args.num_cpus)
    with _tracking_server_watch(args.tracking_uri):
        summary = run_search(spec, storage=args.storage, tracking_uri=args.tracking_uri, data_dir=args.data_dir,
                             resume=args.resume, import_runs=args.import_runs)
    print(f"study {spec.name}: {summary['finished']}/{summary['trials']} trials finished, {summary['errored']} errored, "
          f"{summary['epochs_spent']} epochs spent")
    if summary["best"] is None:
        print("no trial finished")
        return 1
    print("best config (by validation " + spec.metric + "):")
    for key, value in sorted(summary["best"]["params"].items()):
        print(f"  {key} = {value}")
    print(format_metrics({"best valid": summary["best"]["valid"]}))  # a search's trials score no test split
    if report := _report_hint(summary):
        print(report)
    print(_mlflow_hint(summary["tracking_uri"], spec.name))
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    """``"1,2"`` -> [1, 2]; anything else is one ConfigError naming the flag."""
    from .errors import ConfigError

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,2") from None


def cmd_ablate(args: argparse.Namespace) -> int:
    from .tuning.spec import load_ablation_spec

    only_models = [m.strip() for m in args.models.split(",")] if args.models is not None else None
    only_variants = [v.strip() for v in args.variants.split(",")] if args.variants is not None else None
    seeds = args.seeds if args.seed_list is None else _int_list(args.seed_list, "--seed-list")
    spec = _with_study_flags(load_ablation_spec(args.spec, _study_overrides(args), seeds, only_models,
                                                only_variants), args)
    from .tuning.runner import init_ray, run_ablation
    from .tuning.reuse import check_source

    for uri in args.reuse_from or []:
        check_source(uri)  # before Ray starts: a wrong path is one error line

    _check_datasets({config.data.name for config in spec.configs().values()}, args.data_dir)
    _check_study_outputs(args)
    init_ray(args.num_cpus)
    with _tracking_server_watch(args.tracking_uri):
        summary = run_ablation(spec, storage=args.storage, tracking_uri=args.tracking_uri, data_dir=args.data_dir,
                               resume=args.resume, reuse_from=args.reuse_from, import_runs=args.import_runs)
    print(f"ablation {spec.name}: {summary['finished']}/{summary['trials']} trials finished, "
          f"{summary['errored']} errored; test metrics, mean ± std over seeds:")
    print(summary["table"])
    if report := _report_hint(summary):
        print(report)
    print(_mlflow_hint(summary["tracking_uri"], spec.name))
    return 0 if summary["finished"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from .report.build import build_report
    from .tracking import resolve_tracking_uri, sqlite_store_missing

    uri = resolve_tracking_uri(args.tracking_uri)
    if bool(args.target) == bool(args.experiment):
        raise DDRMError("ddrm report: give one experiment name or parent run id (positional or --experiment)")
    args.target = args.target or args.experiment
    if sqlite_store_missing(uri):
        raise DDRMError(f"no MLflow store at {uri} (the file does not exist); pass --tracking-uri")
    out = Path(args.out) if args.out else Path("reports") / args.target
    report = build_report(uri, args.target, out, args.reference, args.alpha, html=args.html, baseline=args.baseline,
                          spec=args.spec)
    print(report.text)
    if report.facts["failed"]:
        print(f"({report.facts['failed']} failed trial(s) not counted)")
    print("wrote " + ", ".join(str(p) for p in report.files))
    return 0


def _add_report_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="tables (mean ± std, paired t-test) and plots from MLflow runs")
    p.add_argument("target", nargs="?", help="MLflow experiment name (an ablation/study name) or a parent run id")
    p.add_argument("--experiment", help="the same as TARGET (DESIGN's spelling)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db)")
    p.add_argument("--out", help="output folder (default: reports/TARGET)")
    p.add_argument("--reference", help="variant the significance test compares against (default: the spec's)")
    p.add_argument("--baseline", metavar="MODEL/VARIANT[,...]",
                   help="rows every row is also tested against, marked †, ‡, ... (default: the spec's baseline), "
                        "comma-separated, e.g. ease/tuned,itemknn/tuned")
    p.add_argument("--spec", metavar="ABLATION.yaml",
                   help="read reference, baseline, family and claims from this ablation spec instead of the "
                        "study's tags (table.md then says the family was given when the report was built)")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="significance level of the Holm-adjusted paired t-tests and the claims' verdicts (0.01)")
    p.add_argument("--html", action="store_true",
                   help="also write report.html: the tables, plots, per-seed values and configs on one static page")
    p.set_defaults(func=cmd_report)


def add_study_parsers(subparsers: argparse._SubParsersAction) -> None:
    """The ``tune``, ``ablate`` and ``report`` sub-commands."""
    tune_parser = subparsers.add_parser("tune", help="hyperparameter search (Optuna TPE or grid, ASHA) on Ray Tune")
    tune_parser.add_argument("space", help="search-space YAML (see search_spaces/)")
    tune_parser.add_argument("--num-samples", type=int, help="number of trials (overrides the spec)")
    _add_study_flags(tune_parser)
    tune_parser.set_defaults(func=cmd_tune)
    ablate_parser = subparsers.add_parser("ablate", help="run an ablation spec (variants x seeds) as Tune trials")
    ablate_parser.add_argument("spec", help="ablation YAML (see ablations/)")
    seed_choice = ablate_parser.add_mutually_exclusive_group()
    seed_choice.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the spec's list")
    seed_choice.add_argument("--seed-list", help="use exactly these seeds, comma-separated (e.g. 1,2 to add "
                                                 "seeds to an experiment that has seed 0)")
    ablate_parser.add_argument("--models", help="run only these of the spec's models, comma-separated "
                                                "(e.g. --models mf); a separate study from the full spec")
    ablate_parser.add_argument("--reuse-from", action="append", metavar="URI",
                               help="MLflow tracking URI (repeatable) whose FINISHED trial runs with exactly the "
                                    "same config are replayed instead of retrained (e.g. a reference row "
                                    "measured by another study); the new run is tagged reused_from")
    ablate_parser.add_argument("--variants", help="run only these of the spec's variants, comma-separated (e.g. "
                                                  "--variants item_only to add rows next to reference rows "
                                                  "already in the same tracking store)")
    _add_study_flags(ablate_parser)
    ablate_parser.set_defaults(func=cmd_ablate)
    _add_report_parser(subparsers)
