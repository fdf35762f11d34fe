"""What a study prints while it runs: Tune's status table with the columns a researcher reads first, and one
line per evaluation of a backend the driver pretrains.

Tune's default ("new") console output prints every trial's whole config and a full result table per
evaluation; :func:`use_classic_output` switches the driver to Tune's classic reporter, and
:class:`StudyReporter` is that reporter with fixed columns (variant, seed or the searched keys; epoch, the
validation objective, then, in an ablation, test R@20 once a trial finished), printed when something changed.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from ray.tune import CLIReporter

# read by Tune in the driver when a study starts; a value the user set in the environment wins
CONSOLE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's classic output: the progress_reporter below is used
    # no "Experiment state snapshotting has been triggered multiple times" advice: every evaluation is
    # checkpointed on purpose (a crashed trial resumes from it), and short epochs trigger it constantly
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def use_classic_output() -> None:
    """Make Tune use the classic ``progress_reporter`` and drop its checkpoint-frequency advice."""
    for key, value in CONSOLE_ENV.items():
        os.environ.setdefault(key, value)


def short_key(key: str, keys: list[str]) -> str:
    """``ddrm.steps`` -> ``steps``, unless another of ``keys`` ends the same way (then the full key)."""
    last = key.rpartition(".")[2]
    return last if sum(k.rpartition(".")[2] == last for k in keys) == 1 else key


class StudyReporter(CLIReporter):
    """Tune's CLI table: trial, status, ``parameter_columns``, then epoch, the validation ``objective`` and
    test ``objective``; printed when a trial changed status or reported a new epoch, at most every
    ``min_interval`` seconds, and once at the end."""

    def __init__(self, parameter_columns: dict[str, str], objective: str = "recall_at_20",
                 min_interval: float = 10.0, max_rows: int = 30, show_test: bool = True) -> None:
        metrics = {"epoch": "epoch", objective: f"valid {objective}"}
        if show_test:
            metrics[f"test_{objective}"] = f"test {objective}"
        super().__init__(parameter_columns=parameter_columns, metric_columns=metrics,
                         max_report_frequency=int(min_interval), print_intermediate_tables=True,
                         max_progress_rows=max_rows, max_column_length=24)
        self._seen: tuple | None = None

    def should_report(self, trials: list, done: bool = False) -> bool:
        state = tuple((t.trial_id, t.status, (t.last_result or {}).get("epoch")) for t in trials)
        if done:
            return True
        if state == self._seen or time.time() - self._last_report_time < self._max_report_freqency:
            return False
        self._seen, self._last_report_time = state, time.time()
        return True


def ablation_reporter(objective: str = "recall_at_20") -> StudyReporter:
    return StudyReporter({"variant": "variant", "seed": "seed"}, objective)


def search_reporter(space_keys: list[str], objective: str) -> StudyReporter:
    """A search's table shows no test column: trials are compared on validation only (test is read once, in
    the report of the chosen configuration)."""
    columns = {k: short_key(k, space_keys) for k in space_keys}
    return StudyReporter({**columns, "seed": "seed"}, objective, show_test=False)


def evaluation_printer(label: str, min_interval: float = 10.0,
                       printer: Callable[[str], Any] | None = None) -> Callable[[Any], None]:
    """A ``train.fit`` callback printing ``<label> epoch=N loss=… valid_recall_at_20=… best=… <seconds>s``: one
    line per evaluation, at most one every ``min_interval`` seconds (the caller prints the final result).

    ``label`` must contain a digit (e.g. ``pretraining-mf-seed0``): then every word of the line does, and Ray's
    log deduplication, which compares lines with such words masked, never folds the lines of backends trained
    side by side into one ``[repeated 2x across cluster]`` line.
    """
    printer = printer or (lambda line: print(line, flush=True))
    last = [-float("inf")]

    def callback(event) -> None:
        now = time.monotonic()
        if now - last[0] < min_interval:
            return
        last[0] = now
        printer(f"{label} epoch={event.epoch} loss={event.loss:.4f} valid_recall_at_20="
                f"{event.valid.get('recall_at_20', float('nan')):.4f} best="
                f"{event.best_valid.get('recall_at_20', float('nan')):.4f} {event.seconds:.0f}s")

    return callback
