"""Resume trials whose recorded checkpoint is gone, from their first epoch, instead of failing them.

Tune saves its experiment state (every trial's status and latest checkpoint) at most every few seconds, while a
trial's older checkpoint is deleted as soon as a newer one is registered (``CheckpointConfig(num_to_keep=1)``).
A driver killed in between leaves a state that names a checkpoint no longer on storage; restored from it, the
trial fails with Tune's "Could not recover from checkpoint as it does not exist on storage anymore", on its retry
too, and a resumed study loses it. :class:`StaleCheckpoints` checks each restored trial once, before Tune starts
it: where its checkpoint is missing, the trial forgets it and trains from its first epoch under the same trial id
(so its MLflow run is the same one). A newer checkpoint folder may exist, but a driver killed mid-upload can leave
it incomplete, so none is guessed at.
"""

from __future__ import annotations

from typing import Any

import pyarrow.fs
from ray.tune import Callback


def checkpoint_missing(checkpoint: Any) -> bool:
    """Whether a ``ray.tune.Checkpoint``'s folder is absent from its filesystem (local or remote storage)."""
    info = checkpoint.filesystem.get_file_info(checkpoint.path)
    return info.type == pyarrow.fs.FileType.NotFound


def forget_checkpoints(trial: Any) -> None:
    """Make ``trial`` (a Tune ``Trial``) start from scratch: an empty checkpoint record of the same settings."""
    manager = trial.run_metadata.checkpoint_manager
    trial.run_metadata.checkpoint_manager = type(manager)(checkpoint_config=manager.checkpoint_config)
    trial._restore_checkpoint_result = None  # the checkpoint a ``tune.run(restore=...)`` handed in, if any


class StaleCheckpoints(Callback):
    """Before a restored trial first starts, drop its checkpoint if the folder is missing (module docstring)."""

    def __init__(self) -> None:
        self.checked: set[str] = set()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:
            if trial.trial_id in self.checked:
                continue
            self.checked.add(trial.trial_id)  # once: a checkpoint registered in this session exists
            checkpoint = trial.checkpoint
            if trial.status == "PENDING" and checkpoint is not None and checkpoint_missing(checkpoint):
                forget_checkpoints(trial)
                print(f"trial {trial.trial_id}: its checkpoint {checkpoint.path} is gone (Tune's experiment state "
                      "predates a newer checkpoint that replaced it when the driver stopped); it trains again from "
                      "its first epoch", flush=True)


def guard(callbacks: list | None) -> list:
    """``callbacks`` with a :class:`StaleCheckpoints` added if none is there (a Tune folder made before it existed)."""
    callbacks = list(callbacks or [])
    if not any(isinstance(callback, StaleCheckpoints) for callback in callbacks):
        callbacks.append(StaleCheckpoints())
    return callbacks
