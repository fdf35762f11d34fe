"""Where a campaign's CPU-seconds go, per stage and per kind, before it runs (issue "campaign cost").

For each distinct model of the campaign (the plan's stand-ins: its stages' chosen configs if a campaign folder holds
them, else the best row a search imports, else each search's base), one instrumented epoch on the dataset, one
thread: the seconds of the training steps, the sampling of batches, the per-epoch setup of the model
(``start_epoch``: SGL's perturbed graphs), a validation pass, a test pass, and the run's setup (data, model, graph).
Optionally (``--overhead``) a real Ray Tune + MLflow study of closed-form trials on generated data gives the
per-trial overhead of Ray and MLflow. Each stage's cost is then its trials x ASHA-expected epochs
(``ddrm.campaign.estimate``) of each kind, plus one test pass and one setup per trial, plus the backend pretraining
a DDRM stage shares; each table row its seeds x epoch cap. The JSON holds the profile under both protocols from the
same measurements: ``test_in_search`` (every search trial scored test, as before the campaigns issue) and
``validation_only`` (searches score no test). Idle time waiting for a concurrency slot is not modelled here: the
campaign's cost records measure it. Example (docs/PERFORMANCE.md):

    python bench/campaign_cost.py campaigns/tuned.yaml --dataset ml-1m_noisy --data-dir ../shared/datasets \\
        --overhead --json docs/results/benchmarks/campaign_cost_ml1m.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
KINDS = ("train_steps", "sampling", "start_epoch", "validation", "test", "setup", "ray_mlflow")


class StageTimer:
    """Seconds of each kind, per stage of the run (``backend``, ``ddrm``, ``model``): an evaluation or a batch is
    the stage of the last epoch started (the loop evaluates a stage right after its epochs)."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[self.stage][kind] += seconds


@contextlib.contextmanager
def _patched(owner: Any, name: str, make) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def _timing(timer: StageTimer, kind: str):
    def make(original):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            timer.add(kind, time.perf_counter() - start)
            return out
        return wrapper
    return make


def _timing_items(timer: StageTimer, kind: str):
    def make(original):
        def wrapper(*args, **kwargs):
            iterator = original(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    timer.add(kind, time.perf_counter() - start)
                    return
                timer.add(kind, time.perf_counter() - start)
                yield item
        return wrapper
    return make


def profile_epoch(config, data_dir: str) -> dict[str, dict[str, float]]:
    """Seconds of each kind per stage in a one-epoch run of ``config`` (one thread): per trained stage one epoch,
    one validation and one test pass; ``setup`` is the rest (data, model, graph construction)."""
    from ddrm import stages, train
    from ddrm.data import sampling
    from ddrm.registry import MODELS, model_names

    timer = StageTimer()
    timer.stage = config.final_stage  # a closed-form model evaluates without an epoch

    def epoch(original):
        def wrapper(*args, stage: str, **kwargs):
            timer.stage = stage
            start = time.perf_counter()
            out = original(*args, stage=stage, **kwargs)
            timer.add("epoch", time.perf_counter() - start)
            return out
        return wrapper

    def evaluate(original):
        def wrapper(score_fn, data, split="valid", *args, **kwargs):
            start = time.perf_counter()
            out = original(score_fn, data, split, *args, **kwargs)
            timer.add("validation" if split == "valid" else "test", time.perf_counter() - start)
            return out
        return wrapper

    probe = config.replace({"train.epochs": 1, "train.max_epochs": 1, "train.threads": 1, "train.patience": 1})
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(train, "_train_epoch", epoch))
        stack.enter_context(_patched(train, "evaluate", evaluate))
        stack.enter_context(_patched(stages, "evaluate", evaluate))  # closed-form models
        for cls in (sampling.BPRSampler, sampling.UserBatchSampler):
            stack.enter_context(_patched(cls, "batches", _timing_items(timer, "sampling")))
        for name in model_names():
            cls = MODELS.get(name)
            if "start_epoch" in vars(cls):
                stack.enter_context(_patched(cls, "start_epoch", _timing(timer, "start_epoch")))
        start = time.perf_counter()
        train.run(probe, data_dir=data_dir, progress=False, use_cache=False)
        total = time.perf_counter() - start
    out: dict[str, dict[str, float]] = {}
    for stage, kinds in timer.seconds.items():
        row = {"train_steps": max(0.0, kinds["epoch"] - kinds["sampling"] - kinds["start_epoch"]),
               "sampling": kinds["sampling"], "start_epoch": kinds["start_epoch"],
               "validation": kinds["validation"], "test": kinds["test"]}
        out[stage] = row
    out["setup"] = {"seconds": max(0.0, total - sum(sum(r.values()) for r in out.values()))}
    out["total"] = {"seconds": total}
    return out


def ray_mlflow_overhead(small: int = 2, large: int = 10) -> tuple[float, float]:
    """CPU-seconds of Ray + MLflow ``(per study, per trial)``: two real studies of closed-form (MostPop) trials on
    generated data, whose own computation is milliseconds, two 1-CPU trials at a time (2 CPUs busy or held):
    the per-trial cost is the slope between ``small`` and ``large`` trials, the per-study cost the rest."""
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_interactions

    from ddrm.data import write_prepared
    from ddrm.tuning.runner import init_ray, run_ablation
    from ddrm.tuning.spec import load_ablation_spec

    init_ray(2)
    walls = {}
    for trials in (small, large):
        with tempfile.TemporaryDirectory() as tmp:
            write_prepared(Path(tmp) / "tiny", *make_interactions())
            spec_path = Path(tmp) / "spec.yaml"
            spec_path.write_text(f"name: overhead{trials}\nbase: {{data: {{name: tiny}}, model: {{name: mostpop}}, "
                                 f"train: {{threads: 1}}}}\nseeds: {list(range(trials))}\nvariants: {{fixed: {{}}}}\n"
                                 "max_concurrent: 2\n")
            start = time.perf_counter()
            run_ablation(load_ablation_spec(spec_path), storage=f"{tmp}/ray", tracking_uri=f"sqlite:///{tmp}/m.db",
                         data_dir=tmp)
            walls[trials] = (time.perf_counter() - start) * 2
    per_trial = max(0.0, (walls[large] - walls[small]) / (large - small))
    return max(0.0, walls[small] - small * per_trial), per_trial


PER_EPOCH = ("train_steps", "sampling", "start_epoch", "validation")


def stage_costs(plan: dict[str, Any], configs: dict, profiles: dict[str, dict[str, dict[str, float]]],
                overhead: tuple[float, float], test_in_search: bool, seeds: int) -> dict[str, dict[str, float]]:
    """CPU-seconds per stage (and table) and kind: the final stage's epochs, one test pass and one setup per
    trial (test only with ``test_in_search``), the Ray/MLflow overhead per trial, and for a DDRM stage its
    backend's pretraining once (the epoch cap: an upper bound)."""
    from ddrm.campaign.estimate import final_epochs_cap, probe_key

    def add(row: dict[str, float], profile: dict[str, float], epochs: float) -> None:
        for kind in PER_EPOCH:
            row[kind] += epochs * profile.get(kind, 0.0)

    costs: dict[str, dict[str, float]] = {}
    for stage, entry in plan["stages"].items():
        config = configs[stage]
        p = profiles[probe_key(config)]
        final = p.get(config.final_stage, {})
        row: dict[str, float] = defaultdict(float)
        # every trial from scratch at ASHA's expectation (the plan's expected_epochs count only the trials left
        # after imports, calibrated where it has records): this profile stays the uncalibrated whole campaign
        expected = entry["trials"] * entry.get("asha_epochs_per_trial", 0.0)
        add(row, final, expected if entry["epoch_cap"] else entry["trials"])
        row["test"] += entry["trials"] * final.get("test", 0.0) if test_in_search else 0.0
        row["setup"] += entry["trials"] * p["setup"]["seconds"]
        row["ray_mlflow"] += (overhead[0] + entry["trials"] * overhead[1]) if entry["trials"] else 0.0
        if config.final_stage == "ddrm" and entry["trials"]:
            add(row, p.get("backend", {}), config.train.stage_epochs(config.model.epochs))
        costs[stage] = dict(row)
    for name, table in plan["tables"].items():
        row = defaultdict(float)
        for stage in table.get("stages", []):
            config = configs[stage]
            p = profiles[probe_key(config)]
            final = p.get(config.final_stage, {})
            add(row, final, seeds * (final_epochs_cap(config) or 1))
            if config.final_stage == "ddrm":
                add(row, p.get("backend", {}), seeds * config.train.stage_epochs(config.model.epochs))
            row["test"] += seeds * final.get("test", 0.0)
            row["setup"] += seeds * p["setup"]["seconds"]
            row["ray_mlflow"] += seeds * overhead[1]
        row["ray_mlflow"] += overhead[0]
        costs[f"table:{name}"] = dict(row)
    return costs


def main() -> int:
    sys.path.insert(0, str(REPO / "platform"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", help="campaign folder whose chosen configs stand in (default: the spec's)")
    parser.add_argument("--overhead", action="store_true", help="measure Ray + MLflow per-trial overhead")
    parser.add_argument("--json", help="write the profile here")
    args = parser.parse_args()
    import torch

    from ddrm.campaign.estimate import probe_key
    from ddrm.campaign.plan import plan_campaign, stand_in_configs
    from ddrm.campaign.spec import load_campaign
    from ddrm.host import host_tags

    torch.set_num_threads(1)
    spec = load_campaign(args.spec)
    out = Path(args.out) if args.out else Path(spec.source).parent / (spec.results or "campaign_results") / args.dataset
    configs = stand_in_configs(spec, args.dataset, out)
    plan = plan_campaign(spec, args.dataset, out, args.data_dir, probe=False)
    for name, table in spec.tables.items():
        plan["tables"][name]["stages"] = list(table.rows.values())
    profiles: dict[str, dict[str, float]] = {}
    for stage, config in configs.items():
        key = probe_key(config)
        if key not in profiles:
            print(f"profiling one epoch of {key} ...", flush=True)
            profiles[key] = profile_epoch(config, args.data_dir)
    overhead = ray_mlflow_overhead() if args.overhead else (0.0, 0.0)
    protocols = {}
    for name, test_in_search in (("test_in_search", True), ("validation_only", False)):
        costs = stage_costs(plan, configs, profiles, overhead, test_in_search, len(spec.table_seeds))
        by_kind = {k: sum(c.get(k, 0.0) for c in costs.values()) / 3600 for k in KINDS}
        protocols[name] = {"stages_cpu_hours": {s: {k: v / 3600 for k, v in c.items()} for s, c in costs.items()},
                           "cpu_hours_by_kind": by_kind, "cpu_hours_total": sum(by_kind.values())}
    result = {"command": " ".join(["python", "bench/campaign_cost.py", *sys.argv[1:]]), "host": host_tags(),
              "threads": 1, "dtype": "float32", "dataset": args.dataset, "campaign": spec.name,
              "budget": spec.budget, "ray_mlflow_cpu_seconds": {"per_study": overhead[0], "per_trial": overhead[1]},
              "profiles_seconds": profiles, "protocols": protocols}
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
