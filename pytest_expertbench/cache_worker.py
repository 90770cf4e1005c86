"""The response cache as the engines use it during a run: one thread, many answers a commit.

Each SQLite call releases the GIL, and getting it back waits for whichever thread holds
it: pytest's, busy running items. Asked per request from the engines' loops, the calls
queued behind one lock and each paid that wait (about 0.7 ms a call against a bare
0.04 ms, on two cores): a run of 1319 answers at latency 0 spent 0.9 s more with the cache
on than off, and each request held its slot until its answer was stored.

So one thread asks SQLite for the engines: it takes everything queued since its last
turn, stores the new answers in one transaction and looks up the waiting keys in one
query. Storing never makes a request wait; a lookup waits for one turn of the thread,
and only for a key that may be stored: the keys the run could be served are read once,
when the worker starts (in ``resume`` mode, those of unfinished runs: most often none).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

from pytest_expertbench.cache import CacheError, ResponseCache, Stored
from pytest_expertbench.records import Completion

__all__ = ["CacheWorker"]


@dataclass(frozen=True)
class _Lookup:
    key: str
    across_runs: bool
    future: asyncio.Future[Stored | None]


@dataclass(frozen=True)
class _Store:
    key: str
    completion: Completion


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


_Job = _Lookup | _Store | _Flush
_STOP = None


class CacheWorker:
    """The one thread that reads and writes ``cache`` for every engine of a process.

    A failed write cannot fail the request whose answer it stored (that request is
    answered already): the first such error is kept and raised by :meth:`flush`, which
    the run calls before it marks itself finished.
    """

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        # What a lookup may find without asking SQLite, and what this process stores:
        # a key outside them is no stored answer, so most lookups cost no turn at all.
        self._known = cache.servable_keys()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._error: CacheError | None = None
        self._thread = threading.Thread(target=self._work, name="expertbench-cache", daemon=True)
        self._thread.start()

    def store(self, key: str, completion: Completion) -> None:
        """Queue an answer to store; returns at once."""
        if self._known is not None:
            self._known.add(key)
        self._jobs.put(_Store(key, completion))

    async def lookup(self, key: str, *, across_runs: bool = False) -> Stored | None:
        """The stored answer the cache's mode may serve for ``key``, or None.

        Without ``across_runs``, a key neither stored when the worker started nor since by
        this process is None at once. (An answer another xdist worker stores meanwhile
        is not looked for: at worst one request asked twice.)
        """
        if not across_runs and self._known is not None and key not in self._known:
            return None
        future: asyncio.Future[Stored | None] = asyncio.get_running_loop().create_future()
        self._jobs.put(_Lookup(key, across_runs, future))
        return await future

    def flush(self, *, raise_error: bool = True) -> None:
        """Wait until every answer queued so far is stored; raise the first failed write
        (without ``raise_error`` it is kept for the next flush that does)."""
        done = threading.Event()
        self._jobs.put(_Flush(done))
        while not done.wait(0.5):
            if not self._thread.is_alive():
                break
        if raise_error and self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Store what is queued and stop the thread (the cache itself stays open)."""
        self._jobs.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while not self._jobs.empty():
                jobs.append(self._jobs.get_nowait())
            stop = _STOP in jobs
            self._turn([job for job in jobs if job is not None])
            if stop:
                return

    def _turn(self, jobs: list[_Job]) -> None:
        """Store first, then look up, so that a key stored in this turn is found."""
        stores = [(job.key, job.completion) for job in jobs if isinstance(job, _Store)]
        try:
            if stores:
                self.cache.put_many(stores)
        except Exception as exc:  # CacheError, or a bug: neither may stop the thread
            self._error = self._error or _as_cache_error(exc)
        lookups = [job for job in jobs if isinstance(job, _Lookup)]
        for across_runs in (False, True):
            self._answer([job for job in lookups if job.across_runs is across_runs])
        for job in jobs:
            if isinstance(job, _Flush):
                job.done.set()

    def _answer(self, lookups: list[_Lookup]) -> None:
        if not lookups:
            return
        found: dict[str, Stored] | CacheError
        try:
            found = self.cache.get_many(
                list({job.key: None for job in lookups}), across_runs=lookups[0].across_runs
            )
        except Exception as exc:
            found = _as_cache_error(exc)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Lookup]] = {}
        for job in lookups:
            by_loop.setdefault(job.future.get_loop(), []).append(job)
        for loop, jobs in by_loop.items():  # one wake-up per engine loop, not per lookup
            try:
                loop.call_soon_threadsafe(_settle, jobs, found)
            except RuntimeError:  # that engine's loop has closed: nobody waits any more
                continue


def _settle(jobs: list[_Lookup], found: dict[str, Stored] | CacheError) -> None:
    """On the waiting loop: give each lookup its answer (or the cache's error)."""
    for job in jobs:
        if job.future.done():  # cancelled while it waited
            continue
        if isinstance(found, CacheError):
            job.future.set_exception(found)
        else:
            job.future.set_result(found.get(job.key))


def _as_cache_error(exc: Exception) -> CacheError:
    if isinstance(exc, CacheError):
        return exc
    return CacheError(f"the response cache failed: {type(exc).__name__}: {exc}")
