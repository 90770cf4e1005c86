"""Benchmark examples in chunks under --dist load and worksteal (chunks.py)."""

from __future__ import annotations

import pytest

from pytest_expertbench.chunks import chunk_scopes, chunk_size, example_file
from tests.helpers import Project, write_jsonl
from tests.support.fake_openai import FakeOpenAI

BIG = """\
name: big
dataset: {file: data/big.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
scorers: [{exact_match: {target: "ANSWER: {question}"}}]
metrics:
  accuracy: {of: exact_match, direction: higher}
"""


def test_only_example_items_belong_to_a_file_chunk() -> None:
    assert example_file("benchmarks_suites/a.yaml::a[q1]") == "benchmarks_suites/a.yaml"
    assert example_file("benchmarks_suites/a.yml::a[x:y]") == "benchmarks_suites/a.yml"
    assert example_file("benchmarks_suites/a.yaml::a::gate") is None
    assert example_file("tests/test_x.py::test_y[1]") is None
    assert example_file("tests/test_x.py::Class::test_y[1]") is None


def test_chunks_cut_each_files_examples_in_order() -> None:
    nodeids = [f"a.yaml::a[q{i}]" for i in range(5)] + ["a.yaml::a::gate", "t.py::test"]
    nodeids += [f"b.yaml::b[q{i}]" for i in range(3)]
    scopes = chunk_scopes(nodeids, size=2)
    assert [scopes[f"a.yaml::a[q{i}]"] for i in range(5)] == [
        "a.yaml::chunk-0",
        "a.yaml::chunk-0",
        "a.yaml::chunk-1",
        "a.yaml::chunk-1",
        "a.yaml::chunk-2",
    ]
    assert [scopes[f"b.yaml::b[q{i}]"] for i in range(3)] == ["b.yaml::chunk-0"] * 2 + [
        "b.yaml::chunk-1"
    ]
    assert "a.yaml::a::gate" not in scopes and "t.py::test" not in scopes
    assert chunk_size(1) == 8 and chunk_size(16) == 64


@pytest.mark.parametrize("dist", ["load", "worksteal"])
def test_each_worker_asks_its_chunk_ahead_and_every_example_once(
    project: Project, dist: str
) -> None:
    """40 examples, 2 in flight per worker: chunks of 8. Asked one item at a time, the
    server would never see more than 2 requests at once (one per worker)."""
    questions = [f"question {i}" for i in range(40)]
    write_jsonl(
        project.bench_dir / "data" / "big.jsonl",
        [{"id": f"q{i}", "question": q} for i, q in enumerate(questions)],
    )
    project.write("big.yaml", BIG)
    with FakeOpenAI(latency_s=0.05) as server:
        target = {"kind": "openai", "base_url": server.base_url, "model": "m", "concurrency": 2}
        project.targets({"live": target}, default="live")
        result = project.run(
            "--expert-bench=quick",
            "--expert-bench-cache=off",
            "-n",
            "2",
            "--dist",
            dist,
            "--expert-bench-report-dir=reports/out",
            subprocess=True,
        )
        stats = server.stats()
    result.assert_outcomes(passed=46, skipped=2)  # big's 40, mini's 6; two gates
    assert {q: stats["counts"].get(q) for q in questions} == dict.fromkeys(questions, 1)
    assert stats["max_concurrent"] >= 3
    assert project.metric(project.results(), "big.accuracy")["value"] == 1.0
    assert "use --dist loadfile for full speed" not in result.stdout.str()
