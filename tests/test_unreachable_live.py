"""The plugin against a dead or broken server: the run ends fast and leaves nothing behind."""

from __future__ import annotations

import time

from tests.helpers import Project, short_benchmark, write_jsonl
from tests.support.fake_openai import FakeOpenAI
from tests.test_breaker import closed_port

OUT = "--expert-bench-report-dir=reports/out"
MANY = 1000


def test_a_dead_server_ends_a_run_of_a_thousand_items_in_seconds(project: Project) -> None:
    port = closed_port()
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}
        for i in range(MANY)
    ]
    write_jsonl(project.bench_dir / "data" / "many.jsonl", rows)
    project.write("mini.yaml", short_benchmark("mini").replace("mini.jsonl", "many.jsonl"))
    target = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}
    project.targets({"dead": target}, default="dead")
    before = project.snapshot_files()

    started = time.monotonic()
    result = project.run("--expert-bench=quick", OUT, "--expert-bench-save-baseline")
    elapsed = time.monotonic() - started

    assert elapsed < 30  # generous: about 5 s of it are the first requests' retries
    result.assert_outcomes(errors=MANY, failed=1)  # the gate: nothing scored, incomplete
    assert result.ret == 1
    result.stdout.fnmatch_lines(["INCOMPLETE mini.accuracy: only 0 of 1000 examples scored*"])
    lines = result.stdout.lines
    errors = [line for line in lines if line.startswith("benchmarks_suites/mini.yaml::mini[")]
    assert len(errors) == MANY
    refused = [line for line in errors if ": model request failed: not asked: dead is " in line]
    assert len(refused) >= MANY - 32  # the first requests in flight failed on their own
    assert [line for line in errors if f"127.0.0.1:{port}" not in line] == []
    assert "Traceback" not in result.stdout.str()
    stopped = [line for line in lines if "stopped asking: dead is unreachable" in line]
    assert len(stopped) == 1 and stopped[0].startswith("requests mini: 1000 asked")
    assert not (project.root / "baselines").exists()
    after = project.snapshot_files()
    assert {name for name in after if not name.startswith(("reports/", ".expertbench/"))} == set(
        before
    )


def test_a_null_answer_is_not_cached_and_a_rerun_gets_the_fixed_one(project: Project) -> None:
    with FakeOpenAI() as server:
        server.script(match="2 + 3", faults=["null"])
        target = {"kind": "openai", "base_url": server.base_url, "model": "m"}
        project.targets({"live": target}, default="live")
        project.write("mini.yaml", short_benchmark("mini"))
        project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
        first = {r["id"]: r for r in project.results() if "id" in r}
        second_run = project.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
        second_run.assert_outcomes(passed=6, skipped=1)
        second = {r["id"]: r for r in project.results() if "id" in r}
        assert server.counts["What is 2 + 3?"] == 2  # asked again: the null was not kept
        assert server.counts["What is 10 - 4?"] == 1  # from the cache
    assert first["q0"]["response"] == ""
    assert second["q0"]["response"] == "ANSWER: What is 2 + 3?"
