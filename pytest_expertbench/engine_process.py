"""The request engine in a helper process, so that HTTP's CPU cost leaves pytest's core.

An HTTP request costs the engine about 1.4 ms of CPU (httpx, httpcore and asyncio).
In pytest's own process that CPU competes for the GIL with the item loop: against a
server that answers at once, 1319 items took 2.7 times as long as bare pytest. A
helper process runs the same :class:`~pytest_expertbench.engine.Engine` on another
core, and pytest's process only pickles requests and unpickles answers.

Only targets that describe an HTTP endpoint (``helper_process = True``: ``openai``,
``ollama``, ``http``) are asked from a helper; a Python function or a replay stays
in the process that built it. The helper reads commands on its stdin and streams
answers on its stdout as they arrive, each message a length-prefixed pickle, after a
greeting that marks where its messages begin (a site hook may print before it runs).
It exits when its stdin closes, so it never outlives pytest.

    python -m pytest_expertbench.engine_process   # started by EngineProcess, not by hand
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from pytest_expertbench.cache import CacheMode, ResponseCache
from pytest_expertbench.connections import one_line
from pytest_expertbench.engine import (
    BenchmarkStats,
    Engine,
    EngineSettings,
    Key,
    Outcome,
    seconds_left,
)
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.targets import Target

__all__ = ["EngineProcess"]

_HEADER = struct.Struct("!I")
# The helper's first bytes: whatever a site hook printed before it took its stdout comes first.
_GREETING = b"\npytest-expertbench request engine\n"
_QUEUED, _RETURNED = "queued", "returned"
_LOG_LINES = 5


def _write(stream: IO[bytes], message: tuple[Any, ...]) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _read(stream: IO[bytes]) -> tuple[Any, ...] | None:
    """The next message, or None when the other side has closed the pipe."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    message: tuple[Any, ...] = pickle.loads(body)
    return message


def _await_greeting(stream: IO[bytes]) -> bool:
    """Skip to the helper's greeting; False when it stopped before saying it.

    A ``sitecustomize`` or ``.pth`` file may print a banner before the helper runs
    (unbuffered when ``PYTHONUNBUFFERED`` is set, as it often is in CI): those bytes
    are not a message.
    """
    seen = b""
    while seen != _GREETING:
        byte = stream.read(1)
        if not byte:
            return False
        seen = (seen + byte)[-len(_GREETING) :]
    return True


class EngineProcess:
    """An :class:`Engine` in a helper process, with the same methods.

    The helper starts at once, so that its imports overlap pytest's collection. The
    caller's side keeps which requests it has sent and the answers not yet handed
    out; a reader thread files answers as they come. If the helper dies, every
    request still waiting fails with a :class:`TargetError` that quotes its last
    words (its stderr goes to a temporary file for that purpose).
    """

    def __init__(
        self, target: Target, settings: EngineSettings, cache: ResponseCache | None = None
    ) -> None:
        self.target = target
        self._lock = threading.Condition()
        self._state: dict[Key, str] = {}
        self._finished: dict[Key, Outcome] = {}
        self._stats: Mapping[str, BenchmarkStats] = {}
        self._peak_in_flight = 0
        self._stats_asked = self._stats_received = 0
        self._closed = False
        self._gone: str | None = None  # why the helper stopped, once it has
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._process = subprocess.Popen(
            # -P: a module in the working directory (a project's random.py) must not
            # shadow the standard library, as it never does in pytest started as a script
            [sys.executable, "-P", "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=_helper_environment(),
        )
        cache_file = cache.file if cache is not None else None
        cache_mode = cache.mode if cache is not None else "off"
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._send(("start", target, settings, cache_file, cache_mode))
        self._writer = threading.Thread(
            target=self._send_all, name="expertbench-engine-writer", daemon=True
        )
        self._reader = threading.Thread(
            target=self._receive_all, name="expertbench-engine-reader", daemon=True
        )
        self._writer.start()
        self._reader.start()

    # ------------------------------------------------------------------ caller's side

    def prefetch(self, requests: Iterable[Request]) -> None:
        """Queue requests to be asked in this order; requests already sent are skipped."""
        with self._lock:
            self._check_open()
            fresh = [r for r in requests if r.key not in self._state]
            for request in fresh:
                self._state[request.key] = _QUEUED
        if fresh:
            self._send(("prefetch", fresh))

    def result(self, request: Request, timeout: float | None = None) -> Completion:
        """The answer to ``request``, waiting for it; as :meth:`Engine.result`."""
        key = request.key
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_open()
            waiting = key not in self._finished
            again = self._state.get(key) != _QUEUED
            self._state[key] = _QUEUED
        if waiting:
            self._send(("hurry", request, again))
        with self._lock:
            while key not in self._finished:
                self._check_alive()
                self._lock.wait(seconds_left(deadline))
            outcome = self._finished.pop(key)
            self._state[key] = _RETURNED
        if isinstance(outcome, TargetError):
            raise outcome
        return outcome

    def stats(self) -> Mapping[str, BenchmarkStats]:
        """The helper's request counts; the last ones it sent once it has stopped."""
        with self._lock:
            if self._closed or self._gone is not None:
                return dict(self._stats)
            self._stats_asked += 1
            wanted = self._stats_asked
        self._send(("stats",))
        with self._lock:
            while self._stats_received < wanted and self._gone is None:
                self._lock.wait()
            return dict(self._stats)

    @property
    def peak_in_flight(self) -> int:
        self.stats()
        return self._peak_in_flight

    def close(self) -> None:
        """Stop the helper (its engine cancels what is in flight); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._send(("close",))
        self._send(None)  # the writer closes the helper's stdin: it exits even if stuck
        self._reader.join(timeout=30)  # the reader sees the helper's stdout close
        if self._reader.is_alive():
            self._process.kill()
            self._reader.join()
        self._process.wait()
        self._writer.join(timeout=30)
        for stream in (self._process.stdout, self._log):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the request engine is closed")

    def _check_alive(self) -> None:
        """Called with the lock held, while waiting for an answer."""
        if self._closed:
            raise TargetError("the request engine was closed before the answer came")
        if self._gone is not None:
            raise TargetError(self._gone)

    def _send(self, message: tuple[Any, ...] | None) -> None:
        """Queue ``message`` for the writer thread: the caller never waits on the pipe."""
        self._outbox.put(message)

    # ------------------------------------------------------------------ helper threads

    def _send_all(self) -> None:
        """Write queued messages until the sentinel; a dead helper is the reader's news."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while (message := self._outbox.get()) is not None:
                _write(stdin, message)
        except (OSError, ValueError):  # the helper has gone: the reader sees its stdout end
            pass
        except Exception as exc:  # a message that cannot be pickled: nothing more is sent
            with self._lock:
                self._gone = one_line(f"cannot hand the request engine its work: {exc}")
                self._lock.notify_all()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _receive_all(self) -> None:
        """File answers until the helper's stdout ends; then every waiting caller hears why.

        A message that cannot be read ends the helper too: what follows it cannot be
        trusted, and a reader that died silently would leave every caller waiting.
        """
        stdout = self._process.stdout
        assert stdout is not None
        unreadable = None
        try:
            if _await_greeting(stdout):
                while (message := _read(stdout)) is not None:
                    self._file(message)
        except Exception as exc:
            unreadable = one_line(
                "the request engine's helper process sent an unreadable message "
                f"({type(exc).__name__}: {exc})"
            )
            self._process.kill()
        self._process.wait()
        with self._lock:
            self._gone = self._gone or unreadable or self._why_gone()
            self._lock.notify_all()

    def _file(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if message[0] == "done":
                _, key, outcome = message
                self._finished[key] = outcome
            elif message[0] == "stats":
                _, self._stats, self._peak_in_flight = message
                self._stats_received += 1
            self._lock.notify_all()

    def _why_gone(self) -> str:
        code = self._process.returncode
        if self._closed and code == 0:
            return "the request engine was closed before the answer came"
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        last = " | ".join(lines[-_LOG_LINES:]) or "no output"
        return f"the request engine's helper process stopped (exit code {code}): {last}"


def _helper_environment() -> dict[str, str]:
    """This environment, with this package importable even when it is not installed."""
    here = str(Path(__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, here])}


# ---------------------------------------------------------------------- the helper


def serve(inbox: IO[bytes], outbox: IO[bytes]) -> None:
    """Run one engine for the commands on ``inbox`` until ``close`` or end of input."""
    start = _read(inbox)
    if start is None:
        return
    _, target, settings, cache_file, cache_mode = start
    write_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with write_lock, contextlib.suppress(OSError):  # pytest is gone: stdin will end too
            _write(outbox, message)

    def finished(request: Request, outcome: Outcome) -> None:
        send(("done", request.key, outcome))

    cache = _open_cache(cache_file, cache_mode)
    engine = Engine(target, settings, cache, on_finished=finished)
    try:
        while (message := _read(inbox)) is not None and message[0] != "close":
            if message[0] == "prefetch":
                engine.prefetch(message[1])
            elif message[0] == "hurry":
                engine.hurry(message[1], again=message[2])
            elif message[0] == "stats":
                send(("stats", dict(engine.stats()), engine.peak_in_flight))
    finally:
        engine.close()
        if cache is not None:
            cache.close()
    send(("stats", dict(engine.stats()), engine.peak_in_flight))


def _open_cache(file: Path | None, mode: CacheMode) -> ResponseCache | None:
    return ResponseCache(file, mode) if file is not None and mode != "off" else None


def main() -> None:
    # pytest owns Ctrl-C: it closes this helper when it has finished with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt replies
    outbox.write(_GREETING)  # after anything printed before this module ran
    outbox.flush()
    serve(inbox, outbox)


if __name__ == "__main__":
    main()
