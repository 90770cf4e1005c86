"""The request engine: asks the model ahead of pytest's item loop.

pytest runs items one after another; a model answers many requests at once. The
engine bridges the two: one background thread runs one asyncio loop with
``concurrency`` keep-alive HTTP connections, and keeps up to ``concurrency``
requests in flight from a queue that :meth:`Engine.prefetch` fills. Items then call
:meth:`Engine.result`, which usually finds the answer already there.

The queue is a bounded producer/consumer: a task exists only for a request in
flight, never one per example up front, so 20 000 queued requests cost 20 000 small
queue entries and at most ``concurrency`` tasks. Every request is asked at most once
per process; its answer is dropped as soon as :meth:`Engine.result` hands it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_expertbench.breaker import Breaker, NotAsked, threshold_for
from pytest_expertbench.cache import ResponseCache, Stored
from pytest_expertbench.clients import ClientPool, RateLimiter
from pytest_expertbench.records import Completion, Request, TargetError, one_line
from pytest_expertbench.secrets import Scrubber, target_secrets
from pytest_expertbench.targets import Target

Key = tuple[str, str, int]  # benchmark, example id, repeat
Outcome = Completion | TargetError

# The life of one request key.
_QUEUED, _RUNNING, _FINISHED, _RETURNED = "queued", "running", "finished", "returned"


@dataclass(frozen=True)
class EngineSettings:
    concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 4
    requests_per_minute: float | None = None
    # A Retry-After above this fails the attempt at once: a server asking to wait an
    # hour would otherwise hold its request (and the item) for that hour.
    max_retry_after_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True)
class BenchmarkStats:
    """Progress of one benchmark's requests, for the terminal progress line and summary."""

    asked: int = 0
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    elapsed_s: float = 0.0  # first start → last finish
    not_asked: int = 0  # errors because the breaker had opened (counted in errors too)
    stopped: str | None = None  # why the engine stopped asking, once it refused a request


@dataclass
class _Counters:
    asked: int = 0
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    not_asked: int = 0
    first_start: float | None = None
    last_finish: float | None = None

    def snapshot(self, stopped: str | None) -> BenchmarkStats:
        elapsed = 0.0
        if self.first_start is not None and self.last_finish is not None:
            elapsed = max(0.0, self.last_finish - self.first_start)
        return BenchmarkStats(
            self.asked,
            self.done,
            self.errors,
            self.retries,
            self.cached,
            elapsed,
            self.not_asked,
            stopped if self.not_asked else None,
        )


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
class _CacheCounters:
    stale: int = 0
    from_runs: Counter[str] = field(default_factory=Counter)
    fingerprints: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> CacheStats:
        return CacheStats(self.stale, dict(self.from_runs), dict(self.fingerprints))


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


class Engine:
    """Asks ``target`` for answers, concurrently, with retries and an optional cache.

    Timing: ``Completion.latency_ms`` is the time of the successful attempt, from
    sending to the full answer, measured here (a target that is not ``live``, such
    as a replay, keeps the latency it reports). ``Completion.attempts`` counts the
    attempts made. Only one thread should call :meth:`result` for a given request.
    """

    def __init__(
        self,
        target: Target,
        settings: EngineSettings,
        cache: ResponseCache | None = None,
        *,
        identity: Mapping[str, Any] | None = None,
        pinned: bool = False,
        scrubber: Scrubber | None = None,
    ) -> None:
        """``identity`` replaces ``target.identity()`` in the cache key (the pool passes the
        one written in the targets file); ``pinned``: the target names an immutable
        revision, so stored answers of finished runs are served too; ``scrubber``: the
        secrets to mask in every answer and error before it is stored or handed out."""
        if settings.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.target = target
        self.settings = settings
        self.cache = cache
        self._live = bool(getattr(target, "live", True))
        self._identity: Mapping[str, Any] = target.identity() if identity is None else identity
        self._pinned = pinned
        self._scrub = scrubber if scrubber is not None else Scrubber(target_secrets(target))
        self._fingerprints: set[str] = set()  # what the server reported in this process
        self._cache_counters: dict[str, _CacheCounters] = {}
        self._reads_fields = bool(getattr(target, "reads_fields", False))
        self._lock = threading.Condition()
        self._state: dict[Key, str] = {}
        self._queue: deque[Request] = deque()
        self._urgent: deque[Request] = deque()
        self._finished: dict[Key, Outcome] = {}
        self._counters: dict[str, _Counters] = {}
        self._in_flight = 0
        self._peak_in_flight = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients = ClientPool(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._limiter = (
            RateLimiter(settings.requests_per_minute) if settings.requests_per_minute else None
        )
        self._breaker = Breaker(target.name, threshold_for(settings.concurrency))

    # ------------------------------------------------------------------ caller's side

    def prefetch(self, requests: Iterable[Request]) -> None:
        """Queue requests to be asked in this order, ahead of the item loop; returns at once.

        Requests already queued, asked or answered are skipped.
        """
        batch = list(requests)
        with self._lock:
            self._check_open()
            for request in batch:
                if request.key not in self._state:
                    self._state[request.key] = _QUEUED
                    self._queue.append(request)
                    self._count(request).asked += 1
            self._wake()

    def result(self, request: Request, timeout: float | None = None) -> Completion:
        """The answer to ``request``, waiting for it; raises TargetError after the last retry.

        A request not yet started goes to the head of the queue and takes the next
        free slot. A request whose answer was already handed out is asked again
        (through the cache, when it is cacheable). After ``timeout`` seconds without
        the answer, raises TimeoutError; the request goes on, and a later call waits
        for the same answer.
        """
        key = request.key
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_open()
            self._hurry(request)
            while key not in self._finished:
                if self._closed:
                    raise TargetError("the request engine was closed before the answer came")
                self._lock.wait(_seconds_left(deadline))
            outcome = self._finished.pop(key)
            self._state[key] = _RETURNED
        if isinstance(outcome, TargetError):
            raise outcome
        return outcome

    def stats(self) -> Mapping[str, BenchmarkStats]:
        with self._lock:
            stopped = self._breaker.reason
            return {name: c.snapshot(stopped) for name, c in self._counters.items()}

    def cache_stats(self) -> Mapping[str, CacheStats]:
        with self._lock:
            return {name: c.snapshot() for name, c in self._cache_counters.items()}

    @property
    def peak_in_flight(self) -> int:
        """The most requests ever in flight at once (never above the concurrency)."""
        return self._peak_in_flight

    def close(self) -> None:
        """Cancel what is in flight, close the client and stop the thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError, TimeoutError):  # the loop may be gone
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the request engine is closed")

    def _hurry(self, request: Request) -> None:
        """Put ``request`` at the head of the queue; one running or answered is left alone,
        and one whose answer was handed out is asked again."""
        state = self._state.get(request.key)
        if state in (_RUNNING, _FINISHED):
            return
        if state != _QUEUED:
            self._count(request).asked += 1
        self._state[request.key] = _QUEUED
        self._urgent.append(request)
        self._wake()

    def _count(self, request: Request) -> _Counters:
        counters = self._counters.get(request.benchmark)
        if counters is None:
            counters = self._counters[request.benchmark] = _Counters()
        return counters

    def _wake(self) -> None:
        """Start the loop thread on first use, then let it start what it can.

        Called with the lock held, so that only one thread ever starts the loop.
        """
        if self._loop is None:
            self._start_thread()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._pump)

    def _start_thread(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="expertbench-engine", daemon=True)
        self._thread.start()
        ready.wait()

    # ------------------------------------------------------------------ loop's side

    def _pump(self) -> None:
        """Start queued requests while there is a free slot; urgent ones first."""
        assert self._loop is not None
        while True:
            with self._lock:
                if self._closed or self._in_flight >= self.settings.concurrency:
                    return
                request = self._next_request()
                if request is None:
                    return
                self._state[request.key] = _RUNNING
                self._in_flight += 1
                self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
                counters = self._count(request)
                if counters.first_start is None:
                    counters.first_start = time.monotonic()
            task = self._loop.create_task(self._run(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_request(self) -> Request | None:
        for queue in (self._urgent, self._queue):
            while queue:
                request = queue.popleft()
                if self._state.get(request.key) == _QUEUED:
                    return request
        return None

    async def _run(self, request: Request) -> None:
        outcome: Outcome
        try:
            outcome = await self._answer(request)
        except TargetError as error:
            outcome = error
        except Exception as exc:  # a broken cache or target fails this request, not the run
            outcome = TargetError(one_line(f"{type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self._in_flight -= 1
        outcome = self._scrub.outcome(outcome)  # the boundary: no secret gets past here
        self._breaker.record(outcome)
        with self._lock:
            self._finished[request.key] = outcome
            self._state[request.key] = _FINISHED
            counters = self._count(request)
            counters.done += 1
            counters.errors += isinstance(outcome, TargetError)
            counters.not_asked += isinstance(outcome, NotAsked)
            counters.cached += isinstance(outcome, Completion) and outcome.cached
            counters.last_finish = time.monotonic()
            self._lock.notify_all()
        self._pump()

    async def _answer(self, request: Request) -> Completion:
        cache = self.cache if self._live and is_cacheable(request) else None
        key = cache.key(self._identity, self._keyed(request)) if cache is not None else ""
        if cache is not None:
            stored = await asyncio.to_thread(cache.get, key, across_runs=self._pinned)
            if stored is not None and self._servable(request, stored):
                return stored.completion
        completion = self._scrub.completion(await self._ask_with_retries(request))
        self._heard(request, completion)
        if cache is not None and is_storable(completion):
            await asyncio.to_thread(cache.put, key, completion)
        return completion

    def _servable(self, request: Request, stored: Stored) -> bool:
        """False for an answer from a server that reported another fingerprint than the
        live answers of this run did (in this process): the deployment changed."""
        fingerprint = stored.completion.server_fingerprint
        with self._lock:
            counters = self._cache_count(request)
            heard = self._fingerprints
            if fingerprint is not None and heard and fingerprint not in heard:
                counters.stale += 1
                return False
            counters.from_runs[stored.run_id] += 1
            return True

    def _heard(self, request: Request, completion: Completion) -> None:
        fingerprint = completion.server_fingerprint
        if fingerprint is not None:
            with self._lock:
                self._fingerprints.add(fingerprint)
                self._cache_count(request).fingerprints[fingerprint] += 1

    def _cache_count(self, request: Request) -> _CacheCounters:
        counters = self._cache_counters.get(request.benchmark)
        if counters is None:
            counters = self._cache_counters[request.benchmark] = _CacheCounters()
        return counters

    def _keyed(self, request: Request) -> Request:
        """The request as the cache key sees it: example fields count only if the target reads
        them, so that a prompt shared by two benchmarks shares its answer."""
        return request if self._reads_fields else replace(request, fields={})

    async def _ask_with_retries(self, request: Request) -> Completion:
        """The answer after at most ``max_retries`` retries; none once the breaker is open."""
        refusal = self._breaker.refusal()
        if refusal is not None:
            raise refusal
        attempt = 0
        while True:
            attempt += 1
            try:
                completion = await self._ask_once(request)
            except TargetError as error:
                error = self._capped(error)
                if (
                    not error.retryable
                    or attempt > self.settings.max_retries
                    or self._breaker.is_open
                ):
                    raise _final(error, attempt) from None
                with self._lock:
                    self._count(request).retries += 1
                if await self._breaker.sleep(self._backoff(attempt, error.retry_after)):
                    raise _final(error, attempt) from None
            else:
                return replace(completion, attempts=attempt)

    def _capped(self, error: TargetError) -> TargetError:
        """``error``, made final when the server asks to wait longer than the cap."""
        cap = self.settings.max_retry_after_s
        if error.retry_after is None or error.retry_after <= cap:
            return error
        return TargetError(
            f"{error.message}: the server asked to wait {error.retry_after:g} s, "
            f"above the {cap:g} s cap (max_retry_after_s)",
            status=error.status,
        )

    async def _ask_once(self, request: Request) -> Completion:
        if self._limiter is not None:
            await self._limiter.acquire()
        slot, client = self._clients.acquire()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                completion = await self.target.complete(request, client)
        except TimeoutError:
            raise TargetError(
                f"timed out: no answer within {self.settings.timeout_s:g} s", retryable=True
            ) from None
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(one_line(f"{type(exc).__name__}: {exc}")) from None
        finally:
            self._clients.release(slot)
        if not self._live:
            return completion
        return replace(completion, latency_ms=(time.perf_counter() - started) * 1000.0)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; never shorter than the server asked."""
        ceiling = min(
            self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1)
        )
        delay = random.uniform(0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._clients.aclose()


def _seconds_left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: no deadline); TimeoutError once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer yet")
    return left


def _final(error: TargetError, attempts: int) -> TargetError:
    """The last error, saying how many attempts were made when there was more than one."""
    if attempts == 1:
        return error
    return TargetError(
        f"{error.message} (after {attempts} attempts)",
        retryable=error.retryable,
        retry_after=error.retry_after,
        status=error.status,
        connection_failed=error.connection_failed,
    )
