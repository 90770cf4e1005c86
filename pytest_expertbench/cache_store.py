"""The response cache's SQLite file: its schema, opened and upgraded in place, and an
answer's stored form. cache.py asks the questions; this module knows the file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.records import Completion, ToolCall

__all__ = ["CacheError", "decode", "encode", "open_connection"]


class CacheError(ExpertBenchError):
    """The cache file cannot be used; the message names it and says what to do."""


# user_version 0 with a bare ``responses`` table (key, completion, stored_at) is the
# schema before run ids; it is upgraded in place, its answers becoming LEGACY_RUN's.
_SCHEMA_VERSION = 2
_RESPONSES = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    completion TEXT NOT NULL,
    stored_at REAL NOT NULL,
    run_id TEXT,
    fingerprint TEXT
)
"""
_NEW_COLUMNS = ("run_id", "fingerprint")
_RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    resumed_by TEXT
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS responses_by_run ON responses (run_id)"


def open_connection(file: Path) -> sqlite3.Connection:
    """The file opened (created or upgraded in place as needed) and checked usable."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; put_many opens its own transactions.
        connection = sqlite3.connect(
            file, timeout=30.0, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise CacheError(f"{file}: cannot open the response cache: {exc}") from None
    try:
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        _migrate(connection, file)
        connection.execute(
            "SELECT key, completion, stored_at, run_id, fingerprint FROM responses LIMIT 1"
        ).fetchall()
        connection.execute("SELECT run_id, finished_at, resumed_by FROM runs LIMIT 1")
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise CacheError(
            f"{file}: not a usable response cache ({exc}); delete the file to start a new cache"
        ) from None
    except CacheError:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection, file: Path) -> None:
    """Create the schema, or upgrade an older one in place, in one transaction that
    holds the write lock (several workers may open an old file at once)."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version == _SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise CacheError(
                f"{file}: written by a newer pytest-expertbench (cache schema "
                f"{version}, this one knows {_SCHEMA_VERSION}); upgrade, or use another "
                "--expert-bench-cache-dir"
            )
        if version < _SCHEMA_VERSION:
            connection.execute(_RESPONSES)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(responses)")}
            for column in _NEW_COLUMNS:
                if column not in columns:
                    connection.execute(f"ALTER TABLE responses ADD COLUMN {column} TEXT")
            connection.execute(_RUNS)
            connection.execute(_INDEX)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise


def encode(completion: Completion) -> str:
    return json.dumps(
        {
            "text": completion.text,
            "tool_calls": [[call.name, call.arguments] for call in completion.tool_calls],
            "latency_ms": completion.latency_ms,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "attempts": completion.attempts,
            **_stream_timing(completion),
        },
        ensure_ascii=False,
    )


def _stream_timing(completion: Completion) -> dict[str, Any]:
    """A streamed answer's timing, kept with it as its latency is (absent otherwise)."""
    if completion.ttft_ms is None:
        return {}
    timing = {"ttft_ms": completion.ttft_ms, "itl_ms": list(completion.itl_ms)}
    return timing | ({"tpot_ms": completion.tpot_ms} if completion.tpot_ms is not None else {})


def decode(raw: str, file: Path) -> Completion:
    try:
        data = json.loads(raw)
        return Completion(
            text=data["text"],
            tool_calls=tuple(ToolCall(name, arguments) for name, arguments in data["tool_calls"]),
            latency_ms=float(data["latency_ms"]),
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            cached=True,
            attempts=int(data["attempts"]),
            ttft_ms=data.get("ttft_ms"),  # streamed answers only
            tpot_ms=data.get("tpot_ms"),
            itl_ms=tuple(data.get("itl_ms", ())),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(
            f"{file}: a stored answer cannot be read ({exc!r}); delete the file to start afresh"
        ) from None
