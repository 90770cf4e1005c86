"""The response cache across runs, as users meet it: a redeployed model is asked again,
an interrupted run is resumed (a managed server's new port included), a pinned
revision and ``reuse`` are served, a changed server fingerprint is not, and the
``expertbench cache`` commands show and clear what is stored."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.cache import FILE_NAME, ResponseCache
from pytest_expertbench.cli import main
from pytest_expertbench.config import ConfigError
from pytest_expertbench.ports import resolve_port
from pytest_expertbench.records import Completion
from pytest_expertbench.targets_file import load_targets
from tests.helpers import LOCAL, MINI_YAML, QUESTIONS, Project, fake_server_block
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
RIGHT = {text: f"The answer is {answer.split()[-1]}." for _, text, answer in QUESTIONS}
WRONG = {text: "The answer is 1000." for _, text, _ in QUESTIONS}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=RIGHT, system_fingerprint="fp_a") as fake:
        yield fake


def use_server(project: Project, base_url: str, **extra: Any) -> None:
    target = {"kind": "openai", "base_url": base_url, "model": "fake", **extra}
    project.targets({"live": target}, default="live")


def accuracy(project: Project) -> float:
    return float(project.metric(project.results(), "mini.accuracy")["value"])


def cache_rows(project: Project, sql: str) -> list[tuple[Any, ...]]:
    path = project.root / ".expertbench" / "cache" / FILE_NAME
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as connection:
        return connection.execute(sql).fetchall()


def test_a_model_redeployed_under_the_same_name_is_asked_again(
    project: Project, server: FakeOpenAI
) -> None:
    use_server(project, server.base_url)
    first = project.run("--expert-bench=quick", OUT)
    first.assert_outcomes(passed=6, skipped=1)  # the gate skips: no baseline
    assert accuracy(project) == 1.0 and server.total == 6
    ((first_run,),) = cache_rows(project, "select run_id from runs where finished_at is not null")

    server.answers.update(WRONG)  # redeployed: same URL, same model name, worse answers
    reused = project.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
    reused.assert_outcomes(passed=6, skipped=1)  # the old answers, on explicit request
    assert accuracy(project) == 1.0 and server.total == 6
    reused.stdout.fnmatch_lines([f"requests mini: *6 from the cache (run {first_run})*"])

    again = project.run("--expert-bench=quick", OUT)  # the default: resume
    again.assert_outcomes(passed=6, skipped=1)  # items pass; the metric says what changed
    assert accuracy(project) == 0.0 and server.total == 12
    again.stdout.fnmatch_lines(["requests mini: 6 asked, 6 answered, *0 from the cache, *"])

    project.run("--expert-bench=quick", "--expert-bench-cache=on", OUT)  # on: resume's alias
    assert server.total == 18
    project.run("--expert-bench=quick", "--expert-bench-cache=refresh", OUT)
    assert server.total == 24
    project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
    assert server.total == 30


def test_a_pinned_revision_is_served_across_runs_until_it_changes(
    project: Project, server: FakeOpenAI
) -> None:
    use_server(project, server.base_url, revision="sha256:0f0f")
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    second = project.run("--expert-bench=quick", OUT)
    second.assert_outcomes(passed=6, skipped=1)
    assert server.total == 6
    second.stdout.fnmatch_lines(["requests mini: *6 from the cache (run *)*"])
    use_server(project, server.base_url, revision="sha256:1e1e")
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    assert server.total == 12


def test_an_answer_from_another_server_fingerprint_is_not_served(
    project: Project, server: FakeOpenAI
) -> None:
    use_server(project, server.base_url, concurrency=1)
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    assert {fp for (fp,) in cache_rows(project, "select fingerprint from responses")} == {"fp_a"}
    # A first benchmark that nothing answered yet, so its live answers come first and
    # tell the run what the server is now.
    again = MINI_YAML.replace("name: mini", "name: again").replace(
        'prompt: "{question}"', 'prompt: "Again: {question}"'
    )
    project.write("again.yaml", again)
    server.system_fingerprint = "fp_b"
    result = project.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
    assert server.counts["What is 2 + 3?"] == 2  # asked again: the stored one was fp_a's
    result.stdout.fnmatch_lines(["requests mini: *0 from the cache*6 stored answers not served*"])


def wait_for(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_interrupted_run_of_a_managed_server_is_resumed_on_a_new_port(
    project: Project,
) -> None:
    """The first run is stopped by SIGTERM (a CI cancel) mid-way; the second run's server
    listens on another port, and still gets the first run's answers from the cache."""
    answers = project.root / "answers.json"
    answers.write_text(json.dumps(RIGHT), encoding="utf-8")
    server = fake_server_block("--latency", "1.0", "--capacity", "1", "--answers", str(answers))
    target = {"kind": "openai", "base_url": LOCAL + "/v1", "model": "fake", "server": server}
    project.targets({"managed": {**target, "concurrency": 1}}, default="managed")

    def stored() -> int:
        try:
            return len(cache_rows(project, "select key from responses"))
        except sqlite3.Error:  # the file exists a moment before its tables do
            return 0

    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--expert-bench=quick"]
    process = subprocess.Popen([*command, OUT], cwd=project.root, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: (project.root / ".expertbench" / "cache" / FILE_NAME).exists())
        wait_for(lambda: stored() >= 2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        process.kill()
    kept = stored()
    assert 2 <= kept < 6, "the run must be stopped mid-way"
    assert cache_rows(project, "select finished_at from runs") == [(None,)]
    ((first_run,),) = cache_rows(project, "select run_id from runs")

    second = project.run("--expert-bench=quick", OUT)
    second.assert_outcomes(passed=6, skipped=1)
    second.stdout.fnmatch_lines([f"requests mini: *{kept} from the cache (run {first_run})*"])
    assert stored() == 6  # the same keys whatever the port: {port} stays out of them
    finished = cache_rows(project, "select run_id from runs where finished_at is not null")
    assert len(finished) == 2  # the resumed run is done with, as is the one that resumed it
    project.run("--expert-bench=quick", OUT).stdout.fnmatch_lines(["*0 from the cache*"])


def test_xdist_workers_share_the_run_id_and_the_controller_finishes_it(
    project: Project, server: FakeOpenAI
) -> None:
    use_server(project, server.base_url)
    project.write("twin.yaml", MINI_YAML.replace("name: mini", "name: twin"))
    result = project.run("--expert-bench=quick", "-n", "2", "--dist", "load", OUT, subprocess=True)
    result.assert_outcomes(passed=12, skipped=2)  # the two gates: no baseline
    runs = cache_rows(project, "select run_id, finished_at is not null from runs")
    assert len(runs) == 1 and runs[0][1] == 1


def test_cache_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for run in ("20261201-210405-1234", "20261201-220000-99"):
        cache = ResponseCache(tmp_path, run_id=run)
        for i in range(3 if run.endswith("1234") else 1):
            cache.put(f"{run}/{i}", Completion(text="x"))
        if run.endswith("1234"):
            cache.finish_run()
        cache.close()
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / FILE_NAME} (" in out and "4 answers from 2 runs" in out
    assert any(
        line.split()[:2] == ["20261201-210405-1234", "3"] and "finished" in line
        for line in out.splitlines()
    )
    assert any(line.split()[:2] == ["20261201-220000-99", "1"] for line in out.splitlines())
    assert "unfinished" in out

    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--run", "nope"]) == 2
    assert "no answers of run nope" in capsys.readouterr().err
    assert (
        main(["cache", "clear", "--cache-dir", str(tmp_path), "--run", "20261201-220000-99"]) == 0
    )
    assert "deleted 1 answers of run 20261201-220000-99" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / FILE_NAME)]) == 0
    assert "deleted 3 answers" in capsys.readouterr().out
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    assert "0 answers from 0 runs" in capsys.readouterr().out
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "none")]) == 2
    assert "no response cache at" in capsys.readouterr().err


def test_cache_info_names_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a database at all " * 100)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_expertbench.cli", "cache", "info", "--cache-dir", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert FILE_NAME in done.stderr and "delete the file" in done.stderr


def test_a_resolved_port_keeps_the_written_options_and_revision_is_a_common_key(
    tmp_path: Path,
) -> None:
    target = {"kind": "openai", "base_url": LOCAL + "/v1", "model": "m", "revision": "sha:1"}
    path = tmp_path / "targets.yaml"
    path.write_text(json.dumps({"targets": {"m": {**target, "server": fake_server_block()}}}))
    spec = load_targets(path).targets["m"]
    assert spec.revision == "sha:1" and "revision" not in spec.options
    first, _ = resolve_port(spec, 41001)
    second, _ = resolve_port(spec, 41002)
    assert first.options["base_url"] == "http://127.0.0.1:41001/v1"
    assert first.written_options == second.written_options == spec.options
    path.write_text(json.dumps({"targets": {"m": {**target, "revision": 7}}}))
    with pytest.raises(ConfigError, match="revision"):
        load_targets(path)


BROKEN_CACHE = """
from pytest_expertbench import cache


def broken(self, answers):
    raise cache.CacheError(f"{self.file}: the response cache failed: disk I/O error")


cache.ResponseCache.put_many = broken
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_a_failed_cache_write_fails_the_session_and_is_reported_once(
    project: Project, server: FakeOpenAI, workers: list[str]
) -> None:
    use_server(project, server.base_url)
    project.pytester.makeconftest(BROKEN_CACHE)
    result = project.run("--expert-bench=quick", *workers, OUT, subprocess=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, skipped=1)  # every item was answered and scored
    lines = [line for line in result.stdout.lines if "disk I/O error" in line]
    assert len(lines) == 1, result.stdout.str()[-2000:]
    assert FILE_NAME in lines[0]
