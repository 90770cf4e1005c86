"""Runs that end badly: pytest killed outright, an xdist controller interrupted alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import LOCAL, Project, assert_stopped, fake_server_block, write_jsonl
from tests.test_plugin_live import use_server

OUT = "--expert-bench-report-dir=reports/out"
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--expert-bench=quick", OUT]
PARTIAL = Path("reports") / "out" / "results.partial.jsonl"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start_and_wait(project: Project, *args: str) -> subprocess.Popen[bytes]:
    """A pytest run in a subprocess, once two items have been reported."""
    command = [*PYTEST, "--expert-bench-cache=off", *args]
    process = subprocess.Popen(
        command, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while _lines(project.root / PARTIAL) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode()
        time.sleep(0.05)
    assert _lines(project.root / PARTIAL) >= 2, "the run never got going"
    return process


def _port(log: Path) -> int:
    return int(next(line for line in log.read_text().splitlines() if line.strip().isdigit()))


def _servers_on(port: int) -> list[int]:
    """The pids of fake servers started with ``--port <port>`` (zombies left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        running = stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")
        if running and b"tests.support.fake_openai" in argv and str(port).encode() in argv:
            pids.append(int(entry.name))
    return pids


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server's process in /proc")
def test_a_managed_server_stops_when_pytest_is_killed_with_sigkill(project: Project) -> None:
    server = fake_server_block("--latency", "0.3", "--capacity", "1")
    use_server(project, LOCAL + "/v1", server=server, concurrency=1)
    process = _start_and_wait(project)
    port = _port(project.report_dir() / "live.log")
    assert _answers(port) and _servers_on(port), "the server runs while pytest does"

    process.kill()  # SIGKILL: no atexit, no cleanup of any kind
    process.communicate(timeout=30)
    deadline = time.monotonic() + 5  # the watchdog looks twice a second
    while (_answers(port) or _servers_on(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _servers_on(port), "the server outlived the pytest that started it"
    assert not _answers(port)


def test_an_interrupted_xdist_controller_exits_at_once_and_reports_what_ran(
    project: Project,
) -> None:
    """SIGINT to the controller alone (``kill -INT``, a CI runner): the workers used to go
    on with their queues until execnet's teardown interrupted them, 7-14 s later."""
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}
        for i in range(400)  # xdist sends each worker 50 at first
    ]
    write_jsonl(project.bench_dir / "data" / "mini.jsonl", rows)
    server = fake_server_block("--latency", "1")  # 50 items: 12 s of work per worker
    use_server(project, LOCAL + "/v1", server=server, concurrency=4)
    process = _start_and_wait(project, "-n", "2")
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    took = time.monotonic() - start
    assert process.returncode == pytest.ExitCode.INTERRUPTED, out.decode()
    assert took < 6, f"took {took:.1f} s to exit after SIGINT"
    report_dir = project.report_dir()
    rows = [json.loads(line) for line in (report_dir / "results.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["type"] == "example"]) >= 2, "what ran is reported"
    assert_stopped(report_dir / "live.log")
    assert "Traceback" not in out.decode()


def test_the_watchdog_stops_the_group_once_its_parent_is_gone(tmp_path: Path) -> None:
    """The watchdog alone: its parent (a shell) exits, and the group it watches stops."""
    from pytest_expertbench import watchdog

    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        script = (
            f"{sys.executable} -I {watchdog.__file__} $$ {sleeper.pid} 1 & "
            "sleep 0.3"  # the shell exits: the watchdog is orphaned
        )
        subprocess.run(["sh", "-c", script], check=True, timeout=30)
        assert sleeper.wait(timeout=5) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            os.killpg(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
