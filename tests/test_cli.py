from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_expertbench.baseline import DatasetInfo, Snapshot, save
from pytest_expertbench.cli import main
from pytest_expertbench.gate import compare
from pytest_expertbench.records import Direction, ExampleResult, MetricResult, Threshold
from pytest_expertbench.report import (
    BenchmarkResult,
    JsonlWriter,
    example_row,
    metric_rows,
    run_row,
)


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_expertbench.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def metric(
    name: str, value: float, direction: Direction = "higher", unit: str = "ratio"
) -> MetricResult:
    of = "latency_ms" if unit == "ms" else "numeric_match"
    return MetricResult(f"gsm8k.{name}", value, None, 30, direction, unit, {"of": of})


def snapshot(accuracy: float, right: int, *, benchmark: str = "gsm8k") -> Snapshot:
    """30 examples, the first ``right`` of them answered right."""
    return Snapshot(
        benchmark=benchmark,
        suite="standard",
        target="demo",
        captured_at="2026-11-23T10:00:00Z",
        git_sha="abc123",
        plugin_version="0.1.0",
        dataset=DatasetInfo("file:arith.jsonl", "sha256:" + "5eed" * 16, 30),
        environment={},
        metrics={
            "accuracy": metric("accuracy", accuracy),
            "latency_p95_ms": metric("latency_p95_ms", 812.4, "lower", "ms"),
        },
        examples={
            str(i): {"numeric_match": float(i < right), "latency_ms": 800.0} for i in range(30)
        },
    )


def write_results(path: Path, current: Snapshot) -> Path:
    """A results.jsonl as the plugin writes it: the benchmark row, examples, metrics."""
    examples = tuple(
        ExampleResult(current.benchmark, example_id, int(example_id), "d", "demo", scores, "")
        for example_id, scores in current.examples.items()
    )
    result = BenchmarkResult(current, compare(None, current, Threshold(rel=0.05)), examples)
    with JsonlWriter(path) as writer:
        writer.write(run_row(result))
        for item in examples:
            writer.write(example_row(item))
        for row in metric_rows(result, Threshold(rel=0.05)):
            writer.write(row)
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A baseline at 0.9 accuracy and a run at 0.8 whose first 3 right answers went wrong."""
    base = tmp_path / "baselines" / "demo" / "standard" / "gsm8k.json"
    save(base, snapshot(0.9, 27))
    results = write_results(tmp_path / "results.jsonl", snapshot(0.8, 24))
    return base, results


def test_a_regression_exits_1_and_says_why(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, results = files
    done = run(tmp_path, "compare", str(base), str(results), "--gate", "threshold")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert (
        "REGRESSION gsm8k.accuracy: 0.9000 → 0.8000 (-11.1 %, threshold 5 %, p = 0.25, "
        "exact McNemar)"
    ) in lines
    assert "flipped from right to wrong in gsm8k (3):" in lines
    assert [line.split() for line in lines[-3:]] == [
        [str(i), "numeric_match", "1", "→", "0"] for i in (24, 25, 26)
    ]
    assert done.stderr == ""


def test_by_default_three_flips_of_thirty_are_inconclusive(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    base, results = files
    done = run(tmp_path, "compare", str(base), str(results))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Gate passed: 0 regressions, 1 inconclusive in 1 benchmark.\n")
    assert "INCONCLUSIVE gsm8k.accuracy: 0.9000 → 0.8000" in done.stdout
    strict = run(tmp_path, "compare", str(base), str(results), "--alpha", "0.3")
    assert strict.returncode == 1  # p = 1/8, times 2 (Holm over both metrics) < 0.3
    refused = run(tmp_path, "compare", str(base), str(results), "--alpha", "5")
    assert refused.returncode == 2 and "expected a number between 0 and 1" in refused.stderr


def test_top_limits_the_flipped_examples(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, results = files
    done = run(tmp_path, "compare", str(base), str(results), "--top", "2")
    assert "flipped from right to wrong in gsm8k (first 2 of 3):" in done.stdout
    assert "  26  " not in done.stdout and "  25  numeric_match" in done.stdout
    none = run(tmp_path, "compare", str(base), str(results), "--top", "0")
    assert "numeric_match" not in none.stdout


@pytest.mark.parametrize("threshold", ["0.2", "20%"])
def test_a_looser_threshold_passes(
    tmp_path: Path, files: tuple[Path, Path], threshold: str
) -> None:
    base, results = files
    done = run(tmp_path, "compare", str(base), str(results), "--threshold", threshold)
    assert done.returncode == 0, done.stdout
    assert "20 %" in done.stdout and "REGRESSION" not in done.stdout


def test_identical_files_pass(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, results = files
    for prev, curr in ((base, base), (results, results)):
        done = run(tmp_path, "compare", str(prev), str(curr))
        assert done.returncode == 0, done.stdout
        assert done.stdout.count(" ok\n") == 2


def test_an_improvement_passes(tmp_path: Path, files: tuple[Path, Path]) -> None:
    _, results = files
    better = tmp_path / "better.json"
    save(better, snapshot(0.95, 29))
    done = run(tmp_path, "compare", str(results), str(better), "--gate", "threshold")
    assert done.returncode == 0
    assert "improvement" in done.stdout


def test_a_changed_dataset_is_not_compared(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, _ = files
    other = replace(snapshot(0.1, 3), dataset=DatasetInfo("file:x", "sha256:" + "f" * 64, 30))
    save(tmp_path / "other.json", other)
    done = run(tmp_path, "compare", str(base), "other.json")
    assert done.returncode == 0
    assert "dataset changed: baseline 5eed5eed (n=30) ≠ current ffffffff (n=30)" in done.stdout


def test_benchmarks_are_matched_by_name(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, _ = files
    save(tmp_path / "arith.json", snapshot(0.1, 3, benchmark="arith"))
    done = run(tmp_path, "compare", str(base), "arith.json")
    assert done.returncode == 0
    assert "note: no baseline yet" in done.stdout
    assert f"gsm8k: only in {base}, not compared" in done.stdout


def test_markdown_output(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, results = files
    done = run(tmp_path, "compare", str(base), str(results), "--markdown", "--gate", "threshold")
    assert done.returncode == 1
    assert done.stdout.startswith("## expertbench compare gsm8k.json results.jsonl\n")
    assert "| accuracy | 0.9000 | 0.8000 | -11.1 % | 5 % | 0.25 | ≥ 5 % | **regression** |" in (
        done.stdout
    )


def test_show_prints_the_metrics(tmp_path: Path, files: tuple[Path, Path]) -> None:
    base, results = files
    for path, accuracy in ((base, "0.9000"), (results, "0.8000")):
        done = run(tmp_path, "show", str(path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("gsm8k (suite standard, target demo)\n")
        table = {line.split()[0]: line.split() for line in done.stdout.splitlines()[3:]}
        assert table["accuracy"][1] == accuracy
        assert table["latency_p95_ms"][1:3] == ["812.4", "ms"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "{path}: no such file"),
        ('{"schema": 1, "bench', "{path}: not valid JSON (line 1, column 15)"),
        ("CORRUPT_VALUE", "{path}: metrics.accuracy.value: expected a number, got null"),
        ("NEWER_SCHEMA", "{path}: schema: unknown schema version 7: written by a newer"),
    ],
)
def test_a_bad_baseline_exits_2_with_one_line(
    tmp_path: Path, files: tuple[Path, Path], content: str | None, expected: str
) -> None:
    base, results = files
    bad = tmp_path / "bad.json"
    if content in ("CORRUPT_VALUE", "NEWER_SCHEMA"):
        doc = json.loads(base.read_text(encoding="utf-8"))
        if content == "CORRUPT_VALUE":
            doc["metrics"]["accuracy"]["value"] = None
        else:
            doc["schema"] = 7
        bad.write_text(json.dumps(doc), encoding="utf-8")
    elif content is not None:
        bad.write_text(content, encoding="utf-8")
    done = run(tmp_path, "compare", "bad.json", str(results))
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("expertbench: error: " + expected.format(path="bad.json"))


def test_a_bad_results_file_exits_2_naming_the_line(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    base, results = files
    lines = results.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"scores": {', '"scores": {"broken": "yes", ')
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run(tmp_path, "compare", str(base), str(results))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"expertbench: error: {results}: line 2: scores.broken: expected a number, got text 'yes'"
    ]


@pytest.mark.parametrize("args", [["--threshold", "lots"], ["--threshold", "-5%"], ["--top", "x"]])
def test_bad_options_exit_2(tmp_path: Path, files: tuple[Path, Path], args: list[str]) -> None:
    base, results = files
    done = run(tmp_path, "compare", str(base), str(results), *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: argument" in done.stderr.splitlines()[-1]


def test_main_returns_the_exit_code_in_process(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, results = files
    assert main(["compare", str(base), str(results), "--gate", "threshold"]) == 1
    assert main(["compare", str(base), str(base)]) == 0
    assert main(["show", str(base.with_name("absent.json"))]) == 2
    assert main([]) == 2
    assert "no such file" in capsys.readouterr().err
