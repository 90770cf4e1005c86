"""The engine's circuit breaker: stop asking a target that cannot be reached.

Against a server that is down (nothing listens on the port, a wrong host name, a
peer that resets every connection) every request fails the same way, and each one
only after its retries and their backoff: a run of 1000 examples would spend minutes
learning 1000 times what the first few requests already showed. The breaker opens
when ``threshold`` requests in a row have failed to connect after their last retry
(the engine uses ``min(concurrency, 4)``, so that the first round of requests in
flight is enough), with no answer from the server in between. From then on, every
request of that engine that has not been sent yet fails at once with one line
(:class:`NotAsked`), requests waiting to retry stop waiting, and nothing is retried.
An open breaker stays open for the rest of the process: a server that comes back
mid-run would give a run of mixed answers anyway.

An answer from the cache says nothing about the server, and neither does a request
the breaker itself refused: neither counts. Any other outcome (an answer, an HTTP
error, a malformed body) shows the server was reached and starts the count again.
Used only on the engine's loop thread, apart from :attr:`Breaker.reason`, which
other threads may read.
"""

from __future__ import annotations

import asyncio
import contextlib

from pytest_expertbench.records import Completion, TargetError, one_line

__all__ = ["Breaker", "NotAsked", "threshold_for"]


class NotAsked(TargetError):
    """A request the engine did not send, because the target is unreachable."""


def threshold_for(concurrency: int) -> int:
    """Final connection failures in a row that open the breaker: the first round of
    requests in flight, at most 4 (with fewer slots the round is smaller)."""
    return max(1, min(concurrency, 4))


class Breaker:
    """Counts final connection failures in a row and opens after ``threshold`` of them."""

    def __init__(self, target: str, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.target = target
        self.threshold = threshold
        self.reason: str | None = None  # why it opened; None while it is closed
        self._failures = 0
        self._opened = asyncio.Event()  # bound to the loop that first waits on it

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def record(self, outcome: Completion | TargetError) -> None:
        """Count one request's final outcome (after its retries)."""
        if self.is_open or isinstance(outcome, NotAsked):
            return
        if isinstance(outcome, Completion):
            if not outcome.cached:
                self._failures = 0
            return
        if not outcome.connection_failed:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self.threshold:
            self.reason = one_line(
                f"{self.target} is unreachable ({self._failures} requests failed to connect: "
                f"{outcome.message})"
            )
            self._opened.set()

    def refusal(self) -> NotAsked | None:
        """The error a request not yet sent fails with, once the breaker is open."""
        if self.reason is None:
            return None
        return NotAsked(f"not asked: {self.reason}")

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (a retry's backoff), or less if the breaker opens meanwhile;
        True when it is open."""
        if not self.is_open and seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._opened.wait()
        return self.is_open
