"""A row without a field a template needs (or null there) errors its example, unasked;
a field no row holds refuses the benchmark. Nothing is guessed: no prompt says "None"."""

from __future__ import annotations

from collections.abc import Iterator
from glob import escape
from typing import Any

import pytest

from tests.helpers import ANSWERS, MINI_YAML, QUESTIONS, Project, replay_rows, write_jsonl
from tests.support.fake_openai import FakeOpenAI
from tests.test_bad_input import run_refused

OUT = "--expert-bench-report-dir=reports/out"
MISSING = "example q1: field 'question' (used by prompt) is missing"
NULL = "example q3: field 'question' (used by prompt) is null"
NULL_ANSWER = "example q4: field 'answer' (used by scorers[0].numeric_match.target) is null"


def bad_rows() -> list[dict[str, Any]]:
    """The six sums: q1 without its question, q3's question null, q4's answer null."""
    rows: list[dict[str, Any]] = [{"id": q, "question": t, "answer": a} for q, t, a in QUESTIONS]
    del rows[1]["question"]
    rows[3]["question"] = None
    rows[4]["answer"] = None
    return rows


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=ANSWERS) as fake:
        yield fake


def kept_files(project: Project) -> dict[str, bytes]:
    """The project's files before a run: a run may add reports and a cache, never change these."""
    return project.snapshot_files()


def assert_kept(project: Project, before: dict[str, bytes]) -> None:
    after = project.snapshot_files()
    assert {name: after.get(name) for name in before} == before


def test_bad_rows_error_their_examples_and_are_never_asked(
    project: Project, server: FakeOpenAI
) -> None:
    write_jsonl(project.bench_dir / "data" / "mini.jsonl", bad_rows())
    target = {"kind": "openai", "base_url": server.base_url, "model": "fake"}
    project.targets({"live": target}, default="live")
    before = kept_files(project)

    result = project.run("--expert-bench=quick", OUT)

    result.assert_outcomes(passed=3, errors=3, failed=1)  # the gate: 3 of 6 scored
    assert result.ret == 1
    result.stdout.fnmatch_lines_random(
        [
            escape(f"benchmarks_suites/mini.yaml::mini[q1]: {MISSING}"),
            escape(f"benchmarks_suites/mini.yaml::mini[q3]: {NULL}"),
            escape(f"benchmarks_suites/mini.yaml::mini[q4]: {NULL_ANSWER}"),
            "INCOMPLETE mini.accuracy: only 3 of 6 examples scored*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    asked = {text: 1 for qid, text, _ in QUESTIONS if qid not in ("q1", "q3", "q4")}
    assert dict(server.counts) == asked  # the bad rows never reached the model
    assert not any("None" in prompt for prompt in server.counts)
    rows = {r["id"]: r for r in project.results() if r.get("type") == "example"}
    assert rows["q1"]["error"] == MISSING
    assert rows["q3"]["error"] == NULL
    assert rows["q4"]["error"] == NULL_ANSWER
    assert rows["q4"]["scores"] == {}
    assert [rows[q]["error"] for q in ("q0", "q2", "q5")] == [None, None, None]
    assert project.metric(project.results(), "mini.accuracy")["meta"]["errors"] == 3
    assert_kept(project, before)


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_bad_row_errors_under_replay_too(project: Project, workers: tuple[str, ...]) -> None:
    # The replay has no answer for the bad rows: asking for one would fail differently.
    rows = bad_rows()
    rows[4]["answer"] = "#### 15"
    write_jsonl(project.bench_dir / "data" / "mini.jsonl", rows)
    project.set_replay(r for r in replay_rows("mini") if r["id"] not in ("q1", "q3"))
    before = kept_files(project)

    result = project.run("--expert-bench=quick", OUT, *workers, subprocess=bool(workers))

    result.assert_outcomes(passed=4, errors=2, failed=1)  # 4 of 6 is under 90 %
    result.stdout.fnmatch_lines_random(
        ["*" + escape(f"[q1]: {MISSING}"), "*" + escape(f"[q3]: {NULL}")]
    )
    assert "no recorded" not in result.stdout.str()
    errors = {r["id"]: r["error"] for r in project.results() if r.get("type") == "example"}
    assert errors == {"q0": None, "q1": MISSING, "q2": None, "q3": NULL, "q4": None, "q5": None}
    assert_kept(project, before)


@pytest.mark.parametrize(
    ("rows", "yaml_text", "expected"),
    [
        (
            [{"id": q, "question": t, "answer": a, "hint": None} for q, t, a in QUESTIONS],
            MINI_YAML.replace('prompt: "{question}"', 'prompt: "{question} ({hint})"'),
            "mini.yaml: prompt: uses {hint}, which is missing or null in every row of the "
            "dataset (6 rows)",
        ),
        (  # heterogeneous keys: some rows hold the key as null, the others lack it
            [
                {"id": q, "question": t, "answer": a, **({"hint": None} if i % 2 else {})}
                for i, (q, t, a) in enumerate(QUESTIONS)
            ],
            MINI_YAML.replace('prompt: "{question}"', 'prompt: "{question} ({hint})"'),
            "mini.yaml: prompt: uses {hint}, which is missing or null in every row",
        ),
        (
            [{"id": q, "question": t} for q, t, _ in QUESTIONS],
            MINI_YAML,
            "mini.yaml: scorers[0].numeric_match.target: uses {answer}, which the dataset "
            "does not have (columns: id, question)",
        ),
        (
            [{"id": q, "question": t, "answer": None} for q, t, _ in QUESTIONS],
            MINI_YAML,
            "mini.yaml: scorers[0].numeric_match.target: uses {answer}, which is missing or "
            "null in every row",
        ),
        (
            [{"id": q, "problem": None, "answer": a} for q, _, a in QUESTIONS],
            MINI_YAML.replace("id: id}", "id: id, fields: {question: problem}}"),
            "mini.yaml: prompt: uses {question} (column 'problem'), which is missing or null",
        ),
    ],
    ids=["null-everywhere", "absent-or-null", "no-such-column", "scorer-field-null", "renamed"],
)
def test_a_field_no_row_holds_refuses_the_benchmark(
    project: Project, rows: list[dict[str, Any]], yaml_text: str, expected: str
) -> None:
    write_jsonl(project.bench_dir / "data" / "mini.jsonl", rows)
    project.write("mini.yaml", yaml_text)
    err = run_refused(project)
    assert expected in err
    assert len(err.strip().splitlines()) == 1
