"""How many requests the engine keeps in flight: a fixed number, or ``auto``.

A server's best concurrency is rarely known: vLLM's throughput climbs with its batch
until the KV cache is full, a hosted API answers 429 past its quota, a queueing server
only makes every answer slower. :class:`AdaptiveLimit` finds it while the run goes: it
starts at 8, measures each window of answers (at least as many as the limit, at least
8), and raises the limit while a raise brings throughput:

* a raise is kept when throughput grew by at least half of what the raise could have
  given (``log(throughput ratio) / log(limit ratio) >= 0.5``); by Little's law
  (throughput = requests in flight / latency) a raise that only made answers slower is
  undone, back to the last limit kept;
* the first raises double the limit (slow start), the later ones are probes of +25 %,
  each after a pause of 2 windows that doubles (up to 16) while probes keep failing;
* a 429 or 503 cuts the limit by a quarter at once (once per window: the answers to
  requests sent before the cut say nothing of the new limit);
* the limit never passes ``maximum`` (a target's ``max_concurrency``) and is raised
  only when requests were kept waiting for a slot.

Throughput is measured as the window's mean number of requests in flight over their
mean latency, which stays true when a server answers in bursts; requests sent before a
window's first answer (the burst a raise lets out, on connections still being opened)
are not measured. Used on the engine's
loop thread only; :attr:`settled` and :attr:`peak` may be read from any thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_expertbench.records import TargetError

__all__ = ["OVERLOAD_STATUSES", "AdaptiveLimit", "FixedLimit", "Limit", "limit_for"]

OVERLOAD_STATUSES = (429, 503)
START = 8
MIN_WINDOW = 8
KEEP_EFFICIENCY = 0.5
PROBE_FACTOR = 1.25
CUT_FACTOR = 0.75
FIRST_PAUSE, MAX_PAUSE = 2, 16


class FixedLimit:
    """``concurrency: N``: always N in flight at most."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum

    def may_start(self, in_flight: int) -> bool:
        return in_flight < self.maximum

    def heard(self, latency_s: float, error: BaseException | None) -> None:
        """A fixed limit learns nothing from an attempt."""

    def figures(self) -> tuple[int, int]:
        """(settled, peak) of an adaptive limit; (0, 0) for a fixed one."""
        return (0, 0)


@dataclass
class _Window:
    opened: float
    limit: int  # the limit the window measures
    in_flight: float  # requests in flight when it opened (then: at the last change)
    changed: float  # when in_flight last changed
    area: float = 0.0  # ∫ in flight dt since opened
    first_heard: float | None = None  # when the first attempt ended after it opened
    answers: int = 0  # answers to requests sent after first_heard
    latency_sum: float = 0.0
    waited: bool = False  # a request was kept waiting for a slot


@dataclass(frozen=True)
class _Measure:
    limit: int
    throughput: float


class AdaptiveLimit:
    """``concurrency: auto``: the engine asks :meth:`may_start` before each request it
    starts and tells :meth:`heard` the latency and error of each attempt."""

    def __init__(self, maximum: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self._clock = clock
        self._limit = min(START, maximum)
        self.peak = self._limit
        self.settled = self._limit  # the last limit a measurement kept
        self._slow_start = True
        self._kept: _Measure | None = None  # the last window whose limit was kept
        self._pause = 0  # windows to wait before the next probe
        self._failed_probes = 0
        now = clock()
        self._window = _Window(now, self._limit, 0.0, now)

    @property
    def limit(self) -> int:
        return self._limit

    def may_start(self, in_flight: int) -> bool:
        self._track(in_flight)
        if in_flight < self._limit:
            return True
        self._window.waited = True
        return False

    def heard(self, latency_s: float, error: BaseException | None) -> None:
        now = self._clock()
        window = self._window
        sent = now - latency_s
        if isinstance(error, TargetError) and error.status in OVERLOAD_STATUSES:
            if sent >= window.opened:  # sent under this window's limit
                self._cut(now)
            return
        if window.first_heard is None:
            window.first_heard = now
        # The burst a raise lets out, before the window's first answer, goes on new
        # connections (a client built, a TCP connect, a server thread): not measured.
        if error is not None or sent < window.first_heard:
            return
        window.answers += 1
        window.latency_sum += latency_s
        if window.answers >= max(MIN_WINDOW, window.limit):
            self._close(now)

    def figures(self) -> tuple[int, int]:
        return (self.settled, self.peak)

    # ------------------------------------------------------------------ windows

    def _track(self, in_flight: int) -> None:
        """Add the time at the previous in-flight count to the window's area."""
        window, now = self._window, self._clock()
        window.area += window.in_flight * (now - window.changed)
        window.in_flight, window.changed = in_flight, now

    def _close(self, now: float) -> None:
        window = self._window
        window.area += window.in_flight * (now - window.changed)
        elapsed = now - window.opened
        latency = window.latency_sum / window.answers
        if elapsed <= 0 or latency <= 0:
            self._open(now, window.in_flight)
            return
        measure = _Measure(window.limit, (window.area / elapsed) / latency)
        self._judge(measure, window.waited)
        self._open(now, window.in_flight)

    def _judge(self, measure: _Measure, waited: bool) -> None:
        kept = self._kept
        if kept is not None and measure.limit > kept.limit:  # a raise: did it pay?
            gain = math.log(max(measure.throughput, 1e-9) / kept.throughput)
            if gain / math.log(measure.limit / kept.limit) < KEEP_EFFICIENCY:
                self._slow_start = False
                self._failed_probes += 1
                self._pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (self._failed_probes - 1))
                self._set(kept.limit)
                return
            self._failed_probes = 0
        self._kept = measure
        self.settled = measure.limit
        if self._pause > 0:
            self._pause -= 1
        elif waited:
            factor = 2.0 if self._slow_start else PROBE_FACTOR
            self._set(max(measure.limit + 1, math.ceil(measure.limit * factor)))

    def _cut(self, now: float) -> None:
        self._slow_start = False
        self._kept = None
        self._pause = FIRST_PAUSE
        self._set(max(1, math.floor(self._limit * CUT_FACTOR)))
        self.settled = self._limit
        self._open(now, self._window.in_flight)

    def _set(self, limit: int) -> None:
        self._limit = max(1, min(self.maximum, limit))
        self.peak = max(self.peak, self._limit)

    def _open(self, now: float, in_flight: float) -> None:
        self._window = _Window(now, self._limit, in_flight, now)


Limit = FixedLimit | AdaptiveLimit


def limit_for(maximum: int, adaptive: bool) -> Limit:
    """The engine's limit: ``maximum`` in flight, found by :class:`AdaptiveLimit` when
    ``adaptive``."""
    return AdaptiveLimit(maximum) if adaptive else FixedLimit(maximum)
