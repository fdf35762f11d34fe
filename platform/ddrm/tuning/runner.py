"""Drive studies on Ray Tune: ``run_search`` (``ddrm tune``) and ``run_ablation`` (``ddrm ablate``).

The driver builds the study's :class:`~.plan.StudyPlan` once (every trial's config, the shared constants),
trains every backend that several trials share (once, into the shared backend cache, as parallel Ray tasks;
:mod:`.pretrain`), opens the MLflow parent run and hands the trials to Tune. Locally Ray is started with the
machine's cores; under ``ray job submit`` (``RAY_ADDRESS`` set) it joins the cluster (:mod:`.cluster`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from ..metrics import BEST, REPORT_METRICS, TEST, is_final, strip_prefix
from .cluster import check_cluster_fits, fit_resources, init_ray  # noqa: F401 - the study API in one place
from .plan import StudyContext, StudyPlan, encode_choice, study_context
from .pretrain import pretrain_backends  # noqa: F401
from .spec import MODEL_SEPARATOR, AblationSpec, Resources, SearchSpec
from .threaded import sigint_restored, stop_requested, tune_run  # noqa: F401 - sigint_restored: the study API
from .tune_folder import restorable

_context = study_context  # the name tests and older callers use
_REPORTING = threading.Lock()  # one study's report at a time, whichever thread runs the study
# A finished trial's worker process starts the study's next trial (Tune resets its function session) instead of a
# new process importing torch, Ray and the package again: about 4 s of wall per trial on a 2-core host (more than
# a small trial's training). Every trial seeds its own RNGs and sets its own torch threads (:mod:`.trainable`), so
# its metrics do not depend on the process it runs in. Not while studies share trial slots (:func:`reuse_actors`).
REUSE_ACTORS = True


def reuse_actors() -> bool:
    """Whether this study's Tune reuses finished trials' workers: :data:`REUSE_ACTORS`, unless the study shares a
    campaign's trial slots with studies running beside it. There Tune keeps a finished trial's worker, and the Ray CPU
    it holds, for the study's next trial while the study waits for a shared slot another study holds, whose trial
    then waits for that CPU: measured on the Amazon campaign (2026-12-07), one of two CPUs idled that way."""
    from .slots import shared_pool

    return REUSE_ACTORS and shared_pool() is None


def _study_key(kind: str, name: str, payload: dict[str, Any], storage: Path) -> str:
    """The parent run's ``study_key`` tag; a storage folder under the working directory enters it relative, so
    a checkout at another path (the next session's machine) finds the same parent run in a committed store."""
    where = os.path.relpath(storage) if Path(storage).resolve().is_relative_to(Path.cwd().resolve()) else str(storage)
    blob = json.dumps({"kind": kind, "name": name, "payload": payload, "storage": where}, sort_keys=True,
                      default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


LEGACY_TRAINABLE = "ddrm_trainable"  # the one name every study's trainable had before studies ran side by side


def trainable_name(study: str) -> str:
    """Tune's name of a study's trainable, its own: Tune keeps a driver's trainables in Ray's key-value store by
    name, so two studies running at once under one name would each train with the plan registered last."""
    return f"{LEGACY_TRAINABLE}_{hashlib.sha1(study.encode()).hexdigest()[:8]}"


def stored_trainable_name(path: Path) -> str | None:
    """The trainable name a Tune experiment folder was made with (Tune restores it only under that name); None
    when its ``tuner.pkl`` cannot be read."""
    import ray.cloudpickle

    try:
        state = ray.cloudpickle.loads((Path(path) / "tuner.pkl").read_bytes())
    except Exception:  # noqa: BLE001 - Tune's own restore then says what is wrong with the folder
        return None
    name = state.get("__trainable_name") if isinstance(state, dict) else None
    return name if isinstance(name, str) else None


def restores_alone(path: Path) -> bool:
    """Whether the study whose Tune folder is ``path`` must run with no other study beside it: a folder made
    before studies ran side by side restores under the shared trainable name and with a searcher that takes no
    shared trial slots (:mod:`.slots`)."""
    return restorable(path) and stored_trainable_name(path) == LEGACY_TRAINABLE


def _tuner(plan: StudyPlan, param_space: dict[str, Any], spec_name: str, ctx: StudyContext, resources: Resources,
           max_failures: int, callbacks: list, tune_config, resume: bool, searched: list[str] | None = None):
    """The study's Tuner (restored from ``ctx.storage`` on ``resume``); the trainable gets ``plan`` through
    ``tune.with_parameters``, under the study's own name (:func:`trainable_name`; a restored folder's own). Its
    console table (:mod:`.progress`): variant and seed (an ablation) or the ``searched`` keys, then epoch and the
    validation objective."""
    from ray import tune

    from .progress import ablation_reporter, search_reporter, use_classic_output
    from .stale_checkpoints import guard
    from .trainable import ddrm_trainable

    use_classic_output()  # else Tune's new output ignores the reporter and prints every trial's whole config
    objective = tune_config.metric or "recall_at_20"
    reporter = ablation_reporter(objective) if searched is None else search_reporter(searched, objective)
    path = ctx.storage / spec_name
    restoring = resume and restorable(path)
    with_plan = tune.with_parameters(ddrm_trainable, plan=plan)
    with_plan.__name__ = (stored_trainable_name(path) if restoring else None) or trainable_name(spec_name)
    trainable = tune.with_resources(with_plan, {"cpu": resources.cpu, "gpu": resources.gpu})
    if restoring:
        print(f"resuming study from {path}", flush=True)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   param_space=param_space)
        # the callbacks are the ones pickled with the folder; a folder made before StaleCheckpoints gets one
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = guard(run_config.callbacks)
        return tuner
    if resume:
        print(f"nothing to resume at {path}; starting a new study", flush=True)
    run_config = tune.RunConfig(
        name=spec_name, storage_path=str(ctx.storage), callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1, progress_reporter=reporter)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _callbacks(callback, ctx: StudyContext, parent: str, snapshot_to: str | Path | None) -> list:
    """The study's Tune callbacks: its MLflow logger, then (``snapshot_to``) the ``runs.csv`` snapshot of the store,
    and :class:`.stale_checkpoints.StaleCheckpoints` (a resumed trial whose checkpoint is gone trains anew)."""
    from .snapshot import RunsSnapshot
    from .stale_checkpoints import guard

    return guard([callback] + ([RunsSnapshot(ctx.tracking_uri, parent, snapshot_to)] if snapshot_to else []))


def _import(ctx: StudyContext, parent: str, runs_csv: Any, plan_trials: set[str] | None = None) -> None:
    """Log the rows of a committed ``runs.csv`` (or of several, in order: :data:`.importer.RunsSource`) missing
    from the store under ``parent`` (:mod:`.importer`); ``plan_trials``: an ablation's trial keys (only their
    rows), None for a search (every row)."""
    from .importer import import_runs, source_name

    sources = runs_csv if isinstance(runs_csv, (list, tuple)) else [runs_csv]
    for source in sources:
        if source is None or (isinstance(source, (str, Path)) and not str(source)):
            continue
        count = import_runs(ctx.tracking_uri, parent, source, plan_trials)
        print(f"imported {count} finished trial(s) from {source_name(source)} into the tracking store", flush=True)


def _threads(resources: Resources) -> int:
    """Planned torch threads per trial: its CPU share, rounded up."""
    return max(1, int(math.ceil(resources.cpu)))


def _previous_row(trial) -> dict[str, Any]:
    """A trial finished before a resume from the tracking store, as a row of :func:`_rows`: ``done`` when it
    trained to the end (its final metrics are logged: ``best_epoch``; the selection metrics are the logged
    validation values of its chosen epoch), else a trial a scheduler stopped early (it counts as a trial and for
    its epochs)."""
    metrics = strip_prefix(BEST, trial.metrics, keep=[k for k in trial.metrics if k.startswith((TEST, "epoch"))])
    done = is_final(trial.metrics)
    return {"config": dict(trial.point), "metrics": {**metrics, "done": done}, "error": None, "done": done}


def _rows(results) -> list[dict[str, Any]]:
    """One row per Tune result: its ``config`` (param_space values), ``metrics``, ``error`` and ``done`` (trained
    to the end: its final report arrived)."""
    rows = []
    for result in results:
        config = dict(result.config or {})
        metrics = dict(result.metrics or {})
        rows.append({"config": config, "metrics": metrics, "error": str(result.error) if result.error else None,
                     "done": bool(metrics.get("done")) and is_final(metrics)})
    return rows


def interrupted(rows: list[dict[str, Any]], expected: int | None = None) -> bool:
    """Whether Tune stopped the study before its end (a SIGINT: Tune ends the run, saves its state and returns):
    a trial that neither ended (Tune marks a trial that returned, or that a scheduler stopped, ``done``) nor
    failed, or fewer trials than ``expected`` (a TPE search's ``num_samples``)."""
    unfinished = any(not r["error"] and not r["metrics"].get("done") for r in rows)
    return unfinished or (expected is not None and len(rows) < expected)


def _publish(ctx: StudyContext, name: str, parent: str, kind: str, best: dict[str, Any] | None = None,
             searched: list[str] | tuple[str, ...] = (), objective: str = "recall_at_20") -> Path | None:
    """The report of the study's experiment into ``<storage>/<name>/report/``, logged to the parent run with
    the study's result as its metrics (:func:`ddrm.report.build.publish_study`); its folder, or None (with a
    warning: the trials are done and logged either way) when it cannot be made."""
    from ..report.build import publish_study

    out = ctx.storage / name / "report"
    try:
        with _REPORTING:  # matplotlib's pyplot, which draws the plots, is not thread-safe
            publish_study(ctx.tracking_uri, name, parent, out, kind, best, searched, objective)
    except Exception as exc:  # noqa: BLE001 - a study's results must not be lost to a plotting/report error
        print(f"warning: no report for {name}: {type(exc).__name__}: {exc}", flush=True)
        return None
    return out


# ----------------------------------------------------------------------------------------- search
def _optuna_space(spec: SearchSpec) -> dict[str, Any]:
    """The spec's space as Optuna distributions (list-valued choices encoded: :func:`.plan.encode_choice`)."""
    import optuna

    space = {}
    for key, dist in spec.space.items():
        if dist["type"] == "choice":
            space[key] = optuna.distributions.CategoricalDistribution([encode_choice(v) for v in dist["values"]])
        elif dist["type"] == "randint":
            space[key] = optuna.distributions.IntDistribution(dist["low"], dist["high"] - 1)
        else:
            space[key] = optuna.distributions.FloatDistribution(dist["low"], dist["high"],
                                                                 log=dist["type"] == "loguniform")
    return space


def _grid_remainder(spec: SearchSpec, ctx: StudyContext, parent: str, grid: dict[str, list[Any]],
                    import_runs: Any):
    """A grid search resumed from the tracking store: ``(search_alg, num_samples, previous)`` — a variant
    generator of the grid points no finished trial holds (one trial each; None when there are none), how many
    they are, and the finished trials (:mod:`.warmstart`)."""
    from ray.tune.search import BasicVariantGenerator

    from .warmstart import previous_trials, remaining_grid_points

    _import(ctx, parent, import_runs)
    previous = previous_trials(ctx.tracking_uri, parent, _optuna_space(spec), spec.metric, with_seed=True)
    todo = remaining_grid_points(grid, list(spec.seeds), spec.num_samples, previous)
    print(f"resuming from the tracking store: {len(previous)} finished trial(s) of {spec.name} are kept without "
          f"training; {len(todo)} grid point(s) left to run", flush=True)
    search_alg = BasicVariantGenerator(points_to_evaluate=todo, max_concurrent=spec.max_concurrent) if todo else None
    return search_alg, len(todo), previous


def _stored_rows(spec: SearchSpec, ctx: StudyContext, parent: str, rows: list[dict[str, Any]]) -> list[dict]:
    """Rows (:func:`_previous_row`) of the finished trials under ``parent`` in the tracking store that are not
    among Tune's ``rows``: trials of an earlier session, so a resumed search's best is over the whole study."""
    from .warmstart import previous_trials

    seen = {str(r["metrics"].get("trial_id")) for r in rows}
    stored = previous_trials(ctx.tracking_uri, parent, _optuna_space(spec), spec.metric,
                             with_seed=spec.mode == "grid")
    return [_previous_row(p) for p in stored if p.trial_id not in seen]


def best_row(finished: list[dict[str, Any]], spec: SearchSpec) -> dict[str, Any]:
    """The finished trial with the highest validation objective; a tie goes to the sampled values that sort first
    (as JSON), so a resumed search, whose earlier trials come from the store in another order, chooses the same
    config and its dependent stages and tables keep their studies."""
    def rank(row: dict[str, Any]) -> tuple[float, str]:
        sampled = {k: row["config"].get(k) for k in spec.space}
        return -row["metrics"].get(spec.metric, -1.0), json.dumps(sampled, sort_keys=True, default=str)

    return min(finished, key=rank)


def search_plan(spec: SearchSpec, ctx: StudyContext, resources: Resources) -> StudyPlan:
    """The plan of a search: its base config, which searched keys carry list-valued choices, and no test: its
    trials are compared on validation and never score the test split."""
    encoded = tuple(k for k, d in spec.space.items()
                    if d["type"] == "choice" and any(isinstance(v, (list, dict)) for v in d["values"]))
    return StudyPlan(base=spec.base, data_dir=str(ctx.data_dir), cache_dir=str(ctx.cache_dir),
                     threads=_threads(resources), encoded=encoded, evaluate_test=False,  # chosen on validation
                     device=resources.device)


def run_search(spec: SearchSpec, storage: str | None = None, tracking_uri: str | None = None,
               data_dir: str | None = None, resume: bool = False, import_runs: Any = None,
               snapshot_to: str | Path | None = None) -> dict[str, Any]:
    """Optuna TPE (seeded, concurrency-limited) or grid over ``spec.space``, ASHA or FIFO; returns the best trial
    by validation (``best``: its params and validation metrics; the trials score no test split).

    ``import_runs`` (with ``resume``): a committed ``runs.csv`` of this search whose rows missing from the store
    are logged into it first (:mod:`.importer`), so a search whose store was lost continues from the file; or a
    list of them, or of rows read from one (an earlier search's rows a campaign stage imports), in that order.
    ``snapshot_to``: a folder whose ``runs.csv`` is rewritten after each finished trial (:mod:`.snapshot`)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .. import tracking
    from .mlflow_callback import MLflowTrialCallback
    from .slots import SharedSlots

    ctx = study_context(storage, data_dir, tracking_uri)
    resources = fit_resources(spec.resources)
    plan = search_plan(spec, ctx, resources)
    base_config = plan.base_config()
    if not any(k.startswith(("model.", "denoise.")) for k in spec.space) and base_config.ddrm.enabled:
        pretrain_backends([base_config.replace({"seed": s}) for s in spec.seeds], ctx, threads=plan.threads,
                          evaluate_test=plan.evaluate_test, device=plan.device, gpus=resources.gpu)
    key = _study_key("tune", spec.name, {"base": base_config.to_flat_dict(), "space": spec.space, "mode": spec.mode},
                     ctx.storage)  # the validated base: the same study whichever key names its YAML used
    parent = tracking.start_parent_run(ctx.tracking_uri, spec.name, key,
                                       {"study": spec.name, "kind": "tune", "mode": spec.mode, "spec": spec.source,
                                        "threads_per_trial": str(plan.threads)})
    num_samples, previous, search_alg = spec.num_samples, [], None
    param_space: dict[str, Any] = {}
    if spec.mode == "grid":
        grid = {name: [encode_choice(v) for v in dist["values"]] for name, dist in spec.space.items()}
        param_space = {name: tune.grid_search(values) for name, values in grid.items()}
        param_space["seed"] = tune.grid_search(list(spec.seeds))
        if resume and not restorable(ctx.storage / spec.name):  # Tune's folder is gone
            search_alg, num_samples, previous = _grid_remainder(spec, ctx, parent, grid, import_runs)
    else:
        space = _optuna_space(spec)
        param_space["seed"] = spec.seeds[0]
        if resume and not restorable(ctx.storage / spec.name):  # Tune's folder is gone
            from .warmstart import previous_trials

            _import(ctx, parent, import_runs)

            previous = previous_trials(ctx.tracking_uri, parent, space, spec.metric)
            num_samples = max(0, spec.num_samples - len(previous))
            print(f"resuming from the tracking store: {len(previous)} finished trial(s) of {spec.name} are told to "
                  f"the searcher without training; {num_samples} left to run", flush=True)
        searcher = OptunaSearch(space=space, metric=spec.metric, mode="max",
                                # resumed: reseeded by how many trials it was told, else its first random
                                # draws would repeat the told trials' configs (seeded the same as before)
                                sampler=optuna.samplers.TPESampler(seed=spec.seeds[0] + len(previous)),
                                points_to_evaluate=[p.point for p in previous] or None,
                                evaluated_rewards=[p.reward for p in previous] or None)
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
    if search_alg is None:  # a whole grid: what Tune would make of max_concurrent_trials
        search_alg = BasicVariantGenerator(max_concurrent=spec.max_concurrent)
    scheduler = None
    if spec.scheduler["type"] == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.scheduler["max_t"],
                                  grace_period=spec.scheduler["grace_period"],
                                  reduction_factor=spec.scheduler["reduction_factor"], stop_last_trials=False)
    tune_config = tune.TuneConfig(metric=spec.metric, mode="max", search_alg=SharedSlots(search_alg),
                                  scheduler=scheduler, num_samples=num_samples, reuse_actors=reuse_actors())
    callback = MLflowTrialCallback(ctx.tracking_uri, parent, spec.name, plan)
    rows, stopped = [], False
    if num_samples:
        callbacks = _callbacks(callback, ctx, parent, snapshot_to)
        tuner = _tuner(plan, param_space, spec.name, ctx, resources, spec.max_failures, callbacks, tune_config,
                       resume and not previous, searched=list(spec.space))
        with tune_run():
            rows = _rows(tuner.fit())
    # the store's finished trials that Tune's (restored or new) experiment does not hold
    stored = _stored_rows(spec, ctx, parent, rows) if resume else []
    if num_samples:
        # SIGINT (or a campaign's stop): Tune returned early. A TPE search is whole once Tune's trials and the
        # store's earlier ones make its num_samples: a restored Tune folder that a resume from the store started
        # holds only the trials left then
        expected = spec.num_samples - len(stored) if spec.mode == "tpe" else None
        stopped = interrupted(rows, expected) or stop_requested()
    rows += stored
    finished = [r for r in rows if r["done"]]
    best = best_row(finished, spec) if finished else None
    summary = {"experiment": spec.name, "tracking_uri": ctx.tracking_uri, "parent_run_id": parent,
               "trials": len(rows), "finished": len(finished), "errored": sum(1 for r in rows if r["error"]),
               "epochs_spent": int(sum(r["metrics"].get("epoch", 0) for r in rows)), "best": None,
               "interrupted": stopped}
    if best is not None:  # validation only: a search's trials score no test (rerun the best config for that)
        summary["best"] = {"params": plan.decode(best["config"]),
                           "valid": {k: best["metrics"][k] for k in REPORT_METRICS}}
    tracking.log_table(ctx.tracking_uri, parent, json.dumps(summary, indent=2, default=str), "summary.json")
    if best is not None:  # the report of the search, the best trial's objective on the parent
        result = {"valid": {spec.metric: best["metrics"].get(spec.metric)}}
        summary["report"] = _publish(ctx, spec.name, parent, "tune", result, list(spec.space), spec.metric)
    tracking.finish_run(ctx.tracking_uri, parent, "FINISHED" if finished else "FAILED")
    return summary


# --------------------------------------------------------------------------------------- ablation
def ablation_table(spec: AblationSpec, plan: StudyPlan, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The end-of-study table (:mod:`ddrm.report.table`: mean ± std of the test metrics over seeds per variant,
    ``*`` against the spec's reference) and per-variant stats ``{variant: {n, failed, test: {metric: {mean,
    std, values}}}}`` (:func:`ddrm.stats.seed_stats`: std ``None`` for one seed); failed trials are counted
    apart."""
    from ..report.table import TABLE_METRICS, markdown, summarize
    from ..stats import seed_stats

    records, failed = [], {name: 0 for name in spec.variants}
    for row in rows:
        variant = row["config"].get("variant")
        if variant not in failed:
            continue
        if not row["done"]:
            failed[variant] += 1
            continue
        config = plan.config(row["config"])
        model, _, plain = variant.rpartition(MODEL_SEPARATOR)
        records.append({"model": model or config.model.name, "variant": plain,
                        "full_name": variant, "seed": config.seed,
                        **{m: row["metrics"].get(m) for m in TABLE_METRICS}})
    frame = pd.DataFrame(records, columns=["model", "variant", "full_name", "seed", *TABLE_METRICS])
    text = markdown(summarize(frame, spec.reference, list(TABLE_METRICS)), list(TABLE_METRICS), spec.reference)
    if any(failed.values()):
        text += "\n" + ", ".join(f"{name}: {n} failed" for name, n in failed.items() if n) + " (not counted)"
    stats: dict[str, Any] = {}
    for name in spec.variants:
        group = frame[frame["full_name"] == name]
        per_metric = {}
        for metric in TABLE_METRICS:
            stats_of_metric = seed_stats(group[metric])  # one seed: std None (undefined, not 0)
            if stats_of_metric["values"]:
                per_metric[metric[len(TEST):]] = stats_of_metric
        stats[name] = {"n": len(group), "failed": failed[name], "test": per_metric}
    return text, stats


def ablation_plan(spec: AblationSpec, ctx: StudyContext, resources: Resources) -> StudyPlan:
    """The plan of an ablation: every (variant, seed) trial's config, built once from the spec."""
    from .plan import trial_key

    return StudyPlan(base=spec.base, data_dir=str(ctx.data_dir), cache_dir=str(ctx.cache_dir),
                     threads=_threads(resources),
                     trials={trial_key(v, s): c for (v, s), c in spec.configs().items()},
                     evaluate_test=True, device=resources.device)  # an ablation's table is of test metrics


def run_ablation(spec: AblationSpec, storage: str | None = None, tracking_uri: str | None = None,
                 data_dir: str | None = None, resume: bool = False, reuse_from: list[str] | None = None,
                 import_runs: str | None = None, snapshot_to: str | Path | None = None) -> dict[str, Any]:
    """Every variant x seed as a Tune trial (FIFO, no search); returns the table and per-variant stats.

    ``import_runs`` (with ``resume``): as for :func:`run_search`; the imported finished trials are replayed.
    ``snapshot_to``: as for :func:`run_search`.

    ``reuse_from``: tracking URIs whose FINISHED trial runs with the same complete config are replayed
    instead of retrained (see :mod:`.reuse`).
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from .. import tracking
    from .mlflow_callback import MLflowTrialCallback
    from .plan import trial_key
    from .slots import SharedSlots

    ctx = study_context(storage, data_dir, tracking_uri)
    resources = fit_resources(spec.resources)
    plan = ablation_plan(spec, ctx, resources)
    trials = [(v, s, c) for (v, s), c in spec.configs().items()]
    reuse: dict[str, Any] = {}
    if reuse_from:
        from .reuse import check_source, explain_misses, find_reusable

        sources = [check_source(uri) for uri in reuse_from]
        reuse = find_reusable(trials, sources, with_test=plan.evaluate_test)
        print(f"reusing {len(reuse)} of {len(trials)} trials (identical config, FINISHED) from "
              f"{', '.join(reuse_from)}" + "".join(f"\n  {k} <- {r['source']}" for k, r in reuse.items()), flush=True)
        misses = explain_misses(trials, sources, reuse, with_test=plan.evaluate_test)
        if misses:
            print("\n".join(f"  {k} not reused: {why}" for k, why in misses.items()), flush=True)
    key = _study_key("ablate", spec.name, {"trials": {f"{v}|{s}": c.to_flat_dict() for v, s, c in trials},
                                           "seeds": spec.seeds},
                     ctx.storage)
    parent = tracking.start_parent_run(ctx.tracking_uri, spec.name, key,
                                       {"study": spec.name, "kind": "ablate", "spec": spec.source,
                                        "threads_per_trial": str(plan.threads),
                                        **spec.report_tags()})
    restarting = resume and not restorable(ctx.storage / spec.name)
    resumed_runs: dict[str, str] = {}
    if restarting:  # Tune's folder is gone: finished trials replay into their runs, the others train
        from .reuse import replay_record
        from .warmstart import finished_ablation_trials

        planned = {trial_key(v, s) for v, s, _ in trials}  # a store may hold other selections' trials too
        _import(ctx, parent, import_runs, planned)
        done_before = {k: run for k, run in finished_ablation_trials(ctx.tracking_uri, parent).items()
                       if k in planned}
        resumed_runs = {k: run.info.run_id for k, run in done_before.items()}
        reuse.update({k: replay_record(ctx.tracking_uri, run) for k, run in done_before.items()})
        print(f"resuming from the tracking store: {len(done_before)} of {len(trials)} trials finished before "
              f"and are replayed, not trained", flush=True)
    plan = plan.with_changes(reuse=reuse, resumed_runs=resumed_runs)
    pretrain_backends([c for v, s, c in trials if trial_key(v, s) not in reuse],  # replayed trials need none
                      ctx, threads=plan.threads, min_uses=2, evaluate_test=plan.evaluate_test,
                      device=plan.device, gpus=resources.gpu)
    param_space = {"variant": tune.grid_search(list(spec.variants)), "seed": tune.grid_search(list(spec.seeds))}
    every_trial = BasicVariantGenerator(max_concurrent=spec.max_concurrent)  # what max_concurrent_trials makes
    tune_config = tune.TuneConfig(search_alg=SharedSlots(every_trial), num_samples=1, reuse_actors=reuse_actors())
    callback = MLflowTrialCallback(ctx.tracking_uri, parent, spec.name, plan)
    callbacks = _callbacks(callback, ctx, parent, snapshot_to)
    tuner = _tuner(plan, param_space, spec.name, ctx, resources, spec.max_failures, callbacks, tune_config,
                   resume and not restarting)
    with tune_run():
        rows = _rows(tuner.fit())
    stopped = interrupted(rows) or stop_requested()
    table, stats = ablation_table(spec, plan, rows)
    tracking.log_table(ctx.tracking_uri, parent, table + "\n", "table.md")  # the report's table.md replaces it
    done = sum(1 for r in rows if r["done"])
    report = _publish(ctx, spec.name, parent, "ablate") if done else None
    tracking.finish_run(ctx.tracking_uri, parent, "FINISHED" if done else "FAILED")
    return {"experiment": spec.name, "tracking_uri": ctx.tracking_uri, "parent_run_id": parent, "table": table,
            "variants": stats, "trials": len(rows), "finished": done,
            "errored": sum(1 for r in rows if r["error"]), "report": report, "interrupted": stopped}
