"""One engine's use of the response cache: which requests it answers, and from where.

Only a deterministic request is answered from the cache, and only an answer with text
or tool calls is stored. A stored answer is not served when the server now reports
another fingerprint than the live answers of this run did (the deployment changed);
each benchmark's counts say how many were refused so and which runs served the rest.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_expertbench.cache import ResponseCache, Stored
from pytest_expertbench.records import Completion, Request


def is_cacheable(request: Request) -> bool:
    """Only a deterministic request may be answered from the cache."""
    return request.generation.get("temperature", 0) == 0 or "seed" in request.generation


def is_storable(completion: Completion) -> bool:
    """Only an answer with text or tool calls is kept in the cache.

    An empty answer (``content: null`` without tool calls, or blank text) is what a
    server mid-restart or out of memory sends too: cached, it would be served again
    on every run after the server is fixed. Errors never get here.
    """
    return bool(completion.tool_calls) or bool(completion.text.strip())


@dataclass(frozen=True)
class CacheStats:
    """Where one benchmark's cached answers came from, and what the server said it is."""

    stale: int = 0  # stored answers not served: the server now reports another fingerprint
    from_runs: Mapping[str, int] = field(default_factory=dict)  # served answers by run id
    fingerprints: Mapping[str, int] = field(default_factory=dict)  # live answers by fingerprint

    def counts(self) -> dict[str, float]:
        """Flat numbers, as the request counts travel (summed over xdist workers):
        ``cache_stale``, ``cached_from:<run id>`` and ``fingerprint:<fingerprint>``."""
        flat = {"cache_stale": float(self.stale)}
        flat.update({f"cached_from:{run}": float(n) for run, n in self.from_runs.items()})
        flat.update({f"fingerprint:{fp}": float(n) for fp, n in self.fingerprints.items()})
        return flat


@dataclass
class CacheCounters:
    """One benchmark's cache provenance as it happens; :meth:`snapshot` freezes it."""

    stale: int = 0
    from_runs: Counter[str] = field(default_factory=Counter)
    fingerprints: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> CacheStats:
        return CacheStats(self.stale, dict(self.from_runs), dict(self.fingerprints))


class CachedAnswers:
    """The cache as one engine asks it: the key of a request, a stored answer to serve,
    a live answer to store, and per benchmark where the served answers came from.

    Safe to call from the engine's loop thread and its callers at once: the counters
    and the fingerprints heard are kept under a lock of their own.
    """

    def __init__(
        self,
        cache: ResponseCache | None,
        identity: Mapping[str, Any],
        *,
        live: bool,
        pinned: bool,
        reads_fields: bool,
    ) -> None:
        self.cache = cache
        self._live = live
        self._identity = identity
        self._pinned = pinned
        self._reads_fields = reads_fields
        self._lock = threading.Lock()
        self._fingerprints: set[str] = set()  # what the server reported in this process
        self._counters: dict[str, CacheCounters] = {}

    def key(self, request: Request) -> str | None:
        """The cache key of ``request``; None when the cache is not asked for it (no cache,
        a target that is not live, a request that is not deterministic)."""
        if self.cache is None or not self._live or not is_cacheable(request):
            return None
        return self.cache.key(self._identity, self._keyed(request))

    async def served(self, request: Request, key: str) -> Completion | None:
        """The stored answer to serve for ``request``, or None: none stored, or stale."""
        assert self.cache is not None
        stored = await self.cache.worker().lookup(key, across_runs=self._pinned)
        if stored is not None and self._servable(request, stored):
            return stored.completion
        return None

    def heard(self, request: Request, key: str | None, completion: Completion) -> None:
        """Note the fingerprint a live answer reports, and store it when it may be."""
        fingerprint = completion.server_fingerprint
        if fingerprint is not None:
            with self._lock:
                self._fingerprints.add(fingerprint)
                self._count(request).fingerprints[fingerprint] += 1
        if key is not None and is_storable(completion):
            assert self.cache is not None
            self.cache.worker().store(key, completion)  # stored without making it wait

    def stats(self) -> Mapping[str, CacheStats]:
        with self._lock:
            return {name: c.snapshot() for name, c in self._counters.items()}

    def _servable(self, request: Request, stored: Stored) -> bool:
        """False for an answer from a server that reported another fingerprint than the
        live answers of this run did (in this process): the deployment changed."""
        fingerprint = stored.completion.server_fingerprint
        with self._lock:
            counters = self._count(request)
            heard = self._fingerprints
            if fingerprint is not None and heard and fingerprint not in heard:
                counters.stale += 1
                return False
            counters.from_runs[stored.run_id] += 1
            return True

    def _count(self, request: Request) -> CacheCounters:
        counters = self._counters.get(request.benchmark)
        if counters is None:
            counters = self._counters[request.benchmark] = CacheCounters()
        return counters

    def _keyed(self, request: Request) -> Request:
        """The request as the cache key sees it: example fields count only if the target reads
        them, so that a prompt shared by two benchmarks shares its answer."""
        return request if self._reads_fields else replace(request, fields={})
