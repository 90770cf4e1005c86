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
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pytest_expertbench.adaptive import limit_for
from pytest_expertbench.breaker import Breaker, NotAsked, threshold_for
from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.cached_answers import CachedAnswers, CacheStats
from pytest_expertbench.clients import ClientPool, RateLimiter
from pytest_expertbench.records import Completion, Request, TargetError, one_line
from pytest_expertbench.request_stats import BenchmarkCounters, BenchmarkStats
from pytest_expertbench.retries import backoff_s, capped_error, final_error
from pytest_expertbench.secrets import Scrubber, target_secrets
from pytest_expertbench.targets import Target

Key = tuple[str, str, int]  # benchmark, example id, repeat
Outcome = Completion | TargetError
# Told, on the engine's thread, of a submitted request's outcome (see Engine.submit).
Listener = Callable[[Request, Outcome], None]

# The life of one request key.
_QUEUED, _RUNNING, _FINISHED, _RETURNED = "queued", "running", "finished", "returned"


@dataclass(frozen=True)
class EngineSettings:
    concurrency: int = 16  # the most requests in flight (with ``adaptive``, the ceiling)
    adaptive: bool = False  # concurrency auto: find the number in flight (adaptive.py)
    timeout_s: float = 120.0
    max_retries: int = 4
    requests_per_minute: float | None = None
    # A Retry-After above this fails the attempt at once: a server asking to wait an
    # hour would otherwise hold its request (and the item) for that hour.
    max_retry_after_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


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
        self._live = bool(getattr(target, "live", True))
        self._cached = CachedAnswers(
            cache,
            target.identity() if identity is None else identity,
            live=self._live,
            pinned=pinned,
            reads_fields=bool(getattr(target, "reads_fields", False)),
        )
        self._scrub = scrubber if scrubber is not None else Scrubber(target_secrets(target))
        self._lock = threading.Condition()
        self._state: dict[Key, str] = {}
        self._queue: deque[Request] = deque()
        self._urgent: deque[Request] = deque()
        self._finished: dict[Key, Outcome] = {}
        self._listeners: dict[Key, Listener] = {}
        self._counters: dict[str, BenchmarkCounters] = {}
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
        self._limit = limit_for(settings.concurrency, settings.adaptive)

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

    def submit(self, requests: Iterable[Request], listener: Listener) -> None:
        """Queue requests like :meth:`prefetch`; each outcome goes to ``listener``, once.

        The outcome is handed over, not kept for :meth:`result`, so whoever submits
        owns it (the example pipeline scores it at once). ``listener`` runs on the
        engine's thread: it must be quick and must not block. An outcome already in
        is handed over at once, on the caller's thread; one already handed out by
        :meth:`result` is asked again. A closed engine tells the listener so.
        """
        batch = list(requests)
        ready: list[tuple[Request, Outcome]] = []
        with self._lock:
            for request in batch:
                key = request.key
                if self._closed:
                    ready.append((request, TargetError("the request engine is closed")))
                elif key in self._finished:
                    ready.append((request, self._finished.pop(key)))
                    self._state[key] = _RETURNED
                else:
                    self._listeners[key] = listener
                    if self._state.get(key) not in (_QUEUED, _RUNNING):
                        self._state[key] = _QUEUED
                        self._queue.append(request)
                        self._count(request).asked += 1
            if not self._closed:
                self._wake()
        for request, outcome in ready:
            listener(request, outcome)

    def hurry(self, request: Request) -> None:
        """Ask ``request`` next, ahead of the queue, unless it is running or answered."""
        with self._lock:
            self._check_open()
            if self._state.get(request.key) == _QUEUED:
                self._urgent.append(request)
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
        return self._cached.stats()

    @property
    def cache(self) -> ResponseCache | None:
        return self._cached.cache

    @property
    def peak_in_flight(self) -> int:
        """The most requests ever in flight at once (never above the concurrency)."""
        return self._peak_in_flight

    def close(self) -> None:
        """Cancel what is in flight, close the client and stop the thread; idempotent.
        The answers it gave are stored in the cache by then (a failed write is reported
        by the cache's owner, at its own flush)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            loop, thread = self._loop, self._thread
            orphans, self._listeners = self._listeners, {}
        closed = TargetError("the request engine was closed before the answer came")
        for key, listener in orphans.items():
            listener(_unsent(key), closed)
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError, TimeoutError):  # the loop may be gone
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        if self._cached.cache is not None:
            self._cached.cache.flush(raise_error=False)

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

    def _count(self, request: Request) -> BenchmarkCounters:
        counters = self._counters.get(request.benchmark)
        if counters is None:
            counters = self._counters[request.benchmark] = BenchmarkCounters()
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
                if self._closed or not self._limit.may_start(self._in_flight):
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
            listener = self._listeners.pop(request.key, None)
            if listener is None:
                self._finished[request.key] = outcome
            self._state[request.key] = _FINISHED if listener is None else _RETURNED
            counters = self._count(request)
            counters.done += 1
            counters.errors += isinstance(outcome, TargetError)
            counters.not_asked += isinstance(outcome, NotAsked)
            counters.cached += isinstance(outcome, Completion) and outcome.cached
            if isinstance(outcome, Completion):
                counters.add_usage(outcome)
            counters.last_finish = time.monotonic()
            counters.concurrency_settled, counters.concurrency_peak = self._limit.figures()
            self._lock.notify_all()
        if listener is not None:
            listener(request, outcome)
        self._pump()

    async def _answer(self, request: Request) -> Completion:
        key = self._cached.key(request)
        if key is not None:
            stored = await self._cached.served(request, key)
            if stored is not None:
                return stored
        completion = self._scrub.completion(await self._ask_with_retries(request))
        self._cached.heard(request, key, completion)
        return completion

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
                error = capped_error(error, self.settings.max_retry_after_s)
                if (
                    not error.retryable
                    or attempt > self.settings.max_retries
                    or self._breaker.is_open
                ):
                    raise final_error(error, attempt) from None
                with self._lock:
                    self._count(request).retries += 1
                delay = backoff_s(
                    attempt,
                    error.retry_after,
                    base_s=self.settings.backoff_base_s,
                    max_s=self.settings.backoff_max_s,
                )
                if await self._breaker.sleep(delay):
                    raise final_error(error, attempt) from None
            else:
                return replace(completion, attempts=attempt)

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
            self._limit.heard(time.perf_counter() - started, sys.exc_info()[1])
        if not self._live:
            return completion
        return replace(completion, latency_ms=(time.perf_counter() - started) * 1000.0)

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._clients.aclose()


def _unsent(key: Key) -> Request:
    """A stand-in for a request the engine closed on: its key is all a listener reads."""
    benchmark, example_id, repeat = key
    return Request(benchmark=benchmark, example_id=example_id, prompt="", repeat=repeat)


def _seconds_left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: no deadline); TimeoutError once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer yet")
    return left
