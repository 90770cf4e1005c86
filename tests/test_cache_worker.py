"""The cache worker: the one thread through which a run's engines read and write."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from pytest_expertbench.cache import CacheError, ResponseCache
from pytest_expertbench.records import Completion, Request

IDENTITY = {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}


def _key(cache: ResponseCache, i: int) -> str:
    return cache.key(IDENTITY, Request("b", f"q{i}", f"question {i}"))


def _stored_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "responses.sqlite3") as other:  # another process's view
        return int(other.execute("select count(*) from responses").fetchone()[0])


def test_answers_stored_from_two_engine_loops_are_found_and_committed(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, run_id="run-1")
    found: dict[int, list[str | None]] = {}

    def engine(first: int) -> None:  # each engine has a loop on a thread of its own
        async def ask() -> None:
            worker = cache.worker()
            keys = [_key(cache, i) for i in range(first, first + 50)]
            before = await asyncio.gather(*(worker.lookup(k) for k in keys))
            for i, key in zip(range(first, first + 50), keys, strict=True):
                worker.store(key, Completion(text=f"answer {i}"))
            after = await asyncio.gather(*(worker.lookup(k) for k in keys))
            assert before == [None] * 50
            found[first] = [s.completion.text if s else None for s in after]

        asyncio.run(ask())

    threads = [threading.Thread(target=engine, args=(first,)) for first in (0, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == {first: [f"answer {i}" for i in range(first, first + 50)] for first in (0, 50)}
    cache.flush()
    assert _stored_rows(tmp_path) == 100
    assert cache.get(_key(cache, 7)) is not None and cache.get(_key(cache, 7)).completion.cached
    cache.close()


def test_close_stores_what_was_queued(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, run_id="run-1")
    for i in range(300):
        cache.worker().store(_key(cache, i), Completion(text=f"answer {i}"))
    cache.close()
    assert _stored_rows(tmp_path) == 300


def test_a_failed_write_is_raised_by_flush_and_finish_run_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ResponseCache(tmp_path, run_id="run-1")

    def broken(answers: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(cache, "put_many", broken)
    cache.worker().store(_key(cache, 1), Completion(text="answer"))
    with pytest.raises(CacheError, match="disk I/O error"):
        cache.finish_run()
    cache.flush()  # told once: the next flush has nothing more to say
    cache.close()


def test_a_failed_lookup_fails_the_request_that_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ResponseCache(tmp_path, "reuse", run_id="run-1")  # any key may be stored

    def broken(keys: object, across_runs: bool = False) -> None:
        raise CacheError(
            f"{cache.file}: the response cache failed: database disk image is malformed"
        )

    monkeypatch.setattr(cache, "get_many", broken)
    with pytest.raises(CacheError, match="malformed"):
        asyncio.run(cache.worker().lookup(_key(cache, 1)))
    cache.close()


def test_only_keys_that_may_be_served_cost_a_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume mode serves this run's answers and unfinished runs': the worker reads their
    keys once, and asks SQLite for nothing else (a finished run's answer is not served)."""
    finished = ResponseCache(tmp_path, run_id="run-finished")
    finished.put(_key(finished, 1), Completion(text="old answer"))
    finished.finish_run()
    finished.close()
    unfinished = ResponseCache(tmp_path, run_id="run-interrupted")
    unfinished.put(_key(unfinished, 2), Completion(text="interrupted answer"))
    unfinished.close()

    cache = ResponseCache(tmp_path, run_id="run-new")
    asked: list[list[str]] = []
    get_many = cache.get_many

    def counted(keys: list[str], across_runs: bool = False) -> dict[str, object]:
        asked.append(keys)
        return get_many(keys, across_runs=across_runs)  # type: ignore[return-value]

    monkeypatch.setattr(cache, "get_many", counted)

    async def look() -> list[str | None]:
        worker = cache.worker()
        found = [await worker.lookup(_key(cache, i)) for i in (1, 2, 3)]
        worker.store(_key(cache, 3), Completion(text="new answer"))
        found.append(await worker.lookup(_key(cache, 3)))
        return [stored.completion.text if stored else None for stored in found]

    assert asyncio.run(look()) == [None, "interrupted answer", None, "new answer"]
    assert asked == [[_key(cache, 2)], [_key(cache, 3)]]  # not keys 1 and 3 before it was stored
    cache.close()
