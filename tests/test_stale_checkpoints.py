"""A restored trial whose checkpoint folder is gone trains from its first epoch instead of failing (unit level, on
Tune's own Trial; the killed-driver path end to end is in test_distributed.py)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("ray")
from ray.train._internal.session import _TrainingResult  # noqa: E402
from ray.tune import Callback, Checkpoint, CheckpointConfig  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402

from ddrm.tuning.stale_checkpoints import StaleCheckpoints, guard  # noqa: E402


def _trial_with_checkpoint(tmp_path, name: str) -> Trial:
    trial = Trial("ddrm_trainable", config={}, stub=True, checkpoint_config=CheckpointConfig(num_to_keep=1))
    folder = tmp_path / name / "checkpoint_000002"
    folder.mkdir(parents=True)
    result = _TrainingResult(checkpoint=Checkpoint.from_directory(str(folder)), metrics={"epoch": 3})
    trial.run_metadata.checkpoint_manager.register_checkpoint(result)
    return trial


def test_a_pending_trial_whose_checkpoint_is_gone_forgets_it_and_one_whose_checkpoint_exists_keeps_it(tmp_path,
                                                                                                      capsys):
    gone, kept = _trial_with_checkpoint(tmp_path, "gone"), _trial_with_checkpoint(tmp_path, "kept")
    shutil.rmtree(tmp_path / "gone")
    StaleCheckpoints().on_step_begin(iteration=0, trials=[gone, kept])
    assert gone.checkpoint is None and gone.latest_checkpoint_result is None
    assert gone.run_metadata.checkpoint_manager.checkpoint_config.num_to_keep == 1  # the same settings
    assert kept.checkpoint is not None and kept.checkpoint.path.endswith("kept/checkpoint_000002")
    out = capsys.readouterr().out
    assert f"trial {gone.trial_id}: its checkpoint" in out and "first epoch" in out and kept.trial_id not in out


def test_each_trial_is_checked_once_so_a_checkpoint_replaced_later_in_the_session_is_never_dropped(tmp_path):
    trial = _trial_with_checkpoint(tmp_path, "live")
    guard_ = StaleCheckpoints()
    guard_.on_step_begin(iteration=0, trials=[trial])
    shutil.rmtree(tmp_path / "live")  # as num_to_keep does between two steps while the trial runs on
    guard_.on_step_begin(iteration=1, trials=[trial])
    assert trial.checkpoint is not None


def test_a_running_trial_is_left_alone(tmp_path):
    trial = _trial_with_checkpoint(tmp_path, "running")
    trial.set_status(Trial.RUNNING)
    shutil.rmtree(tmp_path / "running")
    StaleCheckpoints().on_step_begin(iteration=0, trials=[trial])
    assert trial.checkpoint is not None


def test_guard_adds_one_stale_checkpoint_callback_and_keeps_the_others_in_order():
    other = Callback()
    once = guard([other])
    assert once[0] is other and isinstance(once[1], StaleCheckpoints) and len(once) == 2
    assert guard(once) == once
    assert len(guard(None)) == 1
