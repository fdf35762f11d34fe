"""Studies side by side without Ray trials (fast): the shared trial slots (``ddrm.tuning.slots``) and the campaign's
job scheduler (``ddrm.campaign.schedule``) — dependencies, how many at once, a job that runs alone, a failing job,
a SIGINT."""

from __future__ import annotations

import os
import pickle
import signal
import threading
from types import SimpleNamespace

import pytest
from ray.tune.search import SearchAlgorithm

from ddrm.campaign.schedule import CampaignInterrupted, Job, Work, run_jobs
from ddrm.tuning import threaded
from ddrm.tuning.slots import SharedSlots, SlotPool, sharing

WAIT = 60  # seconds a test waits for something that happens at once when the code is right


class Trials(SearchAlgorithm):
    """A search algorithm handing out ``n`` trials (``<prefix>1``, ...)."""

    def __init__(self, n: int, prefix: str = "t") -> None:
        self.n, self.prefix, self.made, self.completed = n, prefix, 0, []

    def next_trial(self):
        if self.made >= self.n:
            return None
        self.made += 1
        return SimpleNamespace(trial_id=f"{self.prefix}{self.made}")

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append(trial_id)

    def is_finished(self) -> bool:
        return self.made >= self.n


# ------------------------------------------------------------------------------------------- slots
def test_two_studies_never_hold_more_trials_than_the_shared_slots():
    a, b = SharedSlots(Trials(5, "a")), SharedSlots(Trials(5, "b"))
    with sharing(SlotPool(2)) as pool:
        assert a.next_trial().trial_id == "a1" and a.next_trial().trial_id == "a2"
        assert b.next_trial() is None and a.next_trial() is None  # both slots held by a
        a.on_trial_complete("a1")
        assert a.searcher.completed == ["a1"]  # passed through
        assert b.next_trial().trial_id == "b1" and a.next_trial() is None
        a.on_trial_complete("unknown")  # a trial it never handed out gives back no slot
        assert pool.used == 2 and pool.peak == 2


def test_a_freed_slot_goes_to_the_study_that_waited_longest_not_back_to_the_one_that_freed_it():
    """Without a line the study whose trial ended asks again first and keeps its slots for all its trials."""
    a, b, c = (SharedSlots(Trials(9, name)) for name in "abc")
    with sharing(SlotPool(2)) as pool:
        assert [a.next_trial().trial_id, a.next_trial().trial_id] == ["a1", "a2"]
        assert b.next_trial() is None and c.next_trial() is None and pool.waiting == [b, c]
        a.on_trial_complete("a1")
        assert a.next_trial() is None and pool.waiting == [b, c, a]  # a asks at once, and queues behind them
        assert c.next_trial() is None  # b is ahead of c
        assert b.next_trial().trial_id == "b1" and pool.waiting == [c, a]
        a.on_trial_complete("a2")
        assert a.next_trial() is None and c.next_trial().trial_id == "c1" and pool.waiting == [a]
        b.on_trial_complete("b1")
        assert b.next_trial() is None and pool.waiting == [a, b]  # one slot free and a ahead: b waits
        assert pool.try_take() is False  # a request without a place waits for everyone in line
        assert a.next_trial().trial_id == "a3"
        c.on_trial_complete("c1")
        assert b.next_trial().trial_id == "b2" and pool.used == 2 and pool.waiting == []


def test_a_requester_that_stops_asking_leaves_the_line_and_a_late_one_takes_a_slot_left_over():
    now = [0.0]
    pool = SlotPool(2, clock=lambda: now[0])
    assert pool.try_take("x") and pool.try_take("x")
    assert not pool.try_take("gone") and not pool.try_take("late")
    pool.give()
    assert not pool.try_take("late")  # "gone" is ahead and still counts ...
    now[0] = 11.0  # ... until it has not asked for longer than STALE_SECONDS; "late" asks again now
    assert pool.waiting == [] and pool.try_take("late")
    pool.give(2)
    assert pool.try_take("x") and pool.try_take("y")  # two free, nobody in line: both served


def test_a_study_without_trials_to_give_keeps_no_slot_and_without_a_pool_only_passes_through():
    done = SharedSlots(Trials(0))
    with sharing(SlotPool(1)) as pool:
        assert done.next_trial() is None and pool.used == 0
    free = SharedSlots(Trials(3))
    assert [free.next_trial().trial_id for _ in range(3)] == ["t1", "t2", "t3"]  # no pool: no limit


def test_a_study_waiting_for_a_slot_is_finished_once_its_threads_stop_switch_is_thrown_and_only_then():
    """Tune waits up to 10 minutes for a next trial of a study with no live trial unless its searcher is finished:
    a SIGINT to a campaign must end that wait at once (it did not: the Amazon campaign's driver hung ~10 min)."""
    waiting, other = SharedSlots(Trials(3, "w")), SharedSlots(Trials(3, "o"))
    seen: dict[str, bool] = {}
    mine, theirs = threaded.StopSwitch(), threaded.StopSwitch()

    def study(name: str, search: SharedSlots, switch: threaded.StopSwitch) -> None:
        threaded.bind(switch)
        seen[f"{name} before"] = search.is_finished()
        mine.stop()  # the campaign's switch of the first study only
        seen[f"{name} after"] = search.is_finished()

    with sharing(SlotPool(1)):
        assert other.next_trial().trial_id == "o1" and waiting.next_trial() is None  # the one slot is taken
        for name, search, switch in (("waiting", waiting, mine), ("other", other, theirs)):
            thread = threading.Thread(target=study, args=(name, search, switch))
            thread.start()
            thread.join(WAIT)
    assert seen == {"waiting before": False, "waiting after": True, "other before": False, "other after": False}
    assert not waiting.is_finished()  # this (test) thread has no switch: only the searcher answers


def test_a_restored_study_takes_back_the_slots_of_its_live_trials_and_no_pool_is_saved(tmp_path):
    study = SharedSlots(Trials(3))
    with sharing(SlotPool(3)):
        study.next_trial(), study.next_trial()
        study.save_to_dir(str(tmp_path), session_str="s")
    copy = pickle.loads(pickle.dumps(SharedSlots(Trials(3))))  # as Tune keeps it in tuner.pkl
    assert copy._pool is None and not copy._held
    with sharing(SlotPool(2)) as pool:
        assert copy.has_checkpoint(str(tmp_path))
        copy.restore_from_dir(str(tmp_path))
        assert pool.used == 2  # t1, t2 resume: they hold slots before they run
        copy.on_trial_complete("t1")
        assert pool.used == 1


def test_taking_slots_waits_until_they_are_free_and_a_closed_pool_grants_none():
    pool = SlotPool(2)
    assert pool.try_take()
    got: list[int] = []
    waiting = threading.Thread(target=lambda: got.append(pool.take(2)))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and pool.used == 1  # 1 + 2 > 2: it waits
    assert not pool.try_take("newcomer")  # ... and the free slot is kept for it (resumed trials come first)
    pool.give()
    waiting.join(WAIT)
    assert got == [2] and pool.used == 2
    pool.give(2)
    assert pool.take(5) == 5 and pool.peak == 5  # larger than the pool: alone, when none is taken
    with pytest.raises(RuntimeError):
        pool.give(6)
    pool.give(5)
    pool.try_take()
    closed = threading.Thread(target=lambda: got.append(pool.take(2)))
    closed.start()
    pool.close()
    closed.join(WAIT)
    assert got[-1] == 0 and not pool.try_take()


# ------------------------------------------------------------------------------------------- jobs
def _job(name: str, log: list, run=lambda: None, needs: tuple[str, ...] = (), alone: bool = False) -> Job:
    def finish(result):
        if isinstance(result, dict) and result.get("interrupted"):
            raise CampaignInterrupted(f"{name} was interrupted")
        log.append((name, result))

    return Job(name, needs, lambda: Work(run, alone), finish)


def test_independent_jobs_run_side_by_side_and_a_dependent_one_starts_after_its_need_is_finished():
    log: list = []
    meet = threading.Barrier(2, timeout=WAIT)  # broken (an error) unless a and b run at once
    saw: list = []
    jobs = [_job("a", log, lambda: meet.wait() or "A"), _job("c", log, lambda: saw.append(list(log)), needs=("a",)),
            _job("b", log, lambda: meet.wait() or "B")]
    run_jobs(jobs, at_once=2)
    assert ("a", "A") in saw[0]  # a was finished (its config chosen) before c started
    assert [name for name, _ in log].index("c") > [name for name, _ in log].index("a")


def test_no_more_jobs_run_at_once_than_allowed():
    lock, running, peak = threading.Lock(), [0], [0]
    pairs = threading.Barrier(2, timeout=WAIT)

    def run():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        pairs.wait()
        with lock:
            running[0] -= 1

    log: list = []
    run_jobs([_job(name, log, run) for name in "abcd"], at_once=2)
    assert peak[0] == 2 and len(log) == 4


def test_one_at_a_time_runs_the_jobs_in_this_thread_in_the_given_order_after_their_needs():
    log: list = []
    threads: list = []
    jobs = [_job("b", log, lambda: threads.append(threading.current_thread()), needs=("c",)),
            _job("a", log, lambda: threads.append(threading.current_thread())),
            _job("c", log, lambda: threads.append(threading.current_thread()))]
    run_jobs(jobs, at_once=1)
    assert [name for name, _ in log] == ["a", "c", "b"] and set(threads) == {threading.main_thread()}


def test_a_job_that_must_run_alone_waits_for_the_others_and_nothing_starts_beside_it():
    lock, running, beside_alone = threading.Lock(), set(), []
    release_b = threading.Event()

    def runner(name: str):
        def run():
            with lock:
                running.add(name)
                beside_alone.append(name != "a" and "a" in running or name == "a" and len(running) > 1)
            if name == "b":
                release_b.wait(WAIT)
            with lock:
                running.discard(name)
        return run

    log: list = []
    jobs = [_job("b", log, runner("b")), _job("a", log, runner("a"), alone=True), _job("c", log, runner("c"))]
    threading.Timer(0.5, release_b.set).start()  # b ends a moment after a was prepared
    run_jobs(jobs, at_once=3)
    assert [name for name, _ in log] == ["b", "a", "c"] and not any(beside_alone)


def test_a_failing_job_stops_the_running_studies_which_keep_what_they_did_and_its_error_is_raised():
    log: list = []
    inside = threading.Event()

    def study():
        with threaded.tune_run():
            inside.set()
            threaded.thread_switch().event.wait(WAIT)  # Tune's loop ends when the switch is thrown
        return "stopped cleanly"

    def fail():
        inside.wait(WAIT)
        raise ValueError("boom")

    jobs = [_job("b", log, study), _job("a", log, fail), _job("c", log, needs=("a",))]
    with pytest.raises(ValueError, match="boom"):
        run_jobs(jobs, at_once=2)
    assert log == [("b", "stopped cleanly")]  # finished while stopping; c never started


def test_a_sigint_stops_every_running_study_the_campaign_stops_and_a_study_outside_tune_never_starts_one():
    log: list = []
    inside = threading.Barrier(4, timeout=WAIT)  # a, b, e and the SIGINT
    outside, stopped = threading.Event(), []

    def study():
        with threaded.tune_run():
            inside.wait()
            threaded.thread_switch().event.wait(WAIT)
        return {"interrupted": True}

    def pretraining():  # still outside Tune when the SIGINT comes; reaches it after the campaign stopped
        inside.wait()
        outside.wait(WAIT)
        try:
            with threaded.tune_run():
                log.append(("e", "trained"))
        except threaded.StudyStopped:
            stopped.append("e")

    def interrupt():
        inside.wait()
        os.kill(os.getpid(), signal.SIGINT)

    fallback: list = []
    previous = signal.signal(signal.SIGINT, lambda *_: fallback.append("SIGINT reached the handler before"))
    try:
        jobs = [_job("a", log, study), _job("b", log, study), _job("d", log, lambda: "D"),
                _job("e", log, pretraining), _job("c", log, needs=("a",))]
        threading.Thread(target=interrupt).start()
        with pytest.raises(CampaignInterrupted) as raised:
            run_jobs(jobs, at_once=4)
        assert signal.getsignal(signal.SIGINT) is not previous  # the handler found is back ...
    finally:
        restored = signal.signal(signal.SIGINT, previous)
    assert not fallback and restored.__name__ == "<lambda>"  # ... and the SIGINT never reached it
    assert "a was interrupted" in str(raised.value) and "b was interrupted" in str(raised.value)
    assert log == [("d", "D")]  # d ended before: finished; c, which needs a, never started
    outside.set()
    for _ in range(WAIT * 10):
        if stopped:
            break
        threading.Event().wait(0.1)
    assert stopped == ["e"] and ("e", "trained") not in log


def test_each_study_registers_its_trainable_under_a_name_of_its_own():
    from ddrm.tuning.runner import LEGACY_TRAINABLE, trainable_name

    names = {trainable_name(f"tuned-ml-1m_noisy-{stage}") for stage in ("mf", "mf_ddrm", "lightgcn")}
    assert len(names) == 3 and LEGACY_TRAINABLE not in names
    assert trainable_name("tuned-ml-1m_noisy-mf") == trainable_name("tuned-ml-1m_noisy-mf")  # a restore finds it
