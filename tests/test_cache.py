"""The response cache: keys, modes, persistence, corrupt files, several processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from pytest_expertbench.cache import FILE_NAME, CacheError, ResponseCache
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


def test_an_answer_comes_back_marked_cached_after_a_reopen(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = cache.key(IDENTITY, REQUEST)
    assert cache.get(key) is None
    cache.put(key, ANSWER)
    cache.close()
    reopened = ResponseCache(tmp_path)
    found = reopened.get(key)
    reopened.close()
    assert found is not None
    assert found.cached
    assert (found.text, found.tool_calls, found.latency_ms) == ("42", ANSWER.tool_calls, 812.4)
    assert (found.prompt_tokens, found.completion_tokens) == (9, 1)


def test_the_path_may_name_the_file_itself(tmp_path: Path) -> None:
    by_file = ResponseCache(tmp_path / FILE_NAME)
    key = by_file.key(IDENTITY, REQUEST)
    by_file.put(key, ANSWER)
    by_file.close()
    assert ResponseCache(tmp_path).get(key) is not None
    assert ResponseCache(tmp_path / "other.db").file == tmp_path / "other.db"


def test_refresh_writes_without_reading(tmp_path: Path) -> None:
    refresh = ResponseCache(tmp_path, mode="refresh")
    key = refresh.key(IDENTITY, REQUEST)
    refresh.put(key, ANSWER)
    assert refresh.get(key) is None
    refresh.close()
    found = ResponseCache(tmp_path).get(key)
    assert found is not None and found.text == "42"


def test_off_neither_reads_nor_writes_nor_creates_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    off = ResponseCache(directory, mode="off")
    key = off.key(IDENTITY, REQUEST)
    off.put(key, ANSWER)
    assert off.get(key) is None
    off.close()
    assert not directory.exists()


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
    cache = ResponseCache(Path(directory))
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
    cache = ResponseCache(tmp_path)
    texts = {cache.get(f"{w}-{i}").text for w in range(3) for i in range(200)}  # type: ignore[union-attr]
    assert len(texts) == 600
