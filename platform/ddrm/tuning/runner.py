"""Drive studies on Ray Tune: ``run_search`` (``ddrm tune``) and ``run_ablation`` (``ddrm ablate``).

Before any trial starts, the driver trains every backend that several trials share (once, into the
shared backend cache, as parallel Ray tasks), opens the MLflow parent run and then hands the trials to
Tune. Locally Ray is started with the machine's cores; under ``ray job submit`` (``RAY_ADDRESS`` set) it
joins the cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config import Config, config_from_dict, apply_overrides
from ..data.fetch import ensure_dataset
from ..data.prepared import resolve_data_dir
from .spec import AblationSpec, Resources, SearchSpec

TABLE_METRICS = ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20")


@dataclass
class StudyContext:
    storage: Path
    cache_dir: Path
    data_dir: Path
    tracking_uri: str


def _context(storage: str | None, data_dir: str | None, tracking_uri: str | None) -> StudyContext:
    from ..tracking import resolve_tracking_uri

    storage_path = Path(storage or "ray_results").resolve()
    cache = Path(os.environ.get("DDRM_CACHE_DIR") or storage_path / "backend_cache").resolve()
    return StudyContext(storage_path, cache, resolve_data_dir(data_dir).resolve(), resolve_tracking_uri(tracking_uri))


def init_ray(num_cpus: int | None = None) -> None:
    """Join a running cluster when ``RAY_ADDRESS`` is set, else start a local Ray with pinned CPUs.

    The local case passes ``address="local"``: a bare ``ray.init()`` would instead join whatever cluster
    ``<ray temp dir>/ray_current_cluster`` names (the last ``ray start`` or test cluster on this machine,
    alive or long dead) and then refuse ``num_cpus``.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=True)


def fit_resources(resources: Resources) -> Resources:
    """Per-trial resources that a *local* Ray can schedule.

    A trial asking for more CPUs (or GPUs) than the local Ray has would stay pending forever, so on a local
    Ray the request is shrunk to what exists (with a notice); on a cluster (``RAY_ADDRESS`` set) it is kept,
    since nodes may join, but must fit some node there is or that an autoscaler can add
    (:func:`check_cluster_fits`). Returns ``resources`` unchanged when Ray is not initialised.
    """
    import ray

    if not ray.is_initialized():
        return resources
    if os.environ.get("RAY_ADDRESS"):
        check_cluster_fits(resources)
        return resources
    total = ray.cluster_resources()
    cpu = min(resources.cpu, float(total.get("CPU", resources.cpu)))
    gpu = min(resources.gpu, float(total.get("GPU", 0.0)))
    if (cpu, gpu) != (resources.cpu, resources.gpu):
        print(f"resources: the spec asks for cpu={resources.cpu:g}, gpu={resources.gpu:g} per trial; this local Ray "
              f"has CPU={total.get('CPU', 0):g}, GPU={total.get('GPU', 0):g}, so each trial gets cpu={cpu:g}, "
              f"gpu={gpu:g}", flush=True)
    return Resources(cpu=cpu, gpu=gpu)


WAIT_ENV = "DDRM_WAIT_FOR_RESOURCES"  # "1": start a study whose trials fit no node yet (nodes will be added by hand)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` leaves the cluster config on the head


def _autoscaler_node_types() -> list[dict[str, float] | None]:
    """Resources of each node type an autoscaler may add (``None``: a type whose resources are not stated).

    From the cluster config in the GCS (autoscaler v2, KubeRay), else from the cluster launcher's
    ``~/ray_bootstrap_config.yaml`` on this node (``ray up``; a job's driver runs on the head). Empty when
    no autoscaler is configured.
    """
    import ray._private.state

    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # an older GCS without the key, or no GCS access
        config = None
    if config is not None and config.node_group_configs:
        return [dict(g.resources) or None for g in config.node_group_configs if g.max_count != 0]
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return []
    try:
        launcher = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    head = launcher.get("head_node_type")
    return [dict(t.get("resources") or {}) or None for name, t in (launcher.get("available_node_types") or {}).items()
            if name != head and t.get("max_workers", launcher.get("max_workers", 0))]


def check_cluster_fits(resources: Resources) -> None:
    """On a cluster: one :class:`ConfigError` line when no alive node, and no node type an autoscaler may add,
    has ``resources`` (e.g. GPUs asked for on a CPU-only cluster) — otherwise Tune would wait forever.

    ``DDRM_WAIT_FOR_RESOURCES=1`` skips the check (nodes to be added by hand with ``ray start --address``).
    """
    import ray

    from ..errors import ConfigError

    if os.environ.get(WAIT_ENV) == "1":
        return
    need = {"CPU": resources.cpu, "GPU": resources.gpu}

    def fits(have: dict[str, float] | None) -> bool:
        return have is None or all(float(have.get(k, 0.0)) >= v for k, v in need.items() if v > 0)

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(fits(n) for n in nodes):
        return
    types = _autoscaler_node_types()
    if any(fits(t) for t in types):
        print(f"resources: no node has cpu={resources.cpu:g}, gpu={resources.gpu:g} yet; trials wait for the "
              f"autoscaler to add one", flush=True)
        return
    have = ", ".join(sorted({f"CPU {n.get('CPU', 0):g} GPU {n.get('GPU', 0):g}" for n in nodes})) or "none"
    raise ConfigError(
        f"each trial asks for cpu={resources.cpu:g}, gpu={resources.gpu:g}, but no node of the Ray cluster at "
        f"{os.environ.get('RAY_ADDRESS')} has that (nodes: {have}) and no autoscaler is configured to add one; "
        f"lower resources (--cpus-per-trial / --gpus-per-trial), add such a node, or set {WAIT_ENV}=1 to wait for "
        f"one")


def _encode(value: Any) -> Any:
    """Optuna/Tune choices must be scalars: lists travel as YAML strings (decoded in :func:`decode`)."""
    return yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, (list, dict)) else value


def decode(params: dict[str, Any], encoded: list[str]) -> dict[str, Any]:
    return {k: (yaml.safe_load(v) if k in encoded and isinstance(v, str) else v) for k, v in params.items()}


def pretrain_backends(configs: list[Config], ctx: StudyContext, threads: int | None = None,
                      min_uses: int = 1) -> int:
    """Train each distinct backend among ``configs`` once (into the shared cache); returns how many were new.

    Skipped: standalone models (they train no backend), reference checkpoints, backends already cached, and
    backends fewer than ``min_uses`` of ``configs`` need (an ablation passes 2: a backend only one trial uses
    is trained inside that trial, in parallel with the others, and reports its own per-epoch curve).
    ``threads``: torch threads per training (a trial's CPU share). With Ray up and several backends to
    train, each is a Ray task holding ``threads`` CPUs, so they run side by side on the study's CPUs.
    """
    from .. import cache
    from .. import train as training

    os.environ["DDRM_CACHE_DIR"] = str(ctx.cache_dir)
    datasets: dict[Any, Any] = {}  # DataConfig -> its loaded split: one load per distinct split, not per trial
    first: dict[str, Config] = {}
    uses: dict[str, int] = {}
    for config in configs:
        ensure_dataset(config.data.name, ctx.data_dir)  # built here once, not raced by the trials
        if config.model.name or config.backend.checkpoint:
            continue
        if config.data not in datasets:
            datasets[config.data] = training.load_dataset(config, ctx.data_dir)
        key = training.backend_cache_key(config, datasets[config.data])
        first.setdefault(key, config)
        uses[key] = uses.get(key, 0) + 1
    todo = [c for k, c in first.items() if uses[k] >= min_uses and not cache.has_entry(k, ctx.cache_dir)]
    if todo:
        print(f"pretraining {len(todo)} backend(s) shared by several trials before the trials start", flush=True)
    trained = done = 0

    def finished(config: Config, message: str, ok: bool) -> None:
        nonlocal trained, done
        trained, done = trained + ok, done + 1
        print(f"{'pretrained' if ok else 'warning: pretraining'} backend {config.backend.name} seed "
              f"{config.seed}{'' if ok else ' failed'} ({done}/{len(todo)}): {message}", flush=True)

    if len(todo) > 1 and _ray_up():
        import ray

        task = ray.remote(num_cpus=max(1, threads or 1), max_retries=0)(_pretrain_one)
        pending = {task.remote(c, str(ctx.data_dir), str(ctx.cache_dir), threads): c for c in todo}
        while pending:  # report each backend as it finishes, not all at the end
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            finished(pending.pop(ready), *ray.get(ready))
    else:
        for config in todo:
            finished(config, *_pretrain_one(config, str(ctx.data_dir), str(ctx.cache_dir), threads,
                                            datasets[config.data]))
    return trained


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def _pretrain_one(config: Config, data_dir: str, cache_dir: str, threads: int | None,
                  data: Any = None) -> tuple[str, bool]:
    """Train one backend into the cache (a Ray task or in the driver); ``(message, trained)``."""
    import torch

    from .. import train as training
    from .progress import evaluation_printer

    os.environ["DDRM_CACHE_DIR"] = cache_dir
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        data = data if data is not None else training.load_dataset(config, data_dir)
        shown = evaluation_printer(f"pretraining-{config.backend.name}-seed{config.seed}")  # a line per evaluation
        _, result = training.fit_backend(config, data, torch.device("cpu"), callback=shown, progress=False)
    except training.TrainingDiverged as exc:  # the trials that need it will fail on their own
        return str(exc), False
    finally:
        torch.set_num_threads(previous_threads)
    return (f"valid recall_at_20 {result.valid.get('recall_at_20', float('nan')):.4f} ({result.seconds:.0f}s)",
            not result.from_cache)


def _study_key(kind: str, name: str, payload: dict[str, Any], storage: Path) -> str:
    """The parent run's ``study_key`` tag; a storage folder under the working directory enters it relative, so
    a checkout at another path (the next session's machine) finds the same parent run in a committed store."""
    where = os.path.relpath(storage) if Path(storage).resolve().is_relative_to(Path.cwd().resolve()) else str(storage)
    blob = json.dumps({"kind": kind, "name": name, "payload": payload, "storage": where}, sort_keys=True,
                      default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _tuner(trainable_params: dict[str, Any], spec_name: str, ctx: StudyContext, resources, max_failures: int,
           callback, tune_config, resume: bool, searched: list[str] | None = None):
    """The study's Tuner (restored from ``ctx.storage`` on ``resume``). Its console table (:mod:`.progress`):
    variant and seed (an ablation) or the ``searched`` keys, then epoch and the validation objective."""
    from ray import tune

    from .progress import ablation_reporter, search_reporter, use_classic_output
    from .trainable import ddrm_trainable

    use_classic_output()  # else Tune's new output ignores the reporter and prints every trial's whole config
    objective = tune_config.metric or "recall_at_20"
    reporter = (ablation_reporter(objective) if "variant" in trainable_params else
                search_reporter(searched or [k for k in trainable_params if not k.startswith("_") and k != "seed"],
                                objective))
    trainable = tune.with_resources(ddrm_trainable, {"cpu": resources.cpu, "gpu": resources.gpu})
    path = ctx.storage / spec_name
    if resume and tune.Tuner.can_restore(str(path)):
        print(f"resuming study from {path}", flush=True)
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False,
                                  param_space=trainable_params)
    if resume:
        print(f"nothing to resume at {path}; starting a new study", flush=True)
    run_config = tune.RunConfig(
        name=spec_name, storage_path=str(ctx.storage), callbacks=[callback],
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1, progress_reporter=reporter)
    return tune.Tuner(trainable, param_space=trainable_params, tune_config=tune_config, run_config=run_config)


def _study_params(base: dict[str, Any], ctx: StudyContext, resources, variants=None, encoded=None) -> dict:
    return {"base": base, "variants": variants or {}, "data_dir": str(ctx.data_dir), "cache_dir": str(ctx.cache_dir),
            "threads": max(1, int(math.ceil(resources.cpu))), "encoded": encoded or []}


def _previous_row(trial, encoded: list[str]) -> dict[str, Any]:
    """A trial finished before a resume from the tracking store, as a row of :func:`_rows` (``done``; the
    selection metrics are the logged validation values of its chosen epoch)."""
    metrics = {k[len("best_"):]: v for k, v in trial.metrics.items() if k.startswith("best_")}
    metrics.update({k: v for k, v in trial.metrics.items() if k.startswith(("test_", "epoch"))})
    return {"config": dict(trial.point), "metrics": {**metrics, "done": True}, "error": None, "done": True}


def _rows(results) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        config = dict(result.config or {})
        metrics = dict(result.metrics or {})
        rows.append({"config": config, "metrics": metrics, "error": str(result.error) if result.error else None,
                     "done": bool(metrics.get("done")) and any(k.startswith("test_") for k in metrics)})
    return rows


def _publish(ctx: StudyContext, name: str, parent: str, kind: str, best: dict[str, Any] | None = None,
             searched: list[str] | tuple[str, ...] = (), objective: str = "recall_at_20") -> Path | None:
    """The report of the study's experiment into ``<storage>/<name>/report/``, logged to the parent run with
    the study's result as its metrics (:func:`ddrm.report.build.publish_study`); its folder, or None (with a
    warning: the trials are done and logged either way) when it cannot be made."""
    from ..report.build import publish_study

    out = ctx.storage / name / "report"
    try:
        publish_study(ctx.tracking_uri, name, parent, out, kind, best, searched, objective)
    except Exception as exc:  # noqa: BLE001 - a study's results must not be lost to a plotting/report error
        print(f"warning: no report for {name}: {type(exc).__name__}: {exc}", flush=True)
        return None
    return out


# ----------------------------------------------------------------------------------------- search
def run_search(spec: SearchSpec, storage: str | None = None, tracking_uri: str | None = None,
               data_dir: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Optuna TPE (seeded, concurrency-limited) or grid over ``spec.space``, ASHA or FIFO; returns the best trial."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .. import tracking
    from .mlflow_callback import MLflowTrialCallback

    ctx = _context(storage, data_dir, tracking_uri)
    encoded = [k for k, d in spec.space.items() if d["type"] == "choice" and any(isinstance(v, (list, dict))
                                                                              for v in d["values"])]
    resources = fit_resources(spec.resources)
    params: dict[str, Any] = {"_study": _study_params(spec.base, ctx, resources, encoded=encoded)}
    searches_backend = any(k.startswith("backend.") for k in spec.space)
    base_config = config_from_dict(spec.base)
    if not searches_backend and base_config.ddrm.enabled:
        pretrain_backends([base_config.replace({"seed": s}) for s in spec.seeds], ctx,
                          threads=params["_study"]["threads"])
    key = _study_key("tune", spec.name, {"base": spec.base, "space": spec.space, "mode": spec.mode}, ctx.storage)
    parent = tracking.start_parent_run(ctx.tracking_uri, spec.name, key,
                                       {"study": spec.name, "kind": "tune", "mode": spec.mode, "spec": spec.source,
                                        "threads_per_trial": str(params["_study"]["threads"])})
    num_samples, previous = spec.num_samples, []
    search_alg = None
    if spec.mode == "grid":
        for key, dist in spec.space.items():
            params[key] = tune.grid_search([_encode(v) for v in dist["values"]])
        params["seed"] = tune.grid_search(list(spec.seeds))
    else:
        space = {}
        for key, dist in spec.space.items():
            if dist["type"] == "choice":
                space[key] = optuna.distributions.CategoricalDistribution([_encode(v) for v in dist["values"]])
            elif dist["type"] == "randint":
                space[key] = optuna.distributions.IntDistribution(dist["low"], dist["high"] - 1)
            else:
                space[key] = optuna.distributions.FloatDistribution(dist["low"], dist["high"],
                                                                     log=dist["type"] == "loguniform")
        params["seed"] = spec.seeds[0]
        if resume and not tune.Tuner.can_restore(str(ctx.storage / spec.name)):  # Tune's folder is gone
            from .warmstart import previous_trials

            previous = previous_trials(ctx.tracking_uri, parent, space, spec.metric)
            num_samples = max(0, spec.num_samples - len(previous))
            print(f"resuming from the tracking store: {len(previous)} finished trial(s) of {spec.name} are told to "
                  f"the searcher without training; {num_samples} left to run", flush=True)
        searcher = OptunaSearch(space=space, metric=spec.metric, mode="max",
                                sampler=optuna.samplers.TPESampler(seed=spec.seeds[0]),
                                points_to_evaluate=[p.point for p in previous] or None,
                                evaluated_rewards=[p.reward for p in previous] or None)
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
    scheduler = None
    if spec.scheduler["type"] == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.scheduler["max_t"],
                                  grace_period=spec.scheduler["grace_period"],
                                  reduction_factor=spec.scheduler["reduction_factor"], stop_last_trials=False)
    tune_config = tune.TuneConfig(metric=spec.metric, mode="max", search_alg=search_alg, scheduler=scheduler,
                                  num_samples=num_samples,
                                  max_concurrent_trials=spec.max_concurrent if spec.mode == "grid" else None)
    callback = MLflowTrialCallback(ctx.tracking_uri, parent, spec.name)
    rows = []
    if num_samples:
        tuner = _tuner(params, spec.name, ctx, resources, spec.max_failures, callback, tune_config,
                       resume and not previous, searched=list(spec.space))
        rows = _rows(tuner.fit())
    rows += [_previous_row(p, encoded) for p in previous if "test_" + spec.metric in p.metrics]
    finished = [r for r in rows if r["done"]]
    status = "FINISHED" if finished else "FAILED"
    best = max(finished, key=lambda r: r["metrics"].get(spec.metric, -1.0)) if finished else None
    summary = {"experiment": spec.name, "tracking_uri": ctx.tracking_uri, "parent_run_id": parent,
               "trials": len(rows), "finished": len(finished), "errored": sum(1 for r in rows if r["error"]),
               "epochs_spent": int(sum(r["metrics"].get("epoch", 0) for r in rows)), "best": None}
    if best is not None:
        sampled = {k: v for k, v in decode(best["config"], encoded).items() if not k.startswith("_")}
        summary["best"] = {"params": sampled, "valid": {k: best["metrics"][k] for k in TABLE_METRICS},
                           "test": {k: best["metrics"].get(f"test_{k}") for k in TABLE_METRICS}}
    tracking.log_table(ctx.tracking_uri, parent, json.dumps(summary, indent=2, default=str), "summary.json")
    if best is not None:  # the report of the search, the best trial's objective and test metrics on the parent
        result = {"valid": {spec.metric: best["metrics"].get(spec.metric)}, "test": summary["best"]["test"]}
        summary["report"] = _publish(ctx, spec.name, parent, "tune", result, list(spec.space), spec.metric)
    tracking.finish_run(ctx.tracking_uri, parent, status)
    return summary


# --------------------------------------------------------------------------------------- ablation
def ablation_table(spec: AblationSpec, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Markdown table: mean ± std of test metrics over seeds per variant (failed trials counted apart)."""
    per_variant: dict[str, list[dict[str, float]]] = {name: [] for name in spec.variants}
    failed: dict[str, int] = {name: 0 for name in spec.variants}
    for row in rows:
        variant = row["config"].get("variant")
        if variant not in per_variant:
            continue
        if row["done"]:
            per_variant[variant].append(row["metrics"])
        else:
            failed[variant] += 1
    header = "| variant | seeds | " + " | ".join(TABLE_METRICS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_METRICS) + 2)]
    data: dict[str, Any] = {}
    for name, runs in per_variant.items():
        cells, stats = [], {}
        for metric in TABLE_METRICS:
            values = np.array([r[f"test_{metric}"] for r in runs], dtype=float)
            if len(values):
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                cells.append(f"{values.mean():.4f}" + (f" ± {std:.4f}" if len(values) > 1 else ""))  # no std of 1
                stats[metric] = {"mean": float(values.mean()), "std": std, "values": values.tolist()}
            else:
                cells.append("—")
        seeds = f"{len(runs)}" + (f" ({failed[name]} failed)" if failed[name] else "")
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
        data[name] = {"n": len(runs), "failed": failed[name], "test": stats}
    return "\n".join(lines), data


def run_ablation(spec: AblationSpec, storage: str | None = None, tracking_uri: str | None = None,
                 data_dir: str | None = None, resume: bool = False,
                 crash_once_marker: str | None = None, reuse_from: list[str] | None = None) -> dict[str, Any]:
    """Every variant x seed as a Tune trial (FIFO, no search); returns the table and per-variant stats.

    ``reuse_from``: tracking URIs whose FINISHED trial runs with the same complete config are replayed
    instead of retrained (see :mod:`.reuse`).

    ``crash_once_marker`` (fault-injection tests): each trial kills its own worker after its first
    evaluation unless that marker file exists, creating it first — so exactly one crash happens.
    """
    from ray import tune

    from .. import tracking
    from .mlflow_callback import MLflowTrialCallback

    ctx = _context(storage, data_dir, tracking_uri)
    configs = [config_from_dict(apply_overrides(spec.base, {**spec.variants[v], "seed": s})) for v, s in spec.trials]
    resources = fit_resources(spec.resources)
    study = _study_params(spec.base, ctx, resources, variants=spec.variants)
    from .reuse import trial_key

    if reuse_from:
        from .reuse import check_source, explain_misses, find_reusable

        study["reuse"] = find_reusable([(v, s, c) for (v, s), c in zip(spec.trials, configs)],
                                       [check_source(uri) for uri in reuse_from])
        print(f"reusing {len(study['reuse'])} of {len(spec.trials)} trials (identical config, FINISHED) from "
              f"{', '.join(reuse_from)}" + "".join(f"\n  {k} <- {r['source']}" for k, r in study["reuse"].items()),
              flush=True)
        misses = explain_misses([(v, s, c) for (v, s), c in zip(spec.trials, configs)],
                                [check_source(uri) for uri in reuse_from], study["reuse"])
        if misses:
            print("\n".join(f"  {k} not reused: {why}" for k, why in misses.items()), flush=True)
    key = _study_key("ablate", spec.name, {"base": spec.base, "variants": spec.variants, "seeds": spec.seeds},
                     ctx.storage)
    parent = tracking.start_parent_run(ctx.tracking_uri, spec.name, key,
                                       {"study": spec.name, "kind": "ablate", "spec": spec.source,
                                        "threads_per_trial": str(study["threads"]),
                                        "reference": spec.reference or "", "baseline": spec.baseline or ""})
    restarting = resume and not tune.Tuner.can_restore(str(ctx.storage / spec.name))
    if restarting:  # Tune's folder is gone: finished trials replay into their runs, the others train
        from .reuse import replay_record
        from .warmstart import finished_ablation_trials

        done_before = finished_ablation_trials(ctx.tracking_uri, parent)
        study["resumed_runs"] = {k: run.info.run_id for k, run in done_before.items()}
        study["reuse"] = {**study.get("reuse", {}),
                          **{k: replay_record(ctx.tracking_uri, run) for k, run in done_before.items()}}
        print(f"resuming from the tracking store: {len(done_before)} of {len(spec.trials)} trials finished before "
              f"and are replayed, not trained", flush=True)
    if study.get("reuse"):  # replayed trials need no backend
        configs = [c for (v, s), c in zip(spec.trials, configs) if trial_key(v, s) not in study["reuse"]]
    pretrain_backends(configs, ctx, threads=study["threads"], min_uses=2)
    if crash_once_marker:
        study["crash_once_marker"] = crash_once_marker
    params = {"_study": study,
              "variant": tune.grid_search(list(spec.variants)), "seed": tune.grid_search(list(spec.seeds))}
    tune_config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, num_samples=1)
    callback = MLflowTrialCallback(ctx.tracking_uri, parent, spec.name)
    tuner = _tuner(params, spec.name, ctx, resources, spec.max_failures, callback, tune_config,
                   resume and not restarting)
    rows = _rows(tuner.fit())
    table, stats = ablation_table(spec, rows)
    tracking.log_table(ctx.tracking_uri, parent, table + "\n", "table.md")  # the report's table.md replaces it
    done = sum(1 for r in rows if r["done"])
    report = _publish(ctx, spec.name, parent, "ablate") if done else None
    tracking.finish_run(ctx.tracking_uri, parent, "FINISHED" if done else "FAILED")
    return {"experiment": spec.name, "tracking_uri": ctx.tracking_uri, "parent_run_id": parent, "table": table,
            "variants": stats, "trials": len(rows), "finished": done,
            "errored": sum(1 for r in rows if r["error"]), "report": report}
