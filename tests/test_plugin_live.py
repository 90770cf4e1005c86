"""The plugin against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    ANSWERS,
    LOCAL,
    QUESTIONS,
    Project,
    assert_stopped,
    fake_server_block,
    replay_rows,
    short_benchmark,
)
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=ANSWERS, latency_s=0.02) as fake:
        yield fake


def use_server(project: Project, base_url: str, **extra: Any) -> None:
    target = {"kind": "openai", "base_url": base_url, "model": "fake", **extra}
    project.targets({"live": target}, default="live")


def test_every_example_is_asked_once_and_a_reuse_rerun_is_served_from_the_cache(
    project: Project, server: FakeOpenAI
) -> None:
    use_server(project, server.base_url)
    first = project.run("--expert-bench=quick", OUT)
    first.assert_outcomes(passed=6, skipped=1)  # the gate skips: no baseline
    assert project.metric(project.results(), "mini.accuracy")["value"] == 1.0
    assert dict(server.counts) == {text: 1 for _, text, _ in QUESTIONS}

    first.stdout.fnmatch_lines(["requests mini: 6 asked, 6 answered, 0 failed, 0 retries, *"])

    second = project.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
    second.assert_outcomes(passed=6, skipped=1)
    assert server.total == 6  # no request: every answer came from the cache
    second.stdout.fnmatch_lines(["requests mini: 6 asked, 6 answered, *6 from the cache (run *)*"])
    quiet = project.run("--expert-bench=quick", "--expert-bench-cache=reuse", "-q", OUT)
    assert "requests mini" not in quiet.stdout.str()

    project.run("--expert-bench=quick", OUT)  # resume: the first run finished, so asked again
    assert server.total == 12
    project.run("--expert-bench=quick", "--expert-bench-cache=refresh", OUT)
    assert server.total == 18
    project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
    assert server.total == 24


def test_retries_recover_and_a_lost_example_errors_only_its_item(
    project: Project, server: FakeOpenAI
) -> None:
    use_server(project, server.base_url, max_retries=2, timeout_s=0.5)
    server.script(match="2 + 3", faults=["500", "429:0"])
    server.script(match="10 - 4", faults=["drop"])
    server.script(match="3 x 4", faults=["500", "500", "500"])
    result = project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
    # 5 of 6 scored is below the 90 % coverage: the gate fails the metric as incomplete
    result.assert_outcomes(passed=5, errors=1, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*mini[[]q2[]]: model request failed: *500*",
            "INCOMPLETE mini.accuracy: only 5 of 6 examples scored*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    accuracy = project.metric(project.results(), "mini.accuracy")
    assert accuracy["value"] == 1.0
    assert accuracy["samples_used"] == 5
    assert server.counts["What is 2 + 3?"] == 3
    assert server.counts["What is 3 x 4?"] == 3  # the first try and two retries
    failed = next(r for r in project.results() if r.get("id") == "q2")
    assert "500" in failed["error"]


def test_an_unreachable_model_errors_every_item_with_one_line(project: Project) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    use_server(project, f"http://127.0.0.1:{port}/v1", max_retries=0)
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(errors=6, failed=1)  # the gate: nothing scored, incomplete
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            f"*mini[[]q0[]]: model request failed: *127.0.0.1:{port}*",
            "INCOMPLETE mini.accuracy: only 0 of 6 examples scored*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


TIMING = ("latency_ms", "tokens_per_s")


def comparable_rows(project: Project, name: str) -> list[dict[str, Any]]:
    """The rows without what a live server's timing changes from run to run."""
    rows = []
    for row in project.results(name):
        row.pop("captured_at", None)
        for score in TIMING:
            row.get("scores", {}).pop(score, None)
        if not str(row.get("metric_id", "")).endswith(TIMING):
            rows.append(row)
    return rows


@pytest.mark.parametrize("dist", ["load", "loadfile", "loadscope", "worksteal", "loadgroup"])
def test_xdist_gives_the_same_numbers_and_asks_once(
    project: Project, server: FakeOpenAI, dist: str
) -> None:
    use_server(project, server.base_url)
    project.write("other.yaml", MINI_TWIN)
    args = ("--expert-bench=quick", "--expert-bench-cache=off")
    serial = project.run(*args, "--expert-bench-report-dir=reports/serial", subprocess=True)
    serial.assert_outcomes(passed=12, skipped=2)  # the two gates: no baseline
    assert set(server.counts.values()) == {2}  # each question once per benchmark
    server.reset()

    spread = project.run(
        *args, "-n", "2", "--dist", dist, "--expert-bench-report-dir=reports/xdist", subprocess=True
    )
    spread.assert_outcomes(passed=12, skipped=2)  # reported once each, by the controller
    assert set(server.counts.values()) == {2}
    assert comparable_rows(project, "serial") == comparable_rows(project, "xdist")
    slow_mode_warned = "use --dist loadfile for full speed" in spread.stdout.str()
    assert slow_mode_warned == (dist == "loadgroup")


def test_xdist_writes_the_same_files_as_a_serial_run(project: Project) -> None:
    """With recorded answers (recorded latency too) every byte but the time stamps agrees."""
    project.write("other.yaml", MINI_TWIN)
    project.set_replay(replay_rows("mini", wrong=["q2"]) + replay_rows("twin", wrong=["q5"]))
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    names = {"serial": (), "xdist": ("-n", "2")}
    for name, extra in names.items():
        result = project.run(
            "--expert-bench=quick", f"--expert-bench-report-dir=reports/{name}", *extra,
            subprocess=True,
        )  # fmt: skip
        result.assert_outcomes(passed=14)  # the two gates pass: compared, nothing changed
    rows = {}
    for name in names:
        rows[name] = project.results(name)
        for row in rows[name]:
            row.pop("captured_at", None)
    assert rows["serial"] == rows["xdist"]
    assert any(r.get("status") == "ok" for r in rows["serial"])  # compared with the baseline
    summaries = [(project.report_dir(n) / "summary.md").read_text() for n in names]
    assert summaries[0] == summaries[1]


MINI_TWIN = short_benchmark("twin")


def test_a_killed_run_resumes_from_the_cache(project: Project) -> None:
    with FakeOpenAI(answers=ANSWERS, latency_s=0.4, capacity=2) as slow:
        use_server(project, slow.base_url, concurrency=2)
        cache = project.root / "cache"
        command = [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--expert-bench=quick",
            f"--expert-bench-cache-dir={cache}", OUT,
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=project.root, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while _cached(cache) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kept = _cached(cache)
        assert 2 <= kept < 6, "the run must be killed mid-way"
        asked_before = slow.total
        slow.reset()

        rerun = project.run("--expert-bench=quick", f"--expert-bench-cache-dir={cache}", OUT)
        rerun.assert_outcomes(passed=6, skipped=1)
        assert slow.total == 6 - kept  # only what was missing
        assert asked_before >= kept


def _cached(cache_dir: Any) -> int:
    path = cache_dir / "responses.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as connection:
            return int(connection.execute("select count(*) from responses").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_summary_is_appended_to_the_github_step_summary(
    project: Project, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server(project, server.base_url)
    step_summary = project.root / "step_summary.md"
    step_summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    project.run("--expert-bench=quick", OUT)
    text = step_summary.read_text()
    assert text.startswith("# earlier step\n")
    assert (project.report_dir() / "summary.md").read_text() in text


def test_the_api_key_never_reaches_a_file(
    project: Project, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("FAKE_KEY", secret)
    use_server(project, server.base_url, api_key_env="FAKE_KEY")
    project.run(
        "--expert-bench=quick",
        "--expert-bench-save-baseline",
        "--expert-bench-record=rec.jsonl",
        OUT,
    ).assert_outcomes(passed=6, skipped=1)
    assert server.received[-1].headers.get("Authorization") == f"Bearer {secret}"
    for path, content in project.snapshot_files().items():
        assert secret.encode() not in content, path
    assert json.loads((project.root / "rec.jsonl").read_text().splitlines()[0])["id"] == "q0"


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_managed_server_is_started_for_the_session_and_stopped_after(
    project: Project, workers: tuple[str, ...]
) -> None:
    use_server(project, LOCAL + "/v1", server=fake_server_block())
    result = project.run("--expert-bench=quick", OUT, *workers, subprocess=True)
    result.assert_outcomes(passed=6, skipped=1)
    log = project.report_dir() / "live.log"
    assert log.exists()
    answers = {r["response"] for r in project.results() if r["type"] == "example"}
    assert len(answers) == 6  # every example was answered by the managed server
    assert_stopped(log)  # at the end of the session


def test_sigterm_stops_the_managed_server_and_reports_what_ran(project: Project) -> None:
    server = fake_server_block("--latency", "0.3", "--capacity", "1")
    use_server(project, LOCAL + "/v1", server=server, concurrency=1)
    report_dir = project.root / "reports" / "out"
    pytest_command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--expert-bench=quick",
        "--expert-bench-cache=off", OUT,
    ]  # fmt: skip
    process = subprocess.Popen(pytest_command, cwd=project.root, stdout=subprocess.PIPE)
    partial = report_dir / "results.partial.jsonl"
    deadline = time.monotonic() + 30
    while _lines(partial) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, out.decode()
    rows = [json.loads(line) for line in (report_dir / "results.jsonl").read_text().splitlines()]
    ran = [r for r in rows if r["type"] == "example"]
    assert 2 <= len(ran) < 6, "interrupted mid-way, and what ran is reported"
    assert_stopped(report_dir / "live.log")


def _lines(path: Any) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_managed_server_that_fails_to_start_stops_the_run_with_its_log(project: Project) -> None:
    server = {"command": [sys.executable, "-c", "import sys; print('no GPU'); sys.exit(3)"]}
    use_server(project, "http://127.0.0.1:{port}/v1", server=server)
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "exited with code 3" in err and "no GPU" in err


def test_an_item_kept_waiting_shows_progress_unless_quiet(project: Project) -> None:
    with FakeOpenAI(answers=ANSWERS, latency_s=0.25, capacity=1) as slow:
        use_server(project, slow.base_url, concurrency=1)
        args = ("--expert-bench=quick", "--expert-bench-cache=off", OUT)
        shown = project.run(*args, "--expert-bench-progress=0.1")
        shown.assert_outcomes(passed=6, skipped=1)
        shown.stdout.fnmatch_lines(
            ["requests mini: */6 done*, 0 failed, 0 retries; q* has waited * s"]
        )
        quiet = project.run(*args, "--expert-bench-progress=0.1", "-q")
        quiet.assert_outcomes(passed=6, skipped=1)
        off = project.run(*args, "--expert-bench-progress=0")
        off.assert_outcomes(passed=6, skipped=1)
    assert "has waited" not in quiet.stdout.str() + off.stdout.str()


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_progress_interval_is_a_usage_error(project: Project, value: str) -> None:
    result = project.run("--expert-bench=quick", f"--expert-bench-progress={value}", OUT)
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*--expert-bench-progress: expected seconds*{value}*"])


def test_the_request_line_counts_failures_apart_from_answers(
    project: Project, server: FakeOpenAI
) -> None:
    """A server that turns two of six away: four answered, two failed (not six answered)."""
    use_server(project, server.base_url, max_retries=0)
    for _, text, _ in QUESTIONS[:2]:
        server.script(match=text, faults=["400"])
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=4, errors=2, failed=1)  # the gate: incomplete
    result.stdout.fnmatch_lines(["requests mini: 6 asked, 4 answered, 2 failed, 0 retries, *"])
