"""Reuse finished trials instead of retraining them (``ddrm ablate --reuse-from URI``).

The paper's experiments share rows: the released-settings DDRM run of a seed is the reference of Table 3,
Fig. 4 and Fig. 5 alike. A trial whose *complete* flat config (every key MLflow logs as a param: data,
backend, DDRM, training, seed) equals that of a FINISHED trial run in a given tracking store is
not trained again: the trainable replays that run's logged metrics (per-epoch validation curve, best and
test metrics, diagnostics) through ``tune.report``, so the new study's child run, summary table and
``ddrm report`` treat it like any other trial; the child run is tagged ``reused_from = <uri>#<run_id>``.
Any difference in any key (a seed, a code default logged as a param) means no match, and so does a different
``code_fingerprint`` tag (:mod:`ddrm.codeversion`: the source of the trial's stages changed, or the run predates
fingerprints). A run without test metrics (a search's trial: it chose on validation and scored no test) is
never replayed into a study that needs them (:func:`find_reusable` ``with_test``). A replayed run carries its
source's ``cost_*`` metrics (what the result cost where it was trained), and its ``reused_from`` tag marks it:
reports count no replayed run's cost. :func:`explain_misses` says, for each trial that found no match, what
differed in the closest run. The CPU share Ray gives a trial is a resource, not a config key, so it is not compared (it changes results
only by float rounding); nor is ``train.device`` (:data:`PLACEMENT_KEYS`: where a run computed, not what).
"""

from __future__ import annotations

from typing import Any

from ..codeversion import code_fingerprint
from ..config import Config
from ..errors import ConfigError
from ..legacy import upgrade_params
from ..metrics import FINAL_PREFIXES, TEST, VALID, epoch_from_logged, final_from_logged
from ..tracking import _client, resolve_tracking_uri, search_all_runs, sqlite_store_missing

from .plan import trial_key  # noqa: F401 - re-exported: trials are keyed as the plan keys them

PLACEMENT_KEYS = ("train.device",)  # where a run computes, not what: a reuse match ignores them

PARAM_LIMIT = 6000  # MLflow's param value length limit; params are logged truncated to it
REUSE_TAG = "reused_from"
FINGERPRINT_TAG = "code_fingerprint"


def flat_params(config: Config) -> dict[str, str]:
    """The params a trial run logs: the flat config, values as (truncated) strings."""
    return {k: str(v)[:PARAM_LIMIT] for k, v in config.to_flat_dict().items()}


def identity(params: dict[str, str]) -> frozenset:
    """What a reuse match compares of logged params: all but the placement keys (``train.device``)."""
    return frozenset((k, v) for k, v in params.items() if k not in PLACEMENT_KEYS)


def check_source(uri: str) -> str:
    """``uri`` resolved; a sqlite store that does not exist is one ConfigError (MLflow would create it)."""
    resolved = resolve_tracking_uri(uri)
    if sqlite_store_missing(resolved):
        raise ConfigError(f"--reuse-from {uri}: no such MLflow database file; expected the tracking URI of an "
                          f"existing store, e.g. sqlite:///runs/table3.db")
    return resolved


def has_test(run) -> bool:
    """Whether ``run`` logged test metrics (a search's trials do not)."""
    return any(k.startswith(TEST) for k in run.data.metrics)


def finished_trial_runs(uri: str, with_test: bool = False) -> dict[frozenset, Any]:
    """``{identity(params): run}`` over every FINISHED trial run of every experiment in ``uri``
    (the most recent run where several share a config); ``with_test``: only runs with test metrics."""
    client = _client(uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    found: dict[frozenset, Any] = {}
    runs = search_all_runs(client, experiment_ids,
                           "tags.role = 'trial' and attributes.status = 'FINISHED'") if experiment_ids else []
    for run in runs:
        if with_test and not has_test(run):
            continue
        key = identity(upgrade_params(run.data.params))  # old-shape runs: ddrm.legacy
        if key not in found or run.info.start_time > found[key].info.start_time:
            found[key] = run
    return found


def replay_record(uri: str, run) -> dict[str, Any]:
    """What the trainable reports for a reused run: ``history`` (one dict per logged epoch: ``epoch``,
    ``loss``, validation metrics without the ``valid_`` prefix) and ``final`` (best/test/diagnostic/cost metrics,
    the validation metrics of the selected epoch, ``done``; no test for a search's trial)."""
    client = _client(uri)
    per_step: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        if key in ("epoch", "loss") or key.startswith(VALID):
            for point in client.get_metric_history(run.info.run_id, key):
                per_step.setdefault(int(point.step), {})[key] = float(point.value)
    history = [{"epoch": step, **epoch_from_logged(values)} for step, values in sorted(per_step.items())]
    final = final_from_logged({k: v for k, v in run.data.metrics.items() if k.startswith(FINAL_PREFIXES)},
                              history[-1]["epoch"] if history else 0)
    return {"source": f"{uri}#{run.info.run_id}", "history": history, "final": final}


def same_code(run, config: Config) -> bool:
    """Whether ``run`` was produced by code that computes what this checkout computes for ``config``."""
    return run.data.tags.get(FINGERPRINT_TAG) == code_fingerprint(config)


def find_reusable(trials: list[tuple[str, int, Config]], uris: list[str],
                  with_test: bool = True) -> dict[str, dict[str, Any]]:
    """``{trial_key(variant, seed): replay record}`` for each trial whose flat config matches a FINISHED trial
    run in one of ``uris`` (searched in order) that was produced by the same code; ``with_test`` (an ablation's
    trials): only runs that scored test, never a search's trial."""
    wanted = {trial_key(v, s): (identity(flat_params(c)), c) for v, s, c in trials}
    reuse: dict[str, dict[str, Any]] = {}
    for uri in uris:
        runs = finished_trial_runs(uri, with_test)
        for key, (params, config) in wanted.items():
            if key not in reuse and params in runs and same_code(runs[params], config):
                reuse[key] = replay_record(uri, runs[params])
    return reuse


def explain_misses(trials: list[tuple[str, int, Config]], uris: list[str],
                   reuse: dict[str, Any], with_test: bool = True) -> dict[str, str]:
    """``{trial_key: why}`` for each trial not in ``reuse``: the closest FINISHED run (fewest differing params)
    and what differs — config keys with both values, the code fingerprint, or (``with_test``) no test metrics."""
    runs = [(uri, run) for uri in uris for run in finished_trial_runs(uri).values()]
    reasons: dict[str, str] = {}
    for variant, seed, config in trials:
        key = trial_key(variant, seed)
        if key in reuse:
            continue
        if not runs:
            reasons[key] = "the store has no FINISHED trial runs"
            continue
        params = flat_params(config)

        def differing(run) -> list[str]:
            logged = run.data.params
            return sorted(k for k in set(params) | set(logged)
                          if params.get(k) != logged.get(k) and k not in PLACEMENT_KEYS)

        uri, closest = min(runs, key=lambda pair: len(differing(pair[1])))
        diff = differing(closest)
        where = f"closest run {uri}#{closest.info.run_id}"
        if diff:
            shown = ", ".join(f"{k} ({params.get(k, 'absent')} here vs {closest.data.params.get(k, 'absent')})"
                              for k in diff[:4])
            reasons[key] = f"{where} differs in {len(diff)} config key(s): {shown}" + (", ..." if len(diff) > 4 else "")
        elif with_test and not has_test(closest) and same_code(closest, config):
            reasons[key] = f"{where} has the same config and code but no test metrics (a search's trial)"
        else:
            theirs = closest.data.tags.get(FINGERPRINT_TAG) or "none (run predates code fingerprints)"
            reasons[key] = (f"{where} has the same config but other code: code_fingerprint {theirs} vs "
                            f"{code_fingerprint(config)} here")
    return reasons


def replay(record: dict[str, Any], report) -> None:
    """Report a reused run's epochs and final result through ``report`` (``tune.report``)."""
    for metrics in record["history"]:
        report(dict(metrics))
    report(dict(record["final"]))
