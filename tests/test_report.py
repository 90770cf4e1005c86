from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.baseline import BaselineError, DatasetInfo, Snapshot
from pytest_expertbench.gate import compare
from pytest_expertbench.records import Direction, ExampleResult, MetricResult, Threshold, ToolCall
from pytest_expertbench.report import (
    BenchmarkResult,
    JsonlWriter,
    example_row,
    metric_rows,
    read_results,
    run_row,
)
from pytest_expertbench.summary import (
    format_number,
    format_value,
    markdown,
    terminal_lines,
    verdict_line,
)

FIVE_PERCENT = Threshold(rel=0.05)


def metric(
    name: str, value: float, direction: Direction = "higher", unit: str = "ratio"
) -> MetricResult:
    of = "latency_ms" if unit == "ms" else "numeric_match"
    ci = (value * 0.9, value * 1.1)
    return MetricResult(f"gsm8k.{name}", value, ci, 40, direction, unit, {"of": of, "agg": "mean"})


def snapshot(
    metrics: dict[str, MetricResult],
    examples: dict[str, dict[str, float]] | None = None,
    *,
    benchmark: str = "gsm8k",
    thresholds: dict[str, Threshold] | None = None,
) -> Snapshot:
    return Snapshot(
        benchmark=benchmark,
        suite="standard",
        target="qwen3-8b",
        captured_at="2026-11-23T10:00:00Z",
        git_sha=None,
        plugin_version="0.1.0",
        dataset=DatasetInfo("file:arith.jsonl", "sha256:" + "c0ffee00" * 8, 40),
        environment={"python": "3.11.7"},
        metrics=metrics,
        examples=examples if examples is not None else {},
        thresholds=thresholds or {},
    )


def example(index: int, score: float, error: str | None = None) -> ExampleResult:
    return ExampleResult(
        benchmark="gsm8k",
        id=str(index),
        index=index,
        digest=f"d{index}",
        target="qwen3-8b",
        scores={"numeric_match": score, "latency_ms": 100.0 + index},
        response=f"#### {index}",
        error=error,
    )


def regressed_result() -> BenchmarkResult:
    """accuracy 0.58 → 0.512 with 25 examples flipped; latency better; one metric gone."""
    old_examples = {str(i): {"numeric_match": 1.0} for i in range(40)}
    new_examples = {str(i): {"numeric_match": 0.0 if i < 25 else 1.0} for i in range(40)}
    old = snapshot(
        {
            "accuracy": metric("accuracy", 0.58),
            "latency_p95_ms": metric("latency_p95_ms", 812.4, "lower", "ms"),
            "gone": metric("gone", 1.0),
        },
        old_examples,
    )
    new = snapshot(
        {
            "accuracy": metric("accuracy", 0.512),
            "latency_p95_ms": metric("latency_p95_ms", 700.0, "lower", "ms"),
        },
        new_examples,
        thresholds={"latency_p95_ms": Threshold(rel=0.1)},
    )
    examples = (example(0, 0.0), example(1, 0.0, error="timeout after 4 attempts"))
    return BenchmarkResult(new, compare(old, new, FIVE_PERCENT), examples)


# --------------------------------------------------------------------------- JSONL


def test_the_writer_flushes_every_row_and_writes_null_for_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.jsonl"
    writer = JsonlWriter(path)
    writer.write({"type": "x", "value": math.nan, "ci": (1.0, math.inf), "p": Path("a")})
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "type": "x",
        "value": None,
        "ci": [1.0, None],
        "p": "a",
    }
    writer.write({"type": "y"})
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    writer.close()


def test_the_writer_appends_to_what_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"type": "old"}\n', encoding="utf-8")
    with JsonlWriter(path) as writer:
        writer.write({"type": "new", "text": "é"})
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"type": "old"}, {"type": "new", "text": "é"}]


def test_example_row_has_the_designed_shape() -> None:
    result = ExampleResult(
        "gsm8k",
        "42",
        7,
        "sha256:1",
        "qwen3-8b",
        {"numeric_match": 1.0, "latency_ms": math.nan},
        "…",
        tool_calls=(ToolCall("add", '{"a": 1}'),),
    )
    assert example_row(result) == {
        "type": "example",
        "benchmark": "gsm8k",
        "id": "42",
        "index": 7,
        "digest": "sha256:1",
        "target": "qwen3-8b",
        "scores": {"numeric_match": 1.0, "latency_ms": None},
        "response": "…",
        "error": None,
        "tool_calls": [{"name": "add", "arguments": '{"a": 1}'}],
    }


def test_metric_rows_cover_every_comparison() -> None:
    rows = {row["metric_id"]: row for row in metric_rows(regressed_result(), FIVE_PERCENT)}
    assert set(rows) == {"gsm8k.accuracy", "gsm8k.latency_p95_ms", "gsm8k.gone"}
    accuracy = rows["gsm8k.accuracy"]
    assert accuracy["type"] == "metric"
    assert accuracy["value"] == 0.512 and accuracy["baseline"] == 0.58
    assert accuracy["ci"] == [pytest.approx(0.4608), pytest.approx(0.5632)]
    assert accuracy["delta_rel"] == pytest.approx(-0.068 / 0.58)
    assert accuracy["status"] == "regression"
    assert (accuracy["threshold"], accuracy["threshold_source"]) == (0.05, "default")
    assert accuracy["samples_used"] == 40 and accuracy["direction"] == "higher"
    assert accuracy["suite"] == "standard" and accuracy["n"] == 40
    assert accuracy["fingerprint"].startswith("sha256:c0ffee00")
    latency = rows["gsm8k.latency_p95_ms"]
    assert (latency["threshold"], latency["threshold_source"]) == (0.1, "metric")
    assert latency["status"] == "improvement" and latency["unit"] == "ms"
    gone = rows["gsm8k.gone"]
    assert gone["status"] == "missing" and gone["value"] is None and gone["baseline"] == 1.0


def test_an_absolute_threshold_is_tagged_in_the_row() -> None:
    current = snapshot({"errors": metric("errors", 0.0, "lower")})
    result = BenchmarkResult(current, compare(None, current, Threshold(abs=0.02)), ())
    (row,) = metric_rows(result, Threshold(abs=0.02))
    assert row["threshold"] == {"abs": 0.02} and row["status"] == "new"


def test_run_row_counts_examples_and_errors() -> None:
    result = regressed_result()
    row = run_row(result)
    assert row["type"] == "benchmark"
    assert (row["examples"], row["errors"], row["regressions"]) == (2, 1, 1)
    assert row["dataset"] == {
        "source": "file:arith.jsonl",
        "fingerprint": "sha256:" + "c0ffee00" * 8,
        "n": 40,
    }
    assert row["comparable"] is True and row["note"] is None


# --------------------------------------------------------------------------- reading rows back


def run_rows(result: BenchmarkResult) -> list[dict[str, Any]]:
    """The rows of one benchmark in the plugin's order: run row, examples, metrics."""
    examples = [example_row(item) for item in result.examples]
    return [run_row(result), *examples, *metric_rows(result, FIVE_PERCENT)]


def write_run(path: Path, result: BenchmarkResult) -> None:
    with JsonlWriter(path) as writer:
        for row in run_rows(result):
            writer.write(row)


def test_read_results_rebuilds_the_snapshot(tmp_path: Path) -> None:
    examples = tuple(example(i, float(i % 2)) for i in range(6))
    current = snapshot(
        {
            "accuracy": metric("accuracy", 0.5),
            "latency_p95_ms": metric("latency_p95_ms", 105.0, "lower", "ms"),
        },
        {item.id: dict(item.scores) for item in examples},
        thresholds={"latency_p95_ms": Threshold(abs=20.0)},
    )
    path = tmp_path / "results.jsonl"
    write_run(path, BenchmarkResult(current, compare(None, current, FIVE_PERCENT), examples))
    (read,) = read_results(path)
    assert read == current


def test_read_results_keeps_a_nan_metric_as_nan(tmp_path: Path) -> None:
    current = snapshot({"accuracy": metric("accuracy", math.nan)})
    path = tmp_path / "results.jsonl"
    write_run(path, BenchmarkResult(current, compare(None, current, FIVE_PERCENT), ()))
    (read,) = read_results(path)
    assert math.isnan(read.metrics["accuracy"].value)


def test_rows_may_come_in_any_order_and_unfinished_benchmarks_are_left_out(
    tmp_path: Path,
) -> None:
    examples = (example(0, 0.25), example(1, 1.0))
    current = snapshot({"accuracy": metric("accuracy", 0.625)})
    rows = run_rows(BenchmarkResult(current, compare(None, current, FIVE_PERCENT), examples))
    other = snapshot({"accuracy": metric("accuracy", 0.1)}, benchmark="arith")
    other_rows = run_rows(BenchmarkResult(other, compare(None, other, FIVE_PERCENT), ()))
    unfinished = {**example_row(example(5, 1.0)), "benchmark": "cut-off"}
    path = tmp_path / "results.jsonl"
    with JsonlWriter(path) as writer:
        for row in [*reversed(rows), unfinished, *other_rows]:
            writer.write(row)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"type": "exa')  # torn by a crash
    snapshots = {snap.benchmark: snap for snap in read_results(path)}
    assert sorted(snapshots) == ["arith", "gsm8k"]
    assert snapshots["gsm8k"].metrics["accuracy"].value == 0.625
    assert snapshots["gsm8k"].examples == {
        "0": {"numeric_match": 0.25, "latency_ms": 100.0},
        "1": {"numeric_match": 1.0, "latency_ms": 101.0},
    }
    assert snapshots["arith"].metrics["accuracy"].value == 0.1


def closed_run_lines() -> list[str]:
    current = snapshot({"accuracy": metric("accuracy", 0.5)})
    rows = run_rows(BenchmarkResult(current, compare(None, current, FIVE_PERCENT), ()))
    return [json.dumps(row) for row in rows]


def broken(lines: list[str], number: int, change: dict[str, Any]) -> list[str]:
    row = json.loads(lines[number - 1])
    row.update(change)
    return [*lines[: number - 1], json.dumps(row), *lines[number:]]


@pytest.mark.parametrize(
    ("lines", "field", "message"),
    [
        (["{not json", *closed_run_lines()], "line 1", "not valid JSON"),
        (["[1]", *closed_run_lines()], "line 1", "expected a JSON object"),
        (broken(closed_run_lines(), 2, {"value": "high"}), "line 2: value", "expected a number"),
        (broken(closed_run_lines(), 2, {"direction": "up"}), "line 2: direction", "'up'"),
        (broken(closed_run_lines(), 2, {"benchmark": 3}), "line 2: benchmark", "expected text"),
        (broken(closed_run_lines(), 1, {"dataset": None}), "line 1: dataset", "JSON object"),
        ([*closed_run_lines()[1:]], "", "no benchmark rows"),
        (['{"type": "example", "benchmark": "g", "id": "1", "scores": {"m": "x"}}'],
         "line 1: scores.m", "expected a number"),
    ],
)  # fmt: skip
def test_a_bad_results_file_names_the_line(
    tmp_path: Path, lines: list[str], field: str, message: str
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BaselineError) as caught:
        read_results(path)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{path}: {field + ': ' if field else ''}")
    assert message in str(caught.value)


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.58, "ratio", "0.5800"),
        (1.0, "ratio", "1.0000"),
        (0.0, "ratio", "0.0000"),
        (812.4, "ms", "812.4 ms"),
        (12.345, "ms", "12.35 ms"),
        (12345.6, "ms", "12346 ms"),
        (3.0, "", "3.000"),
        (42.5, "tokens/s", "42.50 tokens/s"),
        (None, "ms", "—"),
        (math.nan, "ms", "nan"),
    ],
)
def test_format_value(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_format_number_keeps_tiny_values_visible() -> None:
    assert format_number(0.00001234) == "1.234e-05"


def test_the_regression_line_says_old_new_change_and_threshold() -> None:
    result = regressed_result()
    (row,) = result.verdict.regressions
    assert verdict_line("gsm8k", row) == (
        "REGRESSION gsm8k.accuracy: 0.5800 → 0.5120 (-11.7 %, threshold 5 %, p = 6e-08, "
        "exact McNemar)"
    )


def test_terminal_lines_align_the_table_and_list_regressions() -> None:
    lines = terminal_lines([regressed_result()])
    assert lines[0] == (
        "Gate failed: 1 regression, 1 missing, 1 errored example, 1 improvement in 1 benchmark."
    )
    assert lines[1] == "gsm8k (suite standard, target qwen3-8b)"
    assert "n=40" in lines[2] and "fingerprint c0ffee00" in lines[2] and "1 error" in lines[2]
    table = lines[3:7]
    assert table[0].split() == [
        "metric", "baseline", "current", "change", "threshold", "p", "detects", "status"
    ]  # fmt: skip
    status_column = table[0].index("status")
    assert [line[status_column:] for line in table[1:]] == ["regression", "improvement", "missing"]
    assert "812.4 ms" in table[2] and "700.0 ms" in table[2] and "10 %" in table[2]
    assert "  25 examples flipped from right to wrong" in lines
    assert lines[-1] == (
        "REGRESSION gsm8k.accuracy: 0.5800 → 0.5120 (-11.7 %, threshold 5 %, p = 6e-08, "
        "exact McNemar)"
    )


def test_terminal_lines_show_the_note_of_an_uncompared_run() -> None:
    current = snapshot({"accuracy": metric("accuracy", 0.5)})
    result = BenchmarkResult(current, compare(None, current, FIVE_PERCENT), (), None, "saved")
    lines = terminal_lines([result])
    assert "  note: no baseline yet" in lines
    assert "_baseline saved_" in markdown([result])
    assert not any(line.startswith("REGRESSION") for line in lines)


def test_markdown_is_a_pr_comment() -> None:
    text = markdown([regressed_result()], title="nightly")
    assert text.startswith(
        "## nightly\n\n"
        "Gate failed: 1 regression, 1 missing, 1 errored example, 1 improvement in 1 benchmark.\n"
    )
    assert "| metric | baseline | current | change | threshold | p | detects | status |" in text
    assert (
        "| accuracy | 0.5800 | 0.5120 [0.4608, 0.5632] | -11.7 % | 5 % | 6e-08 | ≥ 32.8 % "
        "| **regression** |"
    ) in text
    assert "| gone | 1.0000 | — | — | 5 % | — | — | missing |" in text
    flipped = next(line for line in text.splitlines() if "Flipped from right to wrong" in line)
    assert flipped.startswith("**Flipped from right to wrong** (25): `0`, `1`, `2`,")
    assert "`19`, +5 more" in flipped and "`20`" not in flipped


def test_markdown_escapes_table_breaking_text_and_shows_the_note() -> None:
    current = snapshot({"a|b": metric("a|b", 0.5)})
    result = BenchmarkResult(current, compare(None, current, FIVE_PERCENT), ())
    text = markdown([result])
    assert "| a\\|b | — |" in text
    assert "> no baseline yet" in text
    assert "Gate passed: 0 regressions, 1 not compared in 1 benchmark." in text
    assert "No regressions" not in text  # never while something went uncompared


def test_numpy_numbers_become_plain_json(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "results.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"n": np.int64(3), "p95": np.float64(812.4), "bad": np.float32("nan")})
    assert json.loads(path.read_text(encoding="utf-8")) == {"n": 3, "p95": 812.4, "bad": None}
