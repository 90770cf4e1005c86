"""The response cache: an answer is reused only while it can still be the model's answer.

One SQLite file shared by every process of a run (xdist workers included): WAL mode
lets them read while one writes, ``busy_timeout`` makes a writer wait its turn
instead of failing. During a run, answers are committed by one thread as they arrive,
all those that came during the last commit in the next (cache_worker.py): a crash
loses at most the answers of one commit in progress.

A model can be redeployed under the same name and URL with different weights, so
an answer from a run that finished is not trusted by default (mode ``resume``):
every answer records the run that wrote it, and a run that ends (passed or failed,
but not interrupted or crashed) marks itself finished. Only the current run's
answers and those of runs that never finished (the ones it resumes) are served,
unless the target pins an immutable revision or the user opts into ``reuse``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_expertbench.cache_store import CacheError, decode, encode, open_connection
from pytest_expertbench.records import Completion, Request

if TYPE_CHECKING:
    from pytest_expertbench.cache_worker import CacheWorker

__all__ = [
    "CACHE_MODES",
    "FILE_NAME",
    "LEGACY_RUN",
    "MODE_ALIASES",
    "CacheError",
    "CacheMode",
    "ResponseCache",
    "RunInfo",
    "Stored",
    "cache_file",
    "new_run_id",
]

CacheMode = Literal["resume", "reuse", "refresh", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("resume", "reuse", "refresh", "off")
MODE_ALIASES: Mapping[str, CacheMode] = {"on": "resume"}  # "on" was the mode before 0.2
FILE_NAME = "responses.sqlite3"
LEGACY_RUN = "legacy"  # answers stored before the cache recorded run ids
_FILE_SUFFIXES = (".sqlite3", ".sqlite", ".db")
_KEY_VERSION = 1
_ISSUED: Counter[str] = Counter()
_KEYS_PER_QUERY = 500  # under SQLite's limit of bound parameters in one statement


def new_run_id() -> str:
    """``YYYYMMDD-HHMMSS.mmm-PID`` (UTC, milliseconds), with ``-N`` added for the N-th run of
    one process in one millisecond: runs in one process (pytester's) must never share an
    id, or one would be served the other's answers as its own. The milliseconds matter:
    pytester forgets the modules a run imported, and this counter with them."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
    base = f"{stamp}-{os.getpid()}"
    _ISSUED[base] += 1
    return base if _ISSUED[base] == 1 else f"{base}-{_ISSUED[base]}"


def cache_file(path: Path) -> Path:
    """The SQLite file: ``path`` itself when it ends in .sqlite3/.sqlite/.db, else inside it."""
    path = Path(path)
    return path if path.suffix in _FILE_SUFFIXES else path / FILE_NAME


@dataclass(frozen=True)
class Stored:
    """An answer found in the cache, with the run that wrote it."""

    completion: Completion  # cached=True, server_fingerprint as the server reported it
    run_id: str  # LEGACY_RUN for answers stored before run ids
    stored_at: float


@dataclass(frozen=True)
class RunInfo:
    """One run's answers in the cache, for ``expertbench cache info``."""

    run_id: str
    answers: int
    first_at: float
    last_at: float
    finished: bool


class ResponseCache:
    """Answers keyed by what was asked of whom, in ``<directory>/responses.sqlite3``.

    ``path`` is the cache directory, or the SQLite file itself (see :func:`cache_file`).
    ``run_id`` names the run that writes; every process of one run passes the same.

    Modes: ``resume`` serves the answers of this run and of runs that did not finish,
    ``reuse`` serves any stored answer, ``refresh`` writes without reading (every
    request is asked again and its new answer replaces the old), ``off`` neither
    reads, writes nor creates the file. All but ``off`` store what they receive.
    """

    def __init__(
        self, path: Path, mode: CacheMode | Literal["on"] = "resume", *, run_id: str | None = None
    ) -> None:
        mode = MODE_ALIASES.get(mode, mode)
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        self.mode: CacheMode = mode
        self.run_id = run_id or new_run_id()
        self.file = cache_file(path)
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # starting the worker
        self._run_recorded = False
        self._resumed: set[str] = set()  # unfinished runs this process served answers of
        self._worker: CacheWorker | None = None
        self._connection = None if mode == "off" else open_connection(self.file)

    def worker(self) -> CacheWorker:
        """The one thread through which a run's engines read and write (cache_worker.py)."""
        worker = self._worker
        if worker is not None:  # not under the lock, which a commit in progress holds
            return worker
        from pytest_expertbench.cache_worker import CacheWorker

        with self._start_lock:
            if self._worker is None:
                self._worker = CacheWorker(self)
            return self._worker

    def flush(self, *, raise_error: bool = True) -> None:
        """Wait until every answer the worker was given is stored; raise a failed write
        (without ``raise_error`` it waits for the flush that reports it)."""
        if self._worker is not None:
            self._worker.flush(raise_error=raise_error)

    def key(self, identity: Mapping[str, Any], request: Request) -> str:
        """The same question to the same model gives the same key, whatever the benchmark.

        The benchmark name and example id are left out on purpose, so that two
        benchmarks sharing a prompt share its answer. The example's fields are in
        (the engine empties them for targets that do not read them). A repeat after
        the first (``repeats`` > 1) is in too, so that each repeat keeps its own answer
        even from a target that ignores the seed; the first repeat and every request
        of a benchmark asked once keep the keys they always had. ``identity`` never
        holds a secret (targets promise it), so neither does the key.
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
        if request.repeat:
            asked["repeat"] = request.repeat
        canonical = json.dumps(
            asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def get(self, key: str, *, across_runs: bool = False) -> Stored | None:
        """The stored answer this mode may serve; ``across_runs`` (a target pinned to an
        immutable revision) serves finished runs' answers in ``resume`` mode too."""
        return self.get_many([key], across_runs=across_runs).get(key)

    def get_many(self, keys: list[str], *, across_runs: bool = False) -> dict[str, Stored]:
        """:meth:`get` for many keys in one query: the stored answers this mode may serve."""
        if self.mode not in ("resume", "reuse") or self._connection is None or not keys:
            return {}
        found: dict[str, Stored] = {}
        with self._lock:
            for start in range(0, len(keys), _KEYS_PER_QUERY):
                chunk = keys[start : start + _KEYS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                rows = self._execute(
                    "SELECT r.key, r.completion, r.run_id, r.fingerprint, r.stored_at, "
                    "u.run_id, u.finished_at FROM responses r "
                    f"LEFT JOIN runs u ON u.run_id = r.run_id WHERE r.key IN ({marks})",
                    tuple(chunk),
                ).fetchall()
                for key, *row in rows:
                    stored = self._stored(row, across_runs)
                    if stored is not None:
                        found[key] = stored
        return found

    def _stored(self, row: list[Any], across_runs: bool) -> Stored | None:
        """One row of :meth:`get_many`'s query, if this mode serves it; with the lock held.

        An answer without a run (legacy) or whose run is unknown counts as finished. An
        unfinished run's answers are taken over by this run, whatever the mode.
        """
        raw, run, fingerprint, stored_at, known, finished_at = row
        unfinished = run is not None and known is not None and finished_at is None
        ours = run == self.run_id
        if self.mode == "resume" and not across_runs and not ours and not unfinished:
            return None
        if unfinished and not ours:
            self._mark_resumed(run)
        completion = replace(decode(raw, self.file), server_fingerprint=fingerprint)
        return Stored(completion, run or LEGACY_RUN, float(stored_at))

    def servable_keys(self) -> set[str] | None:
        """The keys :meth:`get` may serve without ``across_runs``, as the file holds them now,
        or None where that is any key (``reuse``): in ``resume`` mode, those of this run
        and of the unfinished runs it would take over, which is none on most runs."""
        if self.mode == "reuse":
            return None
        if self.mode != "resume" or self._connection is None:
            return set()
        with self._lock:
            rows = self._execute(
                "SELECT r.key FROM responses r JOIN runs u ON u.run_id = r.run_id "
                "WHERE r.run_id = ? OR u.finished_at IS NULL",
                (self.run_id,),
            ).fetchall()
        return {key for (key,) in rows}

    def put(self, key: str, completion: Completion) -> None:
        self.put_many([(key, completion)])

    def put_many(self, answers: list[tuple[str, Completion]]) -> None:
        """Store answers in one transaction (one commit for many answers: see cache_worker)."""
        if self._connection is None or not answers:
            return
        with self._lock:
            now = time.time()
            self._execute("BEGIN IMMEDIATE", ())
            try:
                if not self._run_recorded:
                    self._execute(
                        "INSERT OR IGNORE INTO runs (run_id, started_at) VALUES (?, ?)",
                        (self.run_id, now),
                    )
                for key, completion in answers:
                    self._execute(
                        "INSERT OR REPLACE INTO responses "
                        "(key, completion, stored_at, run_id, fingerprint) VALUES (?, ?, ?, ?, ?)",
                        (key, encode(completion), now, self.run_id, completion.server_fingerprint),
                    )
                self._execute("COMMIT", ())
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._connection.execute("ROLLBACK")
                raise
            self._run_recorded = True

    def finish_run(self) -> None:
        """Mark this run finished, with the unfinished runs it resumed: from now on their
        answers are served only by ``reuse`` (or for a pinned revision)."""
        if self._connection is None:
            return
        self.flush()
        with self._lock:
            self._execute(
                "UPDATE runs SET finished_at = ? "
                "WHERE (run_id = ? OR resumed_by = ?) AND finished_at IS NULL",
                (time.time(), self.run_id, self.run_id),
            )

    def runs(self) -> list[RunInfo]:
        """Every run with answers in the cache, oldest first."""
        if self._connection is None:
            return []
        with self._lock:
            rows = self._execute(
                "SELECT r.run_id, COUNT(*), MIN(r.stored_at), MAX(r.stored_at), "
                "MAX(u.finished_at IS NOT NULL OR u.run_id IS NULL) FROM responses r "
                "LEFT JOIN runs u ON u.run_id = r.run_id GROUP BY r.run_id "
                "ORDER BY MIN(r.stored_at)",
                (),
            ).fetchall()
        return [
            RunInfo(run or LEGACY_RUN, count, first, last, bool(finished))
            for run, count, first, last, finished in rows
        ]

    def clear(self, run_id: str | None = None) -> int:
        """Delete every answer, or those of one run (LEGACY_RUN: those without a run);
        returns how many were deleted."""
        if self._connection is None:
            return 0
        parameters: tuple[str, ...] = ()
        if run_id is None:
            where = ""
        elif run_id == LEGACY_RUN:
            where = " WHERE run_id IS NULL"
        else:
            where, parameters = " WHERE run_id = ?", (run_id,)
        with self._lock:
            deleted = self._execute(f"DELETE FROM responses{where}", parameters).rowcount
            self._execute(f"DELETE FROM runs{where}", parameters)
            self._execute("VACUUM", ())
        return int(deleted)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()  # stores what it was given first
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _mark_resumed(self, run: str) -> None:
        """Record (once per process and run) that this run resumes ``run``, so that
        finishing this run finishes that one too. Called with the lock held."""
        if run in self._resumed:
            return
        self._resumed.add(run)
        self._execute("UPDATE runs SET resumed_by = ? WHERE run_id = ?", (self.run_id, run))

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> sqlite3.Cursor:
        assert self._connection is not None
        try:
            return self._connection.execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.file}: the response cache failed: {exc}") from None
