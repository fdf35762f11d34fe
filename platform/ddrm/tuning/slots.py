"""Trial slots that the studies of one driver share: never more trials at once than a campaign allows.

A campaign allows ``max_concurrent`` trials at once in all, however many studies run side by side. Each study's
search algorithm is wrapped in :class:`SharedSlots`: before it hands Tune a new trial it takes a slot of the
driver's :func:`sharing` pool, and it gives the slot back when Tune reports the trial complete, stopped or failed
for good — the events on which Tune's own ``ConcurrencyLimiter`` frees one. With no pool shared (``ddrm tune``,
``ddrm ablate``) the wrapper only passes through. The trials a restored study resumes (live when Tune saved it)
take their slots back before they run, waiting for them if need be, so a resumed campaign keeps the limit too.

A freed slot goes to the study that has waited longest, not to whichever polls first: a study whose trial just
ended asks again at once, and without a line it would keep its slots for as long as it has trials to give (one
study held both slots of the Yelp campaign for hours while another, with dependents, waited).
"""

from __future__ import annotations

import contextlib
import json
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from ray.tune.search import SearchAlgorithm, Searcher, SearchGenerator

STATE_FILE = "ddrm-shared-slots.json"  # beside Tune's searcher state: the trials holding slots when it was saved
# a study that has not asked for a slot for this long leaves the line (Tune asks a waiting study about once a
# second; a stopped or finished one never again)
STALE_SECONDS = 10.0


class SlotPool:
    """``capacity`` trial slots, taken and given back from any thread; remembers the most ever taken. Requesters
    refused a slot wait in line (first refused, first served) while they keep asking."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError(f"a slot pool needs capacity >= 1, not {capacity}")
        self.capacity = capacity
        self._used = 0
        self._peak = 0
        self._closed = False
        self._changed = threading.Condition()
        self._clock = clock
        self._line: dict[Hashable, tuple[int, float]] = {}  # requester -> (place in line, last asked at)
        self._places = itertools.count()
        self._reserved = 0  # slots that waiting :meth:`take` calls (resumed trials) want: served before the line

    @property
    def used(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        return self._peak

    def _grant(self, count: int) -> None:
        self._used += count
        self._peak = max(self._peak, self._used)

    @property
    def waiting(self) -> list[Hashable]:
        """The requesters in line, first first (those that stopped asking dropped)."""
        with self._changed:
            self._drop_stale()
            return sorted(self._line, key=lambda r: self._line[r][0])

    def _drop_stale(self) -> None:
        now = self._clock()
        self._line = {r: (place, asked) for r, (place, asked) in self._line.items() if now - asked <= STALE_SECONDS}

    def try_take(self, requester: Hashable | None = None) -> bool:
        """One slot if one is free for ``requester``: more slots free than requesters ahead of it in line (never
        once :meth:`close` d). Refused, ``requester`` keeps (or takes) its place in line; granted, it leaves it.
        ``None`` asks without a place: it gets a slot only when every requester in line can have one too."""
        with self._changed:
            if self._closed:
                return False
            self._drop_stale()
            now = self._clock()
            place = self._line[requester][0] if requester in self._line else None
            ahead = sum(1 for r, (p, _) in self._line.items() if r != requester and (place is None or p < place))
            if self.capacity - self._used - self._reserved > ahead:
                self._line.pop(requester, None)
                self._grant(1)
                return True
            if requester is not None:
                self._line[requester] = (next(self._places) if place is None else place, now)
            return False

    def take(self, count: int) -> int:
        """``count`` slots, waiting until they are free; a request larger than the pool waits until no slot is
        taken and then takes them all (it runs alone, over the limit). Returns how many were taken: 0 when the
        pool is closed (the campaign is stopping). While it waits, :meth:`try_take` grants no slot it needs."""
        with self._changed:
            self._reserved += count
            try:
                while not self._closed and self._used and self._used + count > self.capacity:
                    self._changed.wait()
            finally:
                self._reserved -= count
            if self._closed:
                return 0
            self._grant(count)
            return count

    def give(self, count: int = 1) -> None:
        with self._changed:
            if count > self._used:
                raise RuntimeError(f"giving back {count} trial slot(s) of the {self._used} taken")
            self._used -= count
            self._changed.notify_all()

    def close(self) -> None:
        """No slot is granted any more; waiting :meth:`take` calls return 0."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


_SHARED: SlotPool | None = None


def shared_pool() -> SlotPool | None:
    """The pool the studies of this driver share now, if any."""
    return _SHARED


@contextlib.contextmanager
def sharing(pool: SlotPool) -> Iterator[SlotPool]:
    """Studies started while inside take their trials' slots from ``pool``."""
    global _SHARED
    previous, _SHARED = _SHARED, pool
    try:
        yield pool
    finally:
        _SHARED = previous


class SharedSlots(SearchAlgorithm):
    """A study's search algorithm (``searcher``: a ``SearchGenerator`` or ``BasicVariantGenerator``; a bare
    ``Searcher`` is wrapped in a ``SearchGenerator``) whose new trials each take a slot of the shared pool."""

    def __init__(self, searcher: SearchAlgorithm | Searcher) -> None:
        self.searcher = SearchGenerator(searcher) if isinstance(searcher, Searcher) else searcher
        self._live: set[str] = set()  # trials handed to Tune and not complete (saved with Tune's state)
        self._held: set[str] = set()  # ... of them, those holding a slot of ``_pool`` (this process only)
        self._pool: SlotPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_held": set(), "_pool": None}  # a pool (and its slots) lives in one process

    # ---- Tune's calls, passed through
    @property
    def metric(self):
        return self.searcher.metric

    @property
    def total_samples(self) -> int:
        return self.searcher.total_samples

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def add_configurations(self, experiments) -> None:
        self.searcher.add_configurations(experiments)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def is_finished(self) -> bool:
        """The searcher's answer, or True once the study's stop switch is thrown (a SIGINT to a campaign): a study
        with no live trial waiting for a slot is otherwise held by Tune's wait for a next trial, polled once a
        second for up to 10 minutes, before its loop sees the stop."""
        from .threaded import stop_requested

        return self.searcher.is_finished() or stop_requested()

    def set_finished(self) -> None:
        self.searcher.set_finished()

    # ---- where the slots are taken and given back
    def next_trial(self):
        pool = shared_pool()
        if pool is not None and not pool.try_take(self):
            return None
        trial = self.searcher.next_trial()
        if trial is None:
            if pool is not None:
                pool.give()
            return None
        self._live.add(trial.trial_id)
        if pool is not None:
            self._held.add(trial.trial_id)
            self._pool = pool
        return trial

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        self._live.discard(trial_id)
        if trial_id in self._held:
            self._held.discard(trial_id)
            self._pool.give()

    # ---- Tune's saved state, with the live trials beside it
    def has_checkpoint(self, dirpath: str) -> bool:
        return self.searcher.has_checkpoint(dirpath) or (Path(dirpath) / STATE_FILE).is_file()

    def save_to_dir(self, dirpath: str, **kwargs) -> None:
        self.searcher.save_to_dir(dirpath, **kwargs)
        path = Path(dirpath) / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        tmp.write_text(json.dumps({"live": sorted(self._live)}))
        os.replace(tmp, path)

    def restore_from_dir(self, dirpath: str) -> None:
        """Tune's saved state; the trials live then (Tune resumes them) take their slots back first."""
        if self.searcher.has_checkpoint(dirpath):
            self.searcher.restore_from_dir(dirpath)
        path = Path(dirpath) / STATE_FILE
        self._live = set(json.loads(path.read_text())["live"]) if path.is_file() else set()
        self._held = set()
        pool = shared_pool()
        if pool is not None and self._live:
            print(f"resuming {len(self._live)} unfinished trial(s): waiting for as many of the "
                  f"{pool.capacity} trial slots", flush=True)
            if pool.take(len(self._live)):
                self._held, self._pool = set(self._live), pool
