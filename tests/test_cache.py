"""The response cache: keys, modes, runs, migration, corrupt files, several processes."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import re
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_expertbench.cache import (
    FILE_NAME,
    LEGACY_RUN,
    CacheError,
    ResponseCache,
    new_run_id,
)
from pytest_expertbench.records import Completion, Request, ToolCall

IDENTITY = {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
REQUEST = Request("gsm8k", "42", "What is 6 x 7?", system="Be brief.", generation={"seed": 1})
ANSWER = Completion(
    text="42",
    tool_calls=(ToolCall("add", '{"a": 1}'),),
    latency_ms=812.4,
    prompt_tokens=9,
    completion_tokens=1,
    attempts=2,
)


def test_the_key_ignores_benchmark_and_id_but_not_what_is_asked(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = cache.key(IDENTITY, REQUEST)
    elsewhere = Request("other", "7", REQUEST.prompt, REQUEST.system, REQUEST.generation)
    assert cache.key(IDENTITY, elsewhere) == key
    changes = [
        Request("gsm8k", "42", "What is 6 x 8?", REQUEST.system, REQUEST.generation),
        Request("gsm8k", "42", REQUEST.prompt, None, REQUEST.generation),
        Request("gsm8k", "42", REQUEST.prompt, REQUEST.system, {"seed": 2}),
        Request("gsm8k", "42", REQUEST.prompt, REQUEST.system, REQUEST.generation, ({"t": 1},)),
    ]
    keys = {cache.key(IDENTITY, changed) for changed in changes}
    keys.add(cache.key({**IDENTITY, "model": "other"}, REQUEST))
    assert len(keys) == 5 and key not in keys
    assert len(key) == 64


def test_an_answer_comes_back_marked_cached_after_a_reopen_by_the_same_run(
    tmp_path: Path,
) -> None:
    cache = ResponseCache(tmp_path, run_id="run-1")
    key = cache.key(IDENTITY, REQUEST)
    assert cache.get(key) is None
    cache.put(key, ANSWER)
    cache.close()
    reopened = ResponseCache(tmp_path, run_id="run-1")  # another worker of the same run
    found = reopened.get(key)
    reopened.close()
    assert found is not None and found.run_id == "run-1"
    assert found.completion.cached
    completion = found.completion
    assert (completion.text, completion.tool_calls, completion.latency_ms) == (
        "42",
        ANSWER.tool_calls,
        812.4,
    )
    assert (completion.prompt_tokens, completion.completion_tokens) == (9, 1)


def test_a_finished_run_is_served_only_by_reuse_or_for_a_pinned_revision(tmp_path: Path) -> None:
    first = ResponseCache(tmp_path, run_id="run-1")
    key = first.key(IDENTITY, REQUEST)
    first.put(key, ANSWER)
    first.finish_run()
    first.close()
    resume = ResponseCache(tmp_path, run_id="run-2")
    assert resume.get(key) is None  # the model may have been redeployed since
    pinned = resume.get(key, across_runs=True)
    assert pinned is not None and pinned.run_id == "run-1"
    reuse = ResponseCache(tmp_path, mode="reuse", run_id="run-3")
    found = reuse.get(key)
    assert found is not None and found.run_id == "run-1" and found.completion.text == "42"


def test_an_unfinished_run_is_resumed_once_and_finished_with_its_resumer(tmp_path: Path) -> None:
    crashed = ResponseCache(tmp_path, run_id="run-1")
    key = crashed.key(IDENTITY, REQUEST)
    crashed.put(key, ANSWER)
    crashed.close()  # no finish_run: killed, interrupted or crashed
    resumed = ResponseCache(tmp_path, run_id="run-2")
    found = resumed.get(key)
    assert found is not None and found.run_id == "run-1"
    resumed.finish_run()
    resumed.close()
    later = ResponseCache(tmp_path, run_id="run-3")
    assert later.get(key) is None
    assert [(r.run_id, r.answers, r.finished) for r in later.runs()] == [("run-1", 1, True)]


def test_a_reuse_run_that_serves_an_unfinished_run_finishes_it_too(tmp_path: Path) -> None:
    crashed = ResponseCache(tmp_path, run_id="run-1")
    key = crashed.key(IDENTITY, REQUEST)
    crashed.put(key, ANSWER)
    reuse = ResponseCache(tmp_path, mode="reuse", run_id="run-2")
    assert reuse.get(key) is not None
    reuse.finish_run()
    assert ResponseCache(tmp_path, run_id="run-3").get(key) is None


def test_on_is_an_alias_of_resume(tmp_path: Path) -> None:
    assert ResponseCache(tmp_path, mode="on").mode == "resume"


def test_refresh_writes_without_reading(tmp_path: Path) -> None:
    refresh = ResponseCache(tmp_path, mode="refresh", run_id="run-1")
    key = refresh.key(IDENTITY, REQUEST)
    refresh.put(key, ANSWER)
    assert refresh.get(key) is None
    refresh.close()
    found = ResponseCache(tmp_path, run_id="run-1").get(key)
    assert found is not None and found.completion.text == "42"


def test_off_neither_reads_nor_writes_nor_creates_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    off = ResponseCache(directory, mode="off")
    key = off.key(IDENTITY, REQUEST)
    off.put(key, ANSWER)
    off.finish_run()
    assert off.get(key) is None
    off.close()
    assert not directory.exists()


def test_the_server_fingerprint_is_stored_with_the_answer(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, run_id="run-1")
    key = cache.key(IDENTITY, REQUEST)
    cache.put(key, replace(ANSWER, server_fingerprint="fp_1"))
    found = cache.get(key)
    assert found is not None and found.completion.server_fingerprint == "fp_1"


def test_runs_and_clear(tmp_path: Path) -> None:
    for run in ("run-1", "run-2"):
        cache = ResponseCache(tmp_path, run_id=run)
        for i in range(3 if run == "run-1" else 2):
            cache.put(f"{run}-{i}", ANSWER)
        if run == "run-1":
            cache.finish_run()
        cache.close()
    cache = ResponseCache(tmp_path, mode="reuse")
    runs = cache.runs()
    assert [(r.run_id, r.answers, r.finished) for r in runs] == [
        ("run-1", 3, True),
        ("run-2", 2, False),
    ]
    assert runs[0].first_at <= runs[0].last_at <= runs[1].first_at
    assert cache.clear("run-1") == 3
    assert [r.run_id for r in cache.runs()] == ["run-2"]
    assert cache.clear("nobody") == 0
    assert cache.clear() == 2
    assert cache.runs() == []


def test_run_ids_are_unique_within_one_process() -> None:
    ids = [new_run_id() for _ in range(5)]
    assert len(set(ids)) == 5
    assert re.fullmatch(r"\d{8}-\d{6}\.\d{3}-\d+(-\d+)?", ids[0])


def test_run_ids_stay_unique_when_the_module_is_imported_again() -> None:
    """pytester forgets the modules an in-process run imported, the counter with them."""
    from pytest_expertbench import cache

    first = cache.new_run_id()
    time.sleep(0.002)
    cache._ISSUED.clear()  # what importing the module afresh does
    assert cache.new_run_id() != first


def old_cache_file(path: Path, key: str) -> None:
    """A cache written before run ids: one table of three columns, user_version 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "CREATE TABLE responses "
            "(key TEXT PRIMARY KEY, completion TEXT NOT NULL, stored_at REAL NOT NULL)"
        )
        stored = {
            "text": "old",
            "tool_calls": [],
            "latency_ms": 5.0,
            "prompt_tokens": None,
            "completion_tokens": None,
            "attempts": 1,
        }
        connection.execute(
            "INSERT INTO responses VALUES (?, ?, ?)", (key, json.dumps(stored), 1.0e9)
        )


def test_an_old_cache_file_is_upgraded_in_place(tmp_path: Path) -> None:
    file = tmp_path / FILE_NAME
    key = ResponseCache(tmp_path, mode="off").key(IDENTITY, REQUEST)
    old_cache_file(file, key)
    resume = ResponseCache(tmp_path, run_id="run-1")
    assert resume.get(key) is None  # from some earlier run: not trusted by default
    resume.close()
    reuse = ResponseCache(tmp_path, mode="reuse", run_id="run-2")
    found = reuse.get(key)
    assert found is not None and (found.run_id, found.completion.text) == (LEGACY_RUN, "old")
    assert [(r.run_id, r.answers, r.finished) for r in reuse.runs()] == [(LEGACY_RUN, 1, True)]
    reuse.put("new", ANSWER)
    reuse.close()
    with contextlib.closing(sqlite3.connect(file)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = {row[1] for row in connection.execute("PRAGMA table_info(responses)")}
    assert {"run_id", "fingerprint"} <= columns
    assert ResponseCache(tmp_path, mode="reuse").clear(LEGACY_RUN) == 1


def test_a_file_from_a_newer_version_is_refused_by_name(tmp_path: Path) -> None:
    ResponseCache(tmp_path).close()
    with contextlib.closing(sqlite3.connect(tmp_path / FILE_NAME)) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(CacheError, match="newer pytest-expertbench") as raised:
        ResponseCache(tmp_path)
    assert str(tmp_path / FILE_NAME) in str(raised.value)


def test_a_corrupt_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database, not even close" * 100)
    with pytest.raises(CacheError) as raised:
        ResponseCache(tmp_path)
    assert str(tmp_path / FILE_NAME) in str(raised.value)
    assert "delete the file" in str(raised.value)


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache mode"):
        ResponseCache(tmp_path, mode="sometimes")  # type: ignore[arg-type]


def _write_many(directory: str, worker: int) -> None:
    cache = ResponseCache(Path(directory), run_id="shared")
    for i in range(200):
        cache.put(f"{worker}-{i}", Completion(text=f"{worker}:{i}"))
    cache.close()


def test_several_processes_write_one_cache_at_once(tmp_path: Path) -> None:
    ResponseCache(tmp_path).close()  # the schema exists before the race, as in a real run
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_write_many, args=(str(tmp_path), w)) for w in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    cache = ResponseCache(tmp_path, run_id="shared")
    texts = {cache.get(f"{w}-{i}").completion.text for w in range(3) for i in range(200)}  # type: ignore[union-attr]
    assert len(texts) == 600
