"""Replicas: one model served at several URLs, each request sent to the least busy one.

A target whose ``base_url`` is a list (vLLM, SGLang or TGI on several hosts, or the
URLs of load balancers) asks through a :class:`ReplicaSet`. Each request goes to the
replica with the fewest requests in flight (ties: the one this client last used, so
that its keep-alive connection is reused, then the list's order).

A replica that refuses the connection (:attr:`TargetError.connection_failed`: nothing
listens, the host is gone, the peer reset) is set aside for ``2 s``, doubled each time
it refuses again, at most ``30 s``; then it gets one request at a time until one is
answered. The request that hit the refusal never reached a server, so it is sent to
another replica at once, within the same attempt: a dead replica costs no retry. Only
when every replica refuses does the error reach the engine, whose retries and circuit
breaker (breaker.py) then behave as for one URL: the breaker opens only when every
replica refuses. Any other error (an HTTP status, a timeout, a malformed answer) shows
the replica was reached and goes to the engine as it is.

The replicas serve one model, so the cache key (a target's ``identity()``) holds only
the list's first URL: a list that starts with the URL used before keeps every cached
answer, and replicas added after it change nothing.

Used on the engine's loop thread; :meth:`ReplicaSet.counts` may be read from any thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pytest_expertbench.records import TargetError

__all__ = ["REPLICA_COUNT", "REPLICA_REFUSED", "ReplicaSet", "replica_urls"]

T = TypeVar("T")

# The request counts' keys (per benchmark, summed over xdist workers like the others).
REPLICA_COUNT = "replica:"
REPLICA_REFUSED = "replica_refused:"

FIRST_SET_ASIDE_S = 2.0
MAX_SET_ASIDE_S = 30.0


@dataclass
class _Replica:
    url: str
    index: int
    in_flight: int = 0
    refusals: int = 0  # refused in a row; 0 once it answers
    aside_until: float = 0.0  # set aside until then (monotonic seconds)


class ReplicaSet:
    """The URLs of one model's replicas, with what is in flight on each."""

    def __init__(self, urls: Sequence[str], *, clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("at least one URL")
        self._replicas = [_Replica(url, i) for i, url in enumerate(urls)]
        self._clock = clock
        self._lock = threading.Lock()
        self._last: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._counts: dict[str, dict[str, int]] = {}  # benchmark → key → n

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(r.url for r in self._replicas)

    async def call(
        self, benchmark: str, send: Callable[[str], Awaitable[T]], client: object = None
    ) -> T:
        """``send(url)`` on the least busy replica; on a refused connection, on the next.

        ``client`` (the engine's client for this request) makes ties go to the replica
        it used last. Raises the last refusal once every replica refused, or at once
        the error of a replica that was reached.
        """
        tried: set[int] = set()
        last: TargetError | None = None
        while True:
            replica = self._choose(tried, client)
            if replica is None:
                assert last is not None  # no replica left comes only after a refusal
                raise last
            tried.add(replica.index)
            replica.in_flight += 1
            try:
                answer = await send(replica.url)
            except TargetError as error:
                if not error.connection_failed:
                    self._reached(replica, benchmark, client)
                    raise
                self._refused(replica, benchmark)
                last = error
                continue
            finally:
                replica.in_flight -= 1
            self._reached(replica, benchmark, client)
            return answer

    def counts(self) -> dict[str, dict[str, float]]:
        """Per benchmark: requests each replica answered or failed after reaching it
        (``replica:<url>``) and connections it refused (``replica_refused:<url>``)."""
        with self._lock:
            return {
                benchmark: {key: float(n) for key, n in keys.items()}
                for benchmark, keys in self._counts.items()
            }

    def _choose(self, tried: set[int], client: object) -> _Replica | None:
        """The replica to ask next: the least busy one of those not set aside; with all
        set aside, on the first try the one free soonest (the engine's retries and
        breaker then take over), on a later try none."""
        now = self._clock()
        fresh = [r for r in self._replicas if r.index not in tried]
        ready = [r for r in fresh if self._usable(r, now)]
        if not ready:
            if tried or not fresh:
                return None
            return min(fresh, key=lambda r: r.aside_until)
        last = self._last.get(client) if client is not None else None
        return min(ready, key=lambda r: (r.in_flight, r.index != last, r.index))

    @staticmethod
    def _usable(replica: _Replica, now: float) -> bool:
        if not replica.refusals:
            return True
        # Back from being set aside: one request at a time until one is answered.
        return now >= replica.aside_until and replica.in_flight == 0

    def _refused(self, replica: _Replica, benchmark: str) -> None:
        replica.refusals += 1
        wait = min(MAX_SET_ASIDE_S, FIRST_SET_ASIDE_S * 2 ** (replica.refusals - 1))
        replica.aside_until = self._clock() + wait
        self._count(benchmark, REPLICA_REFUSED + replica.url)

    def _reached(self, replica: _Replica, benchmark: str, client: object) -> None:
        replica.refusals = 0
        replica.aside_until = 0.0
        if client is not None:
            # A client that cannot be weakly referenced gets no preference.
            with contextlib.suppress(TypeError):
                self._last[client] = replica.index
        self._count(benchmark, REPLICA_COUNT + replica.url)

    def _count(self, benchmark: str, key: str) -> None:
        with self._lock:
            keys = self._counts.setdefault(benchmark, {})
            keys[key] = keys.get(key, 0) + 1


def replica_urls(
    value: object,
    error: Callable[[str], Exception],
    default: str | None = None,
    *,
    strip: bool = True,
) -> tuple[str, ...]:
    """``base_url`` (or an ``http`` target's ``url``) as the targets file wrote it: one URL
    or a list of them, trailing slashes dropped unless not ``strip`` (a whole URL is sent
    as written); ``error(message)`` is raised for anything else."""
    if value is None and default is not None:
        value = default
    if isinstance(value, str) and value:
        return (value.rstrip("/") if strip else value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        urls = tuple(v.rstrip("/") if strip else v for v in value)
        if len(set(urls)) < len(urls):
            raise error("the same URL is listed twice")
        return urls
    if value is None:
        raise error("this key is required")
    raise error(f"expected a URL or a non-empty list of URLs, got {value!r}")
