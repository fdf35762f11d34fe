"""Run a campaign's studies as soon as the ones they need are done, several side by side (:func:`run_jobs`).

A job (a stage's search, a table) starts once every job it needs has finished (its ``finish`` ran: the chosen
config is written), up to ``at_once`` jobs at a time, in the order given (dependency levels, then spec order);
they share the campaign's trial slots (:mod:`ddrm.tuning.slots`: ``max_concurrent`` trials in all). ``finish``
runs in the calling thread, one job at a time, so the record it keeps never depends on which job ended first.

How: each job's study runs in a worker thread of this one driver (its own ``Tuner.fit``, Optuna sampler,
scheduler, Tune folder and MLflow experiment). Ray Tune does run from a worker thread; what it assumes of the
main thread, and what one driver shares, is taken care of:

- SIGINT: Tune catches it only in the main thread. The driver's SIGINT handler throws a
  :class:`~ddrm.tuning.threaded.StopSwitch` whose event every worker thread's Tune loop waits on as on Tune's
  own (:mod:`ddrm.tuning.threaded`), so each running study ends as a SIGINT ends one: its finished trials kept,
  its unfinished ones resumable from its Tune folder. A second SIGINT stops at once.
- Tune registers a driver's trainables in Ray's key-value store by name, in a registry that is not thread-safe:
  registrations take turns (:mod:`ddrm.tuning.threaded`), and each study's trainable has its own name
  (``runner.trainable_name``), else one study's trials would train with another's plan; a Tune folder of an
  older version, made under the one shared name, runs alone (``runner.restores_alone``).
- One sqlite tracking store for all: the driver's MLflow calls take turns (``tracking._client``), so no writer
  meets "database is locked"; matplotlib draws one report at a time (``runner._publish``).

Several ``ddrm tune`` processes attached to one Ray cluster would avoid the first two by construction, but the
trial limit would then need a lock shared across processes, each process would load torch, Ray and MLflow
again, and its result, errors and a SIGINT would have to cross process boundaries; threads keep one driver, one
record and one error path, and the study code is the same that ``ddrm tune`` runs. With ``at_once == 1`` the
jobs run in the calling thread, one after another, exactly as before studies ran side by side.
"""

from __future__ import annotations

import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..tuning import threaded


class CampaignInterrupted(KeyboardInterrupt):
    """A study of the campaign was stopped by a SIGINT before its end; the campaign stops after it."""


class _SigintReceived(CampaignInterrupted):
    """The driver got a SIGINT (the studies it stopped say more)."""


@dataclass(frozen=True)
class Work:
    """What a started job does away from the scheduler: ``run()`` (its study; a worker thread runs it) and
    whether it must run with no other job beside it."""

    run: Callable[[], Any]
    alone: bool = False


@dataclass(frozen=True)
class Job:
    """``prepare()`` (in the scheduler's thread, once ``needs`` are finished) returns its :class:`Work`;
    ``finish(result)`` (in the scheduler's thread) takes what the work returned."""

    name: str
    needs: tuple[str, ...]
    prepare: Callable[[], Work]
    finish: Callable[[Any], None]


def run_jobs(jobs: Sequence[Job], at_once: int) -> None:
    """Every job, each once all it ``needs`` are finished, up to ``at_once`` at a time (see the module)."""
    names = {job.name for job in jobs}
    for job in jobs:
        unknown = [n for n in job.needs if n not in names]
        if unknown:
            raise ValueError(f"job {job.name!r} needs {unknown}, which are not jobs")
    if at_once < 1:
        raise ValueError(f"at_once must be >= 1, not {at_once}")
    if at_once == 1:
        _run_in_turn(list(jobs))
    else:
        _SideBySide(list(jobs), at_once).run()


def _next_ready(left: list[Job], finished: set[str]) -> Job | None:
    return next((job for job in left if all(n in finished for n in job.needs)), None)


def _run_in_turn(left: list[Job]) -> None:
    """One job at a time in this thread; a SIGINT reaches the running study as it always did."""
    finished: set[str] = set()
    while left:
        job = _next_ready(left, finished)
        if job is None:
            raise ValueError(f"jobs {[j.name for j in left]} need each other")
        left.remove(job)
        job.finish(job.prepare().run())
        finished.add(job.name)


class _SideBySide:
    """Jobs in daemon worker threads; the calling (main) thread starts them, finishes them and stops them."""

    def __init__(self, jobs: list[Job], at_once: int) -> None:
        self.left, self.at_once = jobs, at_once
        self.finished: set[str] = set()
        self.running: dict[str, threading.Thread] = {}
        self.held: tuple[Job, Work] | None = None  # prepared, waiting for the others to end (it runs alone)
        self.announced = False  # the held job said it waits
        self.alone = False  # the running job runs alone: nothing starts beside it
        self.results: queue.Queue = queue.Queue()
        self.switch = threaded.StopSwitch()

    def run(self) -> None:
        with threaded.side_by_side(), _sigint_throws(self.switch):
            try:
                self._loop()
            except KeyboardInterrupt as error:
                if not isinstance(error, CampaignInterrupted):  # a second SIGINT: at once
                    self.switch.stop()
                    raise
                raise self._stop(error) from None
            except BaseException as error:
                raise self._stop(error) from None

    def _loop(self) -> None:
        while self.left or self.running or self.held:
            if self.switch.stopped:
                raise _SigintReceived("the campaign was stopped by SIGINT; rerun the command to resume")
            self._start_ready()
            if not self.running:
                raise ValueError(f"jobs {[j.name for j in self.left]} need each other")
            try:
                outcome = self.results.get(timeout=0.2)  # short: a SIGINT is noticed within it
            except queue.Empty:
                continue
            self._finish(*outcome)

    def _start_ready(self) -> None:
        while len(self.running) < self.at_once and not self.alone:
            if self.held is None:
                job = _next_ready(self.left, self.finished)
                if job is None:
                    return
                self.left.remove(job)
                self.held = (job, job.prepare())
            job, work = self.held
            if work.alone and self.running:
                if not self.announced:
                    print(f"{job.name} waits for the running studies to end: it runs alone (its Tune folder was "
                          f"made before studies ran side by side)", flush=True)
                    self.announced = True
                return
            self.held, self.announced = None, False
            self.alone = work.alone
            thread = threading.Thread(target=self._work, args=(job, work), name=f"campaign {job.name}", daemon=True)
            self.running[job.name] = thread
            thread.start()

    def _work(self, job: Job, work: Work) -> None:
        threaded.bind(self.switch)
        try:
            self.results.put((job, work.run(), None))
        except BaseException as error:  # noqa: BLE001 - handed to the scheduler's thread, which raises it
            self.results.put((job, None, error))

    def _finish(self, job: Job, result: Any, error: BaseException | None) -> None:
        del self.running[job.name]
        self.alone = False
        if isinstance(error, threaded.StudyStopped):  # it reached Tune once the campaign was stopping
            return
        if error is not None:
            raise error
        job.finish(result)
        self.finished.add(job.name)

    def _stop(self, error: BaseException) -> BaseException:
        """After ``error`` (a SIGINT, a failed job): every running study stops as a SIGINT stops one. The main
        thread waits for the jobs whose study had reached Tune to end (their trials so far saved, their report
        made) and finishes them and any other that ended by then; a job not in Tune yet (pretraining backends)
        ends with the process. Returns what to raise: the interruptions of the studies stopped, else ``error``."""
        self.switch.stop()
        if self.running:
            print(f"stopping: the running studies ({', '.join(self.running)}) end and keep their trials so far "
                  f"(Ctrl+C again: at once)", flush=True)
        awaited = {name for name, thread in self.running.items() if self.switch.entered(thread)}
        stopped = [str(error)] if isinstance(error, CampaignInterrupted) and not isinstance(error, _SigintReceived) \
            else []
        while True:
            try:  # a timeout: a second SIGINT is not held up
                job, result, failed = self.results.get(timeout=0.5) if awaited else self.results.get_nowait()
            except queue.Empty:
                if awaited:
                    continue
                break
            awaited.discard(job.name)
            try:
                self._finish(job, result, failed)
            except CampaignInterrupted as interrupted:
                stopped.append(str(interrupted))
            except Exception as other:  # noqa: BLE001 - reported; the campaign ends with the first error
                print(f"error: {job.name}: {type(other).__name__}: {other}", flush=True)
        if isinstance(error, CampaignInterrupted) and stopped:
            return CampaignInterrupted("; ".join(stopped))  # every study stopped, each with its folder
        if stopped:
            print("\n".join(f"stopped: {line}" for line in stopped), flush=True)
        return error


class _sigint_throws:
    """While inside (in the main thread): a SIGINT throws ``switch``, and puts back the handler found, so a
    second SIGINT stops at once."""

    def __init__(self, switch: threaded.StopSwitch) -> None:
        self.switch = switch
        self.previous: Any = signal.default_int_handler
        self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, self.previous)
        self.switch.stop()

    def __enter__(self) -> "_sigint_throws":
        if threading.current_thread() is threading.main_thread():
            found = signal.getsignal(signal.SIGINT)
            self.previous = found if found is not None else signal.default_int_handler  # None: not set from Python
            signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
