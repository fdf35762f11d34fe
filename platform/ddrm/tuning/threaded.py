"""Ray Tune studies in worker threads of one driver: stopped as a SIGINT stops one, registered one at a time.

Tune assumes it runs in the main thread in two places, both taken care of while :func:`side_by_side` is active:

- SIGINT: ``ray.tune.tune._setup_signal_catching`` installs, in the main thread only, a handler that sets the run's
  stop event; in any other thread it installs none and returns an event nothing can set. Here the Tune run of a
  worker thread bound to a :class:`StopSwitch` (:func:`bind`) gets the switch's event instead:
  :meth:`StopSwitch.stop` ends every such run as a SIGINT ends one (Tune's loop stops, the experiment state is
  saved with its unfinished trials resumable, ``fit`` returns), and a bound thread that reaches Tune after the
  switch was thrown starts no run (:func:`tune_run`). A run in the main thread keeps Tune's own handler
  (:func:`tune_run` puts back the SIGINT handler Tune leaves behind).
- Tune's trainable registry (``ray.tune.registry._global_registry``, which every ``fit`` writes its trainable
  to) is not thread-safe: two runs registering at once break it ("dictionary changed size during iteration"),
  so registrations take turns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class StudyStopped(KeyboardInterrupt):
    """A worker thread reached Tune after its :class:`StopSwitch` was thrown: the study does not start."""


class StopSwitch:
    """One stop for the Tune runs of every worker thread bound to it; knows which threads have reached Tune."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._entered: set[threading.Thread] = set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def stop(self) -> None:
        """End every Tune run of the bound threads (they save their state and return); none starts after."""
        with self._lock:
            self.event.set()

    def enter(self) -> None:
        """The calling thread starts a Tune run: :class:`StudyStopped` when the switch was already thrown."""
        with self._lock:
            if self.event.is_set():
                raise StudyStopped("the campaign is stopping: this study does not start")
            self._entered.add(threading.current_thread())

    def entered(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` has started a Tune run (it is in one, or finishing its study after one)."""
        with self._lock:
            return thread in self._entered


_THREAD = threading.local()


def bind(switch: StopSwitch) -> None:
    """The calling (worker) thread's Tune runs stop when ``switch`` is thrown, for as long as the thread lives."""
    _THREAD.switch = switch


def thread_switch() -> StopSwitch | None:
    """The switch the calling thread is bound to, if any."""
    return getattr(_THREAD, "switch", None)


def stop_requested() -> bool:
    """Whether the calling thread's switch was thrown (a study that returns then was stopped, or may have been)."""
    switch = thread_switch()
    return switch is not None and switch.stopped


def _tune_modules():
    """Ray Tune's module that sets up its SIGINT handling, and its trainable registry; a ConfigError when this
    Ray has neither where expected."""
    import ray
    import ray.tune.registry as registry
    import ray.tune.tune as tune_module

    from ..errors import ConfigError

    if not callable(getattr(tune_module, "_setup_signal_catching", None)) or \
            not callable(getattr(getattr(registry, "_global_registry", None), "register", None)):
        raise ConfigError(f"Ray {ray.__version__}: no ray.tune.tune._setup_signal_catching or "
                          f"ray.tune.registry._global_registry.register, so studies cannot run side by side in one "
                          f"driver; run the stages one at a time (--stages-at-once 1)")
    return tune_module, registry._global_registry


@contextlib.contextmanager
def side_by_side() -> Iterator[None]:
    """While inside, a Tune run started in a worker thread bound to a switch (:func:`bind`) stops when the
    switch is thrown, and Tune's trainable registrations take turns."""
    module, registry = _tune_modules()
    catching, register = module._setup_signal_catching, registry.register
    own_register = "register" in vars(registry)  # already patched on the instance (else: the class's method)
    turns = threading.Lock()

    def setup_signal_catching() -> threading.Event:
        switch = thread_switch()
        return catching() if switch is None else switch.event

    def register_in_turn(*args, **kwargs):
        with turns:
            return register(*args, **kwargs)

    module._setup_signal_catching, registry.register = setup_signal_catching, register_in_turn
    try:
        yield
    finally:
        module._setup_signal_catching = catching
        if own_register:
            registry.register = register
        else:
            del registry.register  # the class's method again


@contextlib.contextmanager
def sigint_restored() -> Iterator[None]:
    """Run Tune, then put back the SIGINT handler it found: Tune installs its own for a run and leaves it, so a
    SIGINT after the run (building the report, the next study's set-up) would reach that stale handler and be
    lost instead of stopping the program."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def tune_run() -> Iterator[None]:
    """Around ``Tuner.fit``: in a thread bound to a switch the run does not start once the switch is thrown
    (:class:`StudyStopped`), and the switch knows it started (whoever throws it waits for its study to end); in
    any other thread Tune's SIGINT handler is put back afterwards."""
    switch = thread_switch()
    if switch is None:
        with sigint_restored():
            yield
        return
    switch.enter()
    yield
