"""A campaign run's jobs (:mod:`.schedule`): one per stage, then one per table, and the record they fill.

A job is prepared in the scheduler's thread once the stages it needs are chosen (its study is built from their
chosen configs there), its study runs away from it (``ddrm.tuning.runner``), and it is finished in the
scheduler's thread again: the stage's chosen config and report into its folder, its entry into ``campaign.json``
and ``campaign.md``, which list stages and tables in spec order whatever order they ended in.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from .overrides import recorded_overrides
from .schedule import Job, Work
from .spec import CampaignSpec, stage_order


class CampaignRun:
    """The jobs of ``spec`` on ``dataset`` into the campaign folder ``out``; ``record`` is ``campaign.json``."""

    def __init__(self, spec: CampaignSpec, dataset: str, out: Path, record: dict[str, Any], storage: str | None,
                 tracking_uri: str | None, data_dir: str | None,
                 replan: Callable[[], dict[str, Any]] | None = None) -> None:
        self.spec, self.dataset, self.out, self.record = spec, dataset, out, record
        self.storage, self.tracking_uri, self.data_dir = storage, tracking_uri, data_dir
        self.replan = replan  # a new plan, for a part the launch's plan stood in on stages chosen since
        self.chosen: dict[str, Config] = {}
        # the overrides the folder's campaign.json recorded before this launch rewrites it (.overrides.check_ran_with)
        self.ran_with = recorded_overrides(out)
        self.entries: dict[str, dict[str, Any]] = {"stages": {}, "tables": {}}

    def jobs(self) -> list[Job]:
        """Every stage in dependency levels, then every table; each needs the stages it takes configs from."""
        stages = [stage for level in stage_order(self.spec) for stage in level]
        jobs = [Job(f"stage {s}", tuple(f"stage {up}" for up in self.spec.stages[s].inherit),
                    partial(self._prepare_stage, s), partial(self._finish_stage, s)) for s in stages]
        for name, table in self.spec.tables.items():
            needs = tuple(dict.fromkeys(f"stage {s}" for s in table.rows.values()))
            jobs.append(Job(f"table {name}", needs, partial(self._prepare_table, name),
                            partial(self._finish_table, name)))
        return jobs

    # ---------------------------------------------------------------------------------------- stages
    def _prepare_stage(self, stage: str) -> Work:
        from .imports import stage_base
        from .overrides import check_ran_with
        from .run import earlier_search, fixed_config, search_spec, _runs_csv

        if self.spec.stages[stage].fixed is not None:
            config = fixed_config(self.spec, stage, self.dataset, self.chosen)
            check_ran_with(self.spec, stage, self.dataset, config.to_flat_dict(), self.out, self.ran_with)
            return Work(lambda: config)
        search = search_spec(self.spec, stage, self.dataset, self.chosen)
        check_ran_with(self.spec, stage, self.dataset, stage_base(search), self.out, self.ran_with)
        self._freeze("stages", stage)
        folder = self.out / "stages" / stage
        imported = _runs_csv(folder)
        earlier = earlier_search(self.spec, stage, self.dataset, search)
        sources = [s for s in (imported, earlier.rows if earlier else None) if s is not None]

        def run() -> dict[str, Any]:
            from ..tuning import runner

            start = time.perf_counter()
            summary = runner.run_search(search, storage=self.storage, tracking_uri=self.tracking_uri,
                                        data_dir=self.data_dir, resume=True, import_runs=sources or None,
                                        snapshot_to=folder)
            return {"search": search, "imported": imported, "earlier": earlier, "summary": summary,
                    "seconds": time.perf_counter() - start}

        return Work(run, alone=self._alone(search.name))

    def _finish_stage(self, stage: str, result: Any) -> None:
        from .run import _copy_report, _relative, _write_chosen, best_config, stop_if_interrupted

        folder = self.out / "stages" / stage
        if self.spec.stages[stage].fixed is not None:
            self.chosen[stage] = result
            _write_chosen(folder, result, f"stage {stage}: a fixed config (nothing searched)")
            self._enter("stages", stage, {"kind": "fixed", "trials": 0})
            return
        search, summary, earlier = result["search"], result["summary"], result["earlier"]
        stop_if_interrupted(summary, f"stage {stage}", folder)
        self.chosen[stage] = best_config(search, summary)
        _copy_report(summary.get("report"), folder)
        _write_chosen(folder, self.chosen[stage], f"stage {stage}: the best of {summary['finished']} finished "
                                                  f"trials of {search.name} by validation {search.metric}")
        self._enter("stages", stage, {
            "kind": "search", "mode": search.mode, "trials": summary["trials"], "finished": summary["finished"],
            "errored": summary["errored"], "epochs_spent": summary["epochs_spent"],
            "inherits": dict(self.spec.stages[stage].inherit), "imported_from": _relative(result["imported"]),
            "imported_search": earlier.record() if earlier else None,
            "best_valid": (summary["best"] or {}).get("valid"), "driver_wall_seconds": result["seconds"]})

    # ---------------------------------------------------------------------------------------- tables
    def _prepare_table(self, table: str) -> Work:
        from .run import _runs_csv, table_spec

        self._freeze("tables", table)
        ablation = table_spec(self.spec, table, self.dataset, self.chosen)
        folder = self.out / "tables" / table
        imported = _runs_csv(folder)

        def run() -> dict[str, Any]:
            from ..tuning import runner

            start = time.perf_counter()
            summary = runner.run_ablation(ablation, storage=self.storage, tracking_uri=self.tracking_uri,
                                          data_dir=self.data_dir, resume=True, import_runs=imported,
                                          snapshot_to=folder)
            return {"imported": imported, "summary": summary, "seconds": time.perf_counter() - start}

        return Work(run, alone=self._alone(ablation.name))

    def _finish_table(self, table: str, result: dict[str, Any]) -> None:
        from .run import _copy_report, _relative, stop_if_interrupted

        folder = self.out / "tables" / table
        summary = result["summary"]
        stop_if_interrupted(summary, f"table {table}", folder)
        _copy_report(summary.get("report"), folder)
        self._enter("tables", table, {"trials": summary["trials"], "finished": summary["finished"],
                                      "errored": summary["errored"], "imported_from": _relative(result["imported"]),
                                      "rows": dict(self.spec.tables[table].rows),
                                      "driver_wall_seconds": result["seconds"]})

    # ---------------------------------------------------------------------------------------- record
    def _alone(self, study: str) -> bool:
        """Whether ``study`` must run with no other beside it (a Tune folder of an older version)."""
        from ..tuning.plan import study_context
        from ..tuning.runner import restores_alone

        return restores_alone(study_context(self.storage, self.data_dir, self.tracking_uri).storage / study)

    def _freeze(self, part: str, name: str) -> None:
        """The estimate ``name`` is judged by, frozen before its trials (:mod:`.frozen`) and written at once, so
        a stop mid-study keeps it."""
        from .frozen import freeze_at_start
        from .run import write_record

        if freeze_at_start(self.record, part, name, self.replan):
            write_record(self.out, self.record)

    def _enter(self, part: str, name: str, entry: dict[str, Any]) -> None:
        """``entry`` into the record, whose stages and tables keep spec order; then ``campaign.json``/``.md``."""
        from .run import write_record

        self.entries[part][name] = entry
        order = self.spec.stages if part == "stages" else self.spec.tables
        self.record[part] = {n: self.entries[part][n] for n in order if n in self.entries[part]}
        write_record(self.out, self.record)
