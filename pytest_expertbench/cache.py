"""The response cache: a model answer, once received, is never paid for twice.

One SQLite file shared by every process of a run (xdist workers included): WAL mode
lets them read while one writes, ``busy_timeout`` makes a writer wait its turn
instead of failing, and every answer is committed as soon as it arrives so that a
crash loses nothing already received.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pytest_expertbench.records import Completion, Request, ToolCall

CacheMode = Literal["on", "off", "refresh"]
CACHE_MODES: tuple[CacheMode, ...] = ("on", "off", "refresh")
FILE_NAME = "responses.sqlite3"
_FILE_SUFFIXES = (".sqlite3", ".sqlite", ".db")
_KEY_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    completion TEXT NOT NULL,
    stored_at REAL NOT NULL
)
"""


class CacheError(Exception):
    """The cache file cannot be used; the message names it and says what to do."""


class ResponseCache:
    """Answers keyed by what was asked of whom, in ``<directory>/responses.sqlite3``.

    ``path`` is the cache directory, or the SQLite file itself when it ends in
    ``.sqlite3``, ``.sqlite`` or ``.db``.

    ``mode`` ``"on"`` reads and writes, ``"refresh"`` writes without reading (every
    request is asked again and its new answer replaces the old), ``"off"`` neither
    reads, writes nor creates the file.
    """

    def __init__(self, path: Path, mode: CacheMode = "on") -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        self.mode: CacheMode = mode
        path = Path(path)
        self.file = path if path.suffix in _FILE_SUFFIXES else path / FILE_NAME
        self._lock = threading.Lock()
        self._connection = None if mode == "off" else self._open()

    def key(self, identity: Mapping[str, Any], request: Request) -> str:
        """The same question to the same model gives the same key, whatever the benchmark.

        The benchmark name and example id are left out on purpose, so that two
        benchmarks sharing a prompt share its answer. The example's fields are in
        (the engine empties them for targets that do not read them). ``identity``
        never holds a secret (targets promise it), so neither does the key.
        """
        asked = {
            "v": _KEY_VERSION,
            "identity": identity,
            "prompt": request.prompt,
            "system": request.system,
            "generation": request.generation,
            "tools": list(request.tools),
            "fields": request.fields,
        }
        canonical = json.dumps(
            asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Completion | None:
        if self.mode != "on" or self._connection is None:
            return None
        with self._lock:
            row = self._execute("SELECT completion FROM responses WHERE key = ?", (key,))
            found = row.fetchone()
        if found is None:
            return None
        return _decode(found[0], self.file)

    def put(self, key: str, completion: Completion) -> None:
        if self._connection is None:
            return
        with self._lock:
            self._execute(
                "INSERT OR REPLACE INTO responses (key, completion, stored_at) VALUES (?, ?, ?)",
                (key, _encode(completion), time.time()),
            )

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _open(self) -> sqlite3.Connection:
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so every put is committed on its own.
            connection = sqlite3.connect(
                self.file, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"{self.file}: cannot open the response cache: {exc}") from None
        try:
            connection.execute("PRAGMA busy_timeout = 30000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(_SCHEMA)
            connection.execute("SELECT key, completion FROM responses LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise CacheError(
                f"{self.file}: not a usable response cache ({exc}); "
                "delete the file to start a new cache"
            ) from None
        return connection

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> sqlite3.Cursor:
        assert self._connection is not None
        try:
            return self._connection.execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.file}: the response cache failed: {exc}") from None


def _encode(completion: Completion) -> str:
    return json.dumps(
        {
            "text": completion.text,
            "tool_calls": [[call.name, call.arguments] for call in completion.tool_calls],
            "latency_ms": completion.latency_ms,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "attempts": completion.attempts,
        },
        ensure_ascii=False,
    )


def _decode(raw: str, file: Path) -> Completion:
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
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(
            f"{file}: a stored answer cannot be read ({exc!r}); delete the file to start afresh"
        ) from None
