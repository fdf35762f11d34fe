"""A Tune ``Callback`` that keeps a study's ``runs.csv`` current while it runs.

After every finished trial the study's finished runs (:func:`ddrm.report.collect.collect_runs`) are written to
``<folder>/runs.csv``, replacing the file atomically. A campaign points it at its committed stage or table
folder, so a study stopped mid-way (a session's end, a lost machine) continues from the committed file on any
machine (``import_runs``) and trains none of those trials again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ray.tune import Callback


class RunsSnapshot(Callback):
    """``folder/runs.csv`` = the finished trial runs under ``parent_run_id`` in ``uri``, rewritten after each one."""

    def __init__(self, uri: str, parent_run_id: str, folder: str | Path) -> None:
        self.uri, self.parent, self.folder = uri, parent_run_id, Path(folder)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.write()

    def write(self) -> Path | None:
        """Write the snapshot; returns its path, or None when no trial has finished (nothing is written)."""
        from ..report.collect import collect_runs
        from ..report.runs import write_runs_csv

        frame, _ = collect_runs(self.uri, self.parent)
        if frame.empty:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".runs-") as tmp:
            written = write_runs_csv(frame, Path(tmp), self.uri)
            os.replace(written, self.folder / "runs.csv")
        return self.folder / "runs.csv"
