"""Managed servers: real processes on 127.0.0.1, each test stops what it starts."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pytest_expertbench.config import ServerSpec, TargetSpec
from pytest_expertbench.ports import resolve_port
from pytest_expertbench.servers import ManagedServer, ServerError

REPO = Path(__file__).resolve().parent.parent

needs_proc = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find processes")


def target(
    command: list[str],
    *,
    health_url: str | None = None,
    startup_timeout_s: float = 10.0,
    options: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    name: str = "local",
) -> TargetSpec:
    server = ServerSpec(
        command=tuple(command),
        env=env or {},
        health_url=health_url,
        startup_timeout_s=startup_timeout_s,
    )
    return TargetSpec(
        name=name,
        kind="openai",
        options=options or {},
        source=Path("targets.yaml"),
        server=server,
    )


def fake_openai_target(health_url: str | None) -> TargetSpec:
    command = [sys.executable, "-m", "tests.support.fake_openai", "--port", "{port}"]
    return target(
        command,
        health_url=health_url,
        options={"base_url": "http://127.0.0.1:{port}/v1", "model": "m"},
        env={"PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def managed() -> Iterator[Callable[..., ManagedServer]]:
    """Builds ManagedServers and stops every one of them, whatever the test did."""
    made: list[ManagedServer] = []

    def make(
        spec: TargetSpec, log_dir: Path, port: int | None = None, stop_timeout_s: float = 10.0
    ) -> ManagedServer:
        server = ManagedServer(spec, log_dir, port=port, stop_timeout_s=stop_timeout_s)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def unique_marker(what: str) -> str:
    """A command-line word no leftover of an earlier run can share."""
    return f"{what}-{os.getpid()}-{time.monotonic_ns()}"


def live_pids_with(marker: str) -> set[int]:
    """Processes that run (zombies excluded) and have ``marker`` in their command line."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
            found.add(int(entry.name))
    return found


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_resolve_port_substitutes_everywhere() -> None:
    spec = target(
        ["serve", "--port={port}"],
        health_url="http://127.0.0.1:{port}/health",
        env={"PORT": "{port}", "OTHER": "x"},
        options={"base_url": "http://127.0.0.1:{port}/v1", "headers": {"X-Port": "{port}"}, "n": 3},
    )

    resolved, port = resolve_port(spec)

    assert port is not None and 0 < port < 65536
    assert resolved.server is not None
    assert resolved.server.command == ("serve", f"--port={port}")
    assert resolved.server.env == {"PORT": str(port), "OTHER": "x"}
    assert resolved.server.health_url == f"http://127.0.0.1:{port}/health"
    assert resolved.options == {
        "base_url": f"http://127.0.0.1:{port}/v1",
        "headers": {"X-Port": str(port)},
        "n": 3,
    }
    assert resolved.name == spec.name and resolved.server.startup_timeout_s == 10.0


def test_resolve_port_in_an_option_alone() -> None:
    spec = target(["serve"], options={"base_url": "http://127.0.0.1:{port}/v1"})

    resolved, port = resolve_port(spec)

    assert resolved.options["base_url"] == f"http://127.0.0.1:{port}/v1"
    with socket.create_server(("127.0.0.1", port)):  # free when picked
        pass


def test_resolve_port_without_placeholder_or_server_changes_nothing() -> None:
    fixed = target(["serve", "--port", "8000"], options={"base_url": "http://127.0.0.1:8000/v1"})
    assert resolve_port(fixed) == (fixed, None)
    serverless = TargetSpec(
        name="t", kind="openai", options={"base_url": "http://x:{port}"}, source=Path("t.yaml")
    )
    assert resolve_port(serverless) == (serverless, None)


def test_fake_openai_server_starts_answers_and_stops(
    tmp_path: Path, managed: Callable[..., ManagedServer]
) -> None:
    spec, port = resolve_port(fake_openai_target("http://127.0.0.1:{port}/_stats"))
    assert port is not None
    server = managed(spec, tmp_path, port=port)

    running = server.start()

    assert running.port == port
    assert running.log_path == tmp_path / "local.log"
    response = httpx.post(
        f"{spec.options['base_url']}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hello"}]},
        timeout=5,
        trust_env=False,
    )
    assert response.json()["choices"][0]["message"]["content"] == "ANSWER: hello"

    server.stop()

    assert not accepts(port)
    with pytest.raises(ProcessLookupError):
        os.kill(running.pid, 0)
    server.stop()  # a second stop does nothing


def test_without_health_url_the_open_port_means_started(
    tmp_path: Path, managed: Callable[..., ManagedServer]
) -> None:
    spec, port = resolve_port(fake_openai_target(None))
    assert port is not None

    managed(spec, tmp_path, port=port).start()

    assert accepts(port)


def test_command_that_exits_at_once(tmp_path: Path, managed: Callable[..., ManagedServer]) -> None:
    code = "import sys; print('boom'); sys.exit(3)"
    spec = target([sys.executable, "-c", code], health_url="http://127.0.0.1:9/health")
    server = managed(spec, tmp_path)

    with pytest.raises(ServerError) as info:
        server.start()

    message = str(info.value)
    assert "server for target local exited with code 3 before it was healthy" in message
    assert "\n    boom" in message
    assert str(tmp_path / "local.log") in message


@needs_proc
def test_command_never_healthy_is_killed_after_the_timeout(
    tmp_path: Path, managed: Callable[..., ManagedServer]
) -> None:
    closed_port = resolve_port(target(["{port}"]))[1]
    marker = unique_marker("never-healthy")
    spec = target(
        [sys.executable, "-c", "import time; time.sleep(60)", marker],
        health_url=f"http://127.0.0.1:{closed_port}/health",
        startup_timeout_s=1,
    )
    server = managed(spec, tmp_path)
    started = time.monotonic()

    with pytest.raises(ServerError) as info:
        server.start()

    assert time.monotonic() - started < 5
    assert f"not healthy after 1 s at http://127.0.0.1:{closed_port}/health" in str(info.value)
    assert live_pids_with(marker) == set()


@needs_proc
def test_stop_ends_the_children_too(tmp_path: Path, managed: Callable[..., ManagedServer]) -> None:
    marker = unique_marker("child")
    child = f"'{sys.executable}' -c 'import time; time.sleep(60)' {marker}"
    server = managed(target(["sh", "-c", f"{child} & wait"]), tmp_path)

    server.start()
    assert wait_for(lambda: len(live_pids_with(marker)) == 2)  # the shell and its child

    server.stop()

    assert live_pids_with(marker) == set()


@needs_proc
def test_stop_kills_what_ignores_sigterm(
    tmp_path: Path, managed: Callable[..., ManagedServer]
) -> None:
    marker = unique_marker("stubborn")
    child = f"'{sys.executable}' -c 'import time; time.sleep(60)' {marker}"
    # an ignored signal stays ignored in the child, across exec
    command = ["sh", "-c", f"trap '' TERM; {child} & wait; wait"]
    server = managed(target(command), tmp_path, stop_timeout_s=0.5)
    server.start()
    assert wait_for(lambda: len(live_pids_with(marker)) == 2)
    started = time.monotonic()

    server.stop()

    assert live_pids_with(marker) == set()
    assert time.monotonic() - started < 3


def test_missing_executable_is_named(tmp_path: Path, managed: Callable[..., ManagedServer]) -> None:
    server = managed(target(["no-such-server-binary", "--serve"]), tmp_path)

    with pytest.raises(ServerError, match="command 'no-such-server-binary': not found"):
        server.start()

    server.stop()  # safe after a failed start


def test_something_already_on_the_health_url_is_refused(
    tmp_path: Path, managed: Callable[..., ManagedServer]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        spec = target([sys.executable, "-c", "pass"])
        server = managed(spec, tmp_path, port=port)

        with pytest.raises(ServerError, match=f"already answers at 127.0.0.1:{port}"):
            server.start()


@needs_proc
def test_interrupted_start_stops_the_server(
    tmp_path: Path, managed: Callable[..., ManagedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []

    def interrupt(url: str, timeout_s: float) -> str:
        checks.append(url)
        if len(checks) > 1:  # the check before the start passes, the first poll is Ctrl-C
            raise KeyboardInterrupt
        return "refused"

    monkeypatch.setattr("pytest_expertbench.servers._http_problem", interrupt)
    registered: list[object] = []
    unregistered: list[object] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", unregistered.append)
    marker = unique_marker("interrupted")
    command = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    server = managed(target(command, health_url="http://127.0.0.1:9/"), tmp_path)

    with pytest.raises(KeyboardInterrupt):
        server.start()

    assert live_pids_with(marker) == set()
    assert registered == [server.stop] and unregistered == [server.stop]
