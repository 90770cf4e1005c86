"""A simulated model server on a simulated clock, for tests of the adaptive limit.

Three kinds of server: ``queue`` serves ``capacity`` requests at once and queues the
rest (each waits its turn: latency grows, throughput does not), ``reject`` answers
429 at once past ``capacity``, and ``batch`` serves every request at once, each taking
longer the more there are (throughput grows with diminishing returns, like vLLM's
batches). The client keeps asking while the limit allows, as the engine does.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from pytest_expertbench.adaptive import AdaptiveLimit
from pytest_expertbench.records import TargetError


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Simulation:
    kind: str  # queue | reject | batch
    capacity: int = 32
    service_s: float = 0.2
    maximum: int = 256
    clock: Clock = field(default_factory=Clock)
    answered: int = 0
    rejected: int = 0
    in_flight: int = 0
    limits: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limit = AdaptiveLimit(self.maximum, clock=self.clock)
        self._events: list[tuple[float, int, float, bool]] = []  # end, seq, sent, ok
        self._waiting: deque[float] = deque()
        self._serving = 0
        self._seq = 0

    def run(self, seconds: float) -> None:
        """Ask for ``seconds`` of simulated time."""
        self._fill()
        while self._events and self._events[0][0] <= seconds:
            end, _, sent, ok = heapq.heappop(self._events)
            self.clock.now = end
            self.in_flight -= 1
            if self.kind == "queue":
                self._serving -= 1
                if self._waiting:
                    self._serve(self._waiting.popleft())
            if ok:
                self.answered += 1
                self.limit.heard(end - sent, None)
            else:
                self.rejected += 1
                self.limit.heard(end - sent, TargetError("HTTP 429", status=429))
            self._fill()
            self.limits.append((end, self.limit.limit))
        self.clock.now = seconds

    def _fill(self) -> None:
        while self.limit.may_start(self.in_flight):
            self.in_flight += 1
            self._send(self.clock.now)

    def _send(self, now: float) -> None:
        if self.kind == "queue":
            if self._serving < self.capacity:
                self._serve(now)
            else:
                self._waiting.append(now)
        elif self.kind == "reject":
            busy = self.in_flight - 1 - self._rejecting()
            ok = busy < self.capacity
            self._push(now + (self.service_s if ok else 0.01), now, ok)
        else:  # batch: a step's time grows with the batch
            self._push(now + self.service_s * (1 + self.in_flight / self.capacity), now, True)

    def _rejecting(self) -> int:
        return sum(1 for _, _, _, ok in self._events if not ok)

    def _serve(self, sent: float) -> None:
        self._serving += 1
        self._push(self.clock.now + self.service_s, sent, True)

    def _push(self, end: float, sent: float, ok: bool) -> None:
        self._seq += 1
        heapq.heappush(self._events, (end, self._seq, sent, ok))
