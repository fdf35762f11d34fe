"""What a study's Tune experiment folder holds: whether Tune can pick the study up from it.

Tune saves ``experiment_state-<timestamp>.json`` (its trials) beside ``tuner.pkl``; ``Tuner.can_restore`` only
asks whether such files exist. A folder whose newest state lists no trial (the driver stopped after Tune started
the study but before its first trial: e.g. a campaign stage waiting for a shared trial slot when SIGINT came) is
not restorable in fact: Tune's restore fails on it (``IndexError`` in ``TuneController._restore_trials``, logged
with a traceback) and starts over. :func:`restorable` calls such a folder gone, so the study resumes the way it
does when Tune's folder is lost: from the tracking store (its finished trials, its imports).
"""

from __future__ import annotations

import json
from pathlib import Path

STATE_GLOB = "experiment_state-*.json"  # Tune's experiment checkpoint files (TuneController.CKPT_FILE_TMPL)


def trial_count(path: str | Path) -> int | None:
    """How many trials the newest experiment state in ``path`` lists; None when it has none or it cannot be read.

    The timestamp in the file name (``%Y-%m-%d_%H-%M-%S``) sorts as text in time order, as Tune picks the newest.
    """
    states = sorted(Path(path).glob(STATE_GLOB))
    if not states:
        return None
    try:
        trials = json.loads(states[-1].read_text()).get("trial_data")
    except (OSError, ValueError, AttributeError):
        return None
    return len(trials) if isinstance(trials, list) else None


def restorable(path: str | Path) -> bool:
    """Whether Tune can resume the study in ``path``: ``Tuner.can_restore`` and its newest state lists a trial
    (a state Tune wrote in a format this cannot read counts as restorable: Tune decides)."""
    from ray import tune

    if not tune.Tuner.can_restore(str(path)):
        return False
    return trial_count(path) != 0
