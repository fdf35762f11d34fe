"""Fault injection for the study tests, kept out of the production trainable (``ddrm.tuning.trainable``).

A test replaces ``ddrm.tuning.trainable.ddrm_trainable`` *in the driver process* — where the runner looks it up
when it builds the Tuner — with a wrapper from here (:func:`patched`, or ``python tests/faults.py`` for a
driver of its own). Ray pickles the wrapper by value (a closure) to each trial's worker process, which imports
the unpatched module: there the wrapper runs the production trainable unchanged, with ``ray.tune.report``
wrapped so that the fault strikes right after a checkpointed report. So the trials train, checkpoint, die and
resume through the real code path; only the moment of the fault is the test's.

Keep the closures self-contained (stdlib names only): the workers cannot import this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

TRAINABLE = "ddrm.tuning.trainable"  # the module whose ``ddrm_trainable`` the runner hands to Tune

Fault = Callable[[dict], None]


def after_checkpoint(fault: Fault) -> Callable[..., None]:
    """The production trainable with ``fault(metrics)`` run in the trial's worker after every checkpointed
    ``tune.report`` (every evaluation of the tuned stage; not the final result, which carries no checkpoint)."""

    def ddrm_trainable(params: dict[str, Any], plan: Any) -> None:  # Tune names the trial folders after it
        import importlib

        import ray.tune

        production = importlib.import_module("ddrm.tuning.trainable").ddrm_trainable
        if production is ddrm_trainable:
            raise RuntimeError("the fault wrapper ran in the patched driver process, not in a Ray worker")
        real_report = ray.tune.report

        def report(metrics: dict, *args: Any, checkpoint: Any = None, **kwargs: Any) -> None:
            real_report(metrics, *args, checkpoint=checkpoint, **kwargs)
            if checkpoint is not None:
                fault(metrics)

        ray.tune.report = report  # the trial's own worker process (an actor of its own): no other trial sees it
        try:
            production(params, plan)
        finally:
            ray.tune.report = real_report

    return ddrm_trainable


def crash_once(marker: Path | str) -> Callable[..., None]:
    """A trainable whose worker process dies (``os._exit(1)``) right after its epoch-1 checkpoint, once per
    study: the first trial to get there creates ``marker`` and exits; every later one (its own retry
    included) sees the marker and trains on."""
    path = str(marker)

    def fault(metrics: dict) -> None:
        if metrics.get("epoch") == 1 and not os.path.exists(path):
            with open(path, "w") as handle:
                handle.write("crashed once")
            os._exit(1)  # no cleanup, no exception: the process is gone as after a kill

    return after_checkpoint(fault)


def hold_while_missing(release: Path | str) -> Callable[..., None]:
    """A trainable that, right after its epoch-1 checkpoint, waits while ``release`` is missing — the moment a
    test kills a node or the tracking server. With the file present it never waits."""
    path = str(release)

    def fault(metrics: dict) -> None:
        while metrics.get("epoch") == 1 and not os.path.exists(path):
            time.sleep(0.2)

    return after_checkpoint(fault)


def meeting(folder: Path | str, studies: tuple[str, ...] = (), wait_s: float = 0.0, held: tuple[str, ...] = (),
            hold_while_missing: Path | str | None = None) -> Callable[..., None]:
    """The production trainable, recorded: each trial writes ``<folder>/<study>-<trial id>.start`` when it starts
    (its wall-clock time; each start, a resumed trial's too, is also a line of ``starts.log``) and ``.json``
    (study, trial id, start, end) when it ends, in its worker. Before it trains, a trial of one of ``studies``
    waits up to ``wait_s`` seconds for a trial of another of them to be running (started, not ended): studies
    run side by side meet there, studies run one after another do not; and a trial of one of ``held`` waits
    while the file ``hold_while_missing`` is missing (the moment a test sends SIGINT)."""
    root, hold = str(folder), str(hold_while_missing) if hold_while_missing else None

    def ddrm_trainable(params: dict[str, Any], plan: Any) -> None:  # Tune names the trial folders after it
        import importlib
        import json as json_
        import os as os_
        import time as time_

        import ray.tune

        context = ray.tune.get_context()
        study, trial = context.get_experiment_name(), context.get_trial_id()
        start = time_.time()
        with open(os_.path.join(root, f"{study}-{trial}.start"), "w") as handle:
            handle.write(repr(start))
        with open(os_.path.join(root, "starts.log"), "a") as handle:
            handle.write(f"{study} {trial} {start!r}\n")

        def running_elsewhere() -> bool:  # "<study>-<trial id>.start" without its ".json": Tune's ids have no "-"
            names = set(os_.listdir(root))
            return any(name.endswith(".start") and name.rsplit("-", 1)[0] in studies
                       and name.rsplit("-", 1)[0] != study and name[:-len(".start")] + ".json" not in names
                       for name in names)

        if study in studies:
            deadline = start + wait_s
            while not running_elsewhere() and time_.time() < deadline:
                time_.sleep(0.1)
        while study in held and hold and not os_.path.exists(hold):
            time_.sleep(0.1)
        production = importlib.import_module("ddrm.tuning.trainable").ddrm_trainable
        try:
            production(params, plan)
        finally:
            with open(os_.path.join(root, f"{study}-{trial}.json"), "w") as handle:
                json_.dump({"study": study, "trial": trial, "start": start, "end": time_.time()}, handle)

    return ddrm_trainable


@contextlib.contextmanager
def patched(trainable: Callable[..., None]) -> Iterator[None]:
    """The study runner of this (driver) process hands ``trainable`` to Tune instead of the production one."""
    import importlib

    module = importlib.import_module(TRAINABLE)
    production = module.ddrm_trainable
    module.ddrm_trainable = trainable
    try:
        yield
    finally:
        module.ddrm_trainable = production


def main(argv: list[str]) -> int:
    """``python tests/faults.py --hold RELEASE <ddrm arguments>``: the ``ddrm`` CLI as a driver process whose
    trials hold after their epoch-1 checkpoint while the file RELEASE is missing."""
    if len(argv) < 2 or argv[0] != "--hold":
        print("usage: faults.py --hold RELEASE <ddrm arguments>", file=sys.stderr)
        return 2
    from ddrm.cli import main as ddrm_main

    with patched(hold_while_missing(argv[1])):
        return ddrm_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
