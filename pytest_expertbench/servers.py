"""Model servers the session starts itself, waits for, and always stops.

A target's ``server:`` block names a command (vLLM, llama.cpp, Ollama, a fake) that
serves the model for one session. The server runs in a process group of its own so
that stopping it also stops whatever it spawned (engine workers, tokenizer pools),
an ``atexit`` hook stops it even when the session dies without cleaning up, and a
watchdog process (:mod:`pytest_expertbench.watchdog`) stops it when pytest is killed
outright (SIGKILL), which runs no cleanup at all.
Its output goes to a log file, copied there through a pipe with every secret of the
session masked (see :mod:`pytest_expertbench.secrets`); when it fails to start, the
error carries the last lines of that log, because that is where the reason is.

POSIX only: process groups and ``killpg`` have no Windows equivalent here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from pytest_expertbench.config import ServerSpec, TargetSpec
from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.ports import PLACEHOLDER
from pytest_expertbench.secrets import Scrubber
from pytest_expertbench.watchdog import group_alive as _group_alive

LOG_TAIL_LINES = 20
STOP_TIMEOUT_S = 10.0
_UP_WITHOUT_CHECK_S = 1.0  # no health URL and no port: alive this long counts as started
_FIRST_DELAY_S = 0.1
_MAX_DELAY_S = 1.0
_LOG_TAIL_BYTES = 64 * 1024
_ALREADY_UP_CHECK_S = 0.5
_LOG_COPY_JOIN_S = 5.0  # a stopped server's last output, still in the pipe

HealthCheck = Callable[[float], str]  # timeout in seconds -> why not healthy ("" when healthy)


class ServerError(ExpertBenchError):
    """A managed server could not be started; the message ends with its log's tail."""


@dataclass(frozen=True)
class RunningServer:
    port: int | None
    pid: int
    log_path: Path


class ManagedServer:
    """One target's server process: ``start`` returns once it is healthy, ``stop`` ends it.

    ``spec`` must already be port-resolved (see :func:`resolve_port`); ``port`` is the
    port that was picked, used to wait for the server when it has no health URL.
    """

    def __init__(
        self,
        spec: TargetSpec,
        log_dir: Path,
        *,
        port: int | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        scrubber: Scrubber | None = None,
    ) -> None:
        """``scrubber``: the secrets masked in the log copy (and so in a failed start's
        message); by default those the target's entry refers to."""
        if spec.server is None:
            raise ValueError(f"target {spec.name!r} has no server to manage")
        self.spec = spec
        self.server: ServerSpec = spec.server
        self.port = port
        self.log_path = log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', spec.name)}.log"
        self.stop_timeout_s = stop_timeout_s
        self.scrubber = scrubber if scrubber is not None else Scrubber.for_targets([spec])
        self._process: subprocess.Popen[bytes] | None = None
        self._log_copy: threading.Thread | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> RunningServer:
        if self._process is not None:
            raise RuntimeError(f"the server for target {self.spec.name!r} is already running")
        check = self._health_check()
        if check is not None and not check(_ALREADY_UP_CHECK_S):
            raise ServerError(
                f"server for target {self.spec.name}: something already answers at "
                f"{self._checked_address()} before it was started; stop that server or "
                f"let the plugin pick a free port with {PLACEHOLDER}"
            )
        self._process = self._spawn()
        atexit.register(self.stop)
        try:
            self._wait_until_healthy(self._process, check)
        except BaseException:  # a failed start or Ctrl-C must not leave the server behind
            self.stop()
            raise
        return RunningServer(port=self.port, pid=self._process.pid, log_path=self.log_path)

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after the grace time.

        Safe to call twice, after a failed start and from ``atexit``. If interrupted,
        the hook stays registered so that the exit of the interpreter finishes the job.
        """
        process = self._process
        if process is None:
            return
        _stop_group(process, self.stop_timeout_s)
        if self._watchdog is not None:  # after the group: a kill meanwhile leaves it the job
            _end(self._watchdog)
            self._watchdog = None
        if self._log_copy is not None:  # the log holds all it wrote once the pipe is drained
            self._log_copy.join(timeout=_LOG_COPY_JOIN_S)
            self._log_copy = None
        self._process = None
        atexit.unregister(self.stop)

    # ------------------------------------------------------------------ starting

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Python servers (vLLM, llama-cpp-python) buffer a piped stdout: unbuffered, a
        # failed start still leaves its last words in the log.
        env = {"PYTHONUNBUFFERED": "1", **os.environ, **self.server.env}
        log = self.log_path.open("wb")
        try:
            process = subprocess.Popen(
                self.server.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            raise ServerError(self._spawn_failure(exc)) from None
        assert process.stdout is not None
        try:
            self._watchdog = _start_watchdog(process.pid, self.stop_timeout_s)
        except OSError as exc:
            _stop_group(process, 0.0)
            log.close()
            raise ServerError(
                f"server for target {self.spec.name}: its watchdog could not start: {exc}"
            ) from None
        self._log_copy = threading.Thread(
            target=_copy_scrubbed,
            args=(process.stdout, log, self.scrubber),
            name=f"expertbench-log-{self.spec.name}",
            daemon=True,
        )
        self._log_copy.start()
        return process

    def _spawn_failure(self, exc: OSError) -> str:
        executable = self.server.command[0]
        why = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        return (
            f"server for target {self.spec.name} could not start: command {executable!r}: "
            f"{why} (set in {self.spec.source}, targets.{self.spec.name}.server.command)"
        )

    def _health_check(self) -> HealthCheck | None:
        """What "healthy" means for this server; None: it stayed up for a second."""
        url, port = self.server.health_url, self.port
        if url is not None:
            return lambda timeout_s: _http_problem(url, timeout_s)
        if port is not None:
            return lambda timeout_s: _tcp_problem(port, timeout_s)
        return None

    def _checked_address(self) -> str:
        return self.server.health_url or f"127.0.0.1:{self.port}"

    def _wait_until_healthy(
        self, process: subprocess.Popen[bytes], check: HealthCheck | None
    ) -> None:
        if check is None:
            self._raise_if_exited(process, _UP_WITHOUT_CHECK_S)
            return
        timeout_s = self.server.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        problem = "not checked"
        for delay in _backoff():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            problem = check(max(0.1, min(2.0, remaining)))
            if not problem:
                return
            self._raise_if_exited(process, min(delay, max(0.0, deadline - time.monotonic())))
        self.stop()  # first, so that the log holds everything it wrote
        raise ServerError(
            self._with_log_tail(
                f"server for target {self.spec.name} not healthy after {timeout_s:g} s at "
                f"{self._checked_address()} (last check: {problem})"
            )
        )

    def _raise_if_exited(self, process: subprocess.Popen[bytes], wait_s: float) -> None:
        """Wait up to ``wait_s`` for the process to exit; an exit is a failed start."""
        try:
            code = process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return
        self.stop()  # its children may still hold the port or the GPU
        raise ServerError(
            self._with_log_tail(
                f"server for target {self.spec.name} {_exit_reason(code)} before it was healthy"
            )
        )

    def _with_log_tail(self, message: str) -> str:
        lines = _tail(self.log_path, LOG_TAIL_LINES)
        if not lines:
            return f"{message}\n  (its log {self.log_path} is empty)"
        shown = "\n".join(f"    {self.scrubber.text(line)}" for line in lines)
        return f"{message}\n  last lines of {self.log_path}:\n{shown}"


# ---------------------------------------------------------------------- health


def _backoff() -> Iterator[float]:
    delay = _FIRST_DELAY_S
    while True:
        yield delay
        delay = min(delay * 2, _MAX_DELAY_S)


def _http_problem(url: str, timeout_s: float) -> str:
    """Why ``url`` is not healthy yet, or ``""`` when it answered 2xx.

    ``trust_env=False``: the server is local, a proxy from the environment must not
    answer in its place.
    """
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "" if response.is_success else f"HTTP {response.status_code}"


def _tcp_problem(port: int, timeout_s: float) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc)


# ---------------------------------------------------------------------- stopping

_WATCHDOG = Path(__file__).with_name("watchdog.py")


def _start_watchdog(group: int, grace_s: float) -> subprocess.Popen[bytes]:
    """The process that stops the group if this one dies without stopping it.

    Its own session: a Ctrl-C sent to the terminal's process group is not for it, and
    the signals sent to the server's group do not reach it.
    """
    command = [sys.executable, "-I", str(_WATCHDOG), str(os.getpid()), str(group), f"{grace_s:g}"]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _end(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_LOG_COPY_JOIN_S)


def _stop_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Stop the server's process group: politely first, for ``timeout_s`` at most."""
    group = process.pid  # start_new_session: the server leads its own group
    deadline = time.monotonic() + timeout_s
    if _signal_group(group, signal.SIGTERM):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
        for delay in _backoff():  # the leader is gone; its children may take longer
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _group_alive(group):
                break
            time.sleep(min(delay, remaining))
    _signal_group(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # a process stuck in the kernel
        process.wait(timeout=timeout_s)


def _signal_group(group: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when the group is already gone."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user: nothing more we may do
        return False
    return True


# ---------------------------------------------------------------------- reporting


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name} (code {code})"


def _copy_scrubbed(source: IO[bytes], log: IO[bytes], scrubber: Scrubber) -> None:
    """Copy a server's output to its log as it comes, every secret masked; closes both."""
    with source, log:
        carry = b""
        while chunk := os.read(source.fileno(), _LOG_TAIL_BYTES):
            data = carry + chunk
            cut = scrubber.ready(data)
            log.write(scrubber.data(data[:cut]))
            log.flush()
            carry = data[cut:]
        log.write(scrubber.data(carry))


def _tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
            data = log.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [line.rstrip() for line in lines if line.strip()][-count:]
