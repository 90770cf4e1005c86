from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.baseline import (
    BaselineError,
    DatasetInfo,
    Snapshot,
    baseline_path,
    compare,
    gate_status,
    load,
    natural_key,
    save,
    sign_test,
)
from pytest_expertbench.records import Direction, MetricResult, Threshold

FIVE_PERCENT = Threshold(rel=0.05)


def metric(
    name: str,
    value: float,
    direction: Direction = "higher",
    *,
    unit: str = "ratio",
    of: str | None = "numeric_match",
) -> MetricResult:
    return MetricResult(
        metric_id=f"gsm8k.{name}",
        value=value,
        ci=(value - 0.01, value + 0.01),
        samples_used=4,
        direction=direction,
        unit=unit,
        meta={"of": of, "agg": "mean"} if of else {},
    )


def snapshot(
    metrics: dict[str, MetricResult] | None = None,
    examples: dict[str, dict[str, float]] | None = None,
    *,
    fingerprint: str = "sha256:" + "ab" * 32,
    n: int = 4,
    thresholds: dict[str, Threshold] | None = None,
) -> Snapshot:
    return Snapshot(
        benchmark="gsm8k",
        suite="standard",
        target="qwen3-8b",
        captured_at="2026-11-23T10:00:00Z",
        git_sha="abc123",
        plugin_version="0.1.0",
        dataset=DatasetInfo("hf:openai/gsm8k:main:test", fingerprint, n),
        environment={"python": "3.11.7", "platform": "linux-x86_64", "gpu": None},
        metrics=metrics if metrics is not None else {"accuracy": metric("accuracy", 0.5)},
        examples=examples if examples is not None else {"0": {"numeric_match": 1.0}},
        thresholds=thresholds or {},
    )


# --------------------------------------------------------------------------- gate rules


@pytest.mark.parametrize(
    ("old", "new", "direction", "threshold", "expected"),
    [
        # relative, higher is better
        (2.0, 1.5, "higher", Threshold(rel=0.25), "ok"),  # exactly at the threshold
        (2.0, 1.4999, "higher", Threshold(rel=0.25), "regression"),
        (2.0, 2.5, "higher", Threshold(rel=0.25), "ok"),
        (2.0, 2.5001, "higher", Threshold(rel=0.25), "improvement"),
        (2.0, 1.9, "higher", Threshold(rel=0.25), "ok"),
        # relative, lower is better
        (2.0, 2.5, "lower", Threshold(rel=0.25), "ok"),
        (2.0, 2.5001, "lower", Threshold(rel=0.25), "regression"),
        (2.0, 1.5, "lower", Threshold(rel=0.25), "ok"),
        (2.0, 1.4999, "lower", Threshold(rel=0.25), "improvement"),
        # absolute
        (0.5, 0.25, "higher", Threshold(abs=0.25), "ok"),
        (0.5, 0.2499, "higher", Threshold(abs=0.25), "regression"),
        (0.5, 0.7501, "higher", Threshold(abs=0.25), "improvement"),
        (0.5, 0.75, "lower", Threshold(abs=0.25), "ok"),
        (0.5, 0.7501, "lower", Threshold(abs=0.25), "regression"),
        (0.5, 0.2499, "lower", Threshold(abs=0.25), "improvement"),
        # old == 0 with a relative threshold: any move against the direction
        (0.0, -1e-9, "higher", Threshold(rel=0.05), "regression"),
        (0.0, 1e-9, "higher", Threshold(rel=0.05), "improvement"),
        (0.0, 1e-9, "lower", Threshold(rel=0.05), "regression"),
        (0.0, 0.0, "lower", Threshold(rel=0.05), "ok"),
        # old == 0 with an absolute threshold keeps its band
        (0.0, 0.01, "lower", Threshold(abs=0.02), "ok"),
        (0.0, 0.03, "lower", Threshold(abs=0.02), "regression"),
        # negative old values: the band is taken from |old|
        (-2.0, -2.5, "higher", Threshold(rel=0.25), "ok"),
        (-2.0, -2.6, "higher", Threshold(rel=0.25), "regression"),
        (-2.0, -1.4, "higher", Threshold(rel=0.25), "improvement"),
        # a current value that is not a number cannot pass
        (0.5, math.nan, "higher", Threshold(rel=0.05), "regression"),
        (0.5, math.inf, "lower", Threshold(rel=0.05), "regression"),
    ],
)
def test_gate_status(
    old: float, new: float, direction: Direction, threshold: Threshold, expected: str
) -> None:
    assert gate_status(old, new, direction, threshold) == expected


def test_the_default_threshold_matches_the_design_rule() -> None:
    old = 0.58
    at_threshold = old * (1 - 0.05)
    assert gate_status(old, at_threshold, "higher", FIVE_PERCENT) == "ok"
    assert gate_status(old, math.nextafter(at_threshold, 0), "higher", FIVE_PERCENT) == "regression"


def test_compare_reports_deltas_and_fails_on_a_regression() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.58)})
    new = snapshot({"accuracy": metric("accuracy", 0.512)})
    verdict = compare(old, new, FIVE_PERCENT)
    (row,) = verdict.metrics
    assert row.status == "regression"
    assert row.baseline == 0.58
    assert row.current == new.metrics["accuracy"]
    assert row.delta_rel == pytest.approx((0.512 - 0.58) / 0.58)
    assert row.delta_abs == pytest.approx(0.512 - 0.58)
    assert row.threshold == FIVE_PERCENT
    assert verdict.failed and verdict.regressions == (row,)
    assert verdict.comparable and verdict.note is None


def test_a_metric_threshold_of_the_current_run_wins_over_the_default() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.58)})
    loose = {"accuracy": Threshold(rel=0.2)}
    new = snapshot({"accuracy": metric("accuracy", 0.512)}, thresholds=loose)
    verdict = old.compare(new, FIVE_PERCENT)
    assert verdict.metrics[0].threshold == Threshold(rel=0.2)
    assert verdict.metrics[0].status == "ok"
    assert not verdict.failed


def test_delta_rel_is_none_when_the_old_value_is_zero() -> None:
    old = snapshot({"errors": metric("errors", 0.0, "lower")})
    new = snapshot({"errors": metric("errors", 0.0, "lower")})
    (row,) = compare(old, new, FIVE_PERCENT).metrics
    assert row.delta_rel is None and row.delta_abs == 0.0 and row.status == "ok"


def test_new_and_missing_metrics() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.5), "gone": metric("gone", 3.0)})
    new = snapshot({"accuracy": metric("accuracy", 0.5), "fresh": metric("fresh", 1.0)})
    rows = {row.name: row for row in compare(old, new, FIVE_PERCENT).metrics}
    assert rows["accuracy"].status == "ok"
    assert rows["fresh"].status == "new" and rows["fresh"].baseline is None
    assert rows["gone"].status == "missing"
    assert rows["gone"].current is None and rows["gone"].baseline == 3.0


def test_no_baseline_makes_every_metric_new() -> None:
    verdict = compare(None, snapshot(), FIVE_PERCENT)
    assert verdict.comparable
    assert verdict.note == "no baseline yet"
    assert [row.status for row in verdict.metrics] == ["new"]
    assert not verdict.failed and verdict.flipped == ()


def test_a_changed_dataset_is_not_compared() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.9)}, fingerprint="sha256:" + "1" * 64)
    new = snapshot({"accuracy": metric("accuracy", 0.1)}, fingerprint="sha256:" + "2" * 64, n=7)
    verdict = compare(old, new, FIVE_PERCENT)
    assert not verdict.comparable and not verdict.failed
    assert [row.status for row in verdict.metrics] == ["new"]
    assert verdict.note == (
        "dataset changed: baseline 11111111 (n=4) ≠ current 22222222 (n=7); not compared"
    )


def test_flips_follow_the_scores_behind_higher_metrics() -> None:
    old_examples = {
        "10": {"numeric_match": 1.0, "latency_ms": 100.0, "other": 1.0},
        "2": {"numeric_match": 1.0, "latency_ms": 100.0},
        "1": {"numeric_match": 0.0},
        "3": {"numeric_match": 1.0},
        "only-old": {"numeric_match": 1.0},
    }
    new_examples = {
        "10": {"numeric_match": 0.0, "latency_ms": 50.0, "other": 0.0},
        "2": {"numeric_match": 0.5, "latency_ms": 500.0},
        "1": {"numeric_match": 1.0},
        "3": {"numeric_match": 1.0},
        "only-new": {"numeric_match": 0.0},
    }
    metrics = {
        "accuracy": metric("accuracy", 0.5),
        "latency_p95_ms": metric("latency_p95_ms", 100.0, "lower", of="latency_ms"),
    }
    verdict = compare(
        snapshot(metrics, old_examples), snapshot(metrics, new_examples), FIVE_PERCENT
    )
    assert [(f.example_id, f.score, f.old, f.new) for f in verdict.flipped] == [
        ("2", "numeric_match", 1.0, 0.5),
        ("10", "numeric_match", 1.0, 0.0),
    ]


def test_flips_watch_every_score_when_a_metric_does_not_name_its_score() -> None:
    metrics = {"accuracy": metric("accuracy", 0.5, of=None)}
    old = snapshot(metrics, {"a": {"x": 1.0, "y": 2.0}})
    new = snapshot(metrics, {"a": {"x": 1.0, "y": 1.0}})
    assert [(f.example_id, f.score) for f in compare(old, new, FIVE_PERCENT).flipped] == [
        ("a", "y")
    ]


def test_natural_order() -> None:
    ids = ["q10", "10", "b", "2", "q2", "1", "a"]
    assert sorted(ids, key=natural_key) == ["1", "2", "10", "a", "b", "q2", "q10"]


# --------------------------------------------------------------------------- files


def test_baseline_path_is_safe_for_the_filesystem(tmp_path: Path) -> None:
    path = baseline_path(tmp_path, "qwen3:8b", "standard", "gsm8k")
    assert path == tmp_path / "qwen3_8b" / "standard" / "gsm8k.json"
    escaped = baseline_path(tmp_path, "../..", "a/b", ".hidden")
    assert escaped.resolve().is_relative_to(tmp_path.resolve())
    assert all(not part.startswith(".") for part in escaped.relative_to(tmp_path).parts)


def test_load_is_none_when_there_is_no_baseline(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.json") is None


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    original = snapshot(
        {
            "accuracy": metric("accuracy", 0.1 + 0.2),
            "latency_p95_ms": metric("latency_p95_ms", 812.4, "lower", unit="ms"),
        },
        {"0": {"numeric_match": 1.0, "latency_ms": 812.4}, "1": {"numeric_match": 0.0}},
        thresholds={"latency_p95_ms": Threshold(rel=0.1), "accuracy": Threshold(abs=0.02)},
    )
    path = tmp_path / "deep" / "er" / "gsm8k.json"
    save(path, original)
    assert load(path) == original
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and '\n  "benchmark"' in text
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert doc["schema"] == 1
    assert doc["metrics"]["accuracy"]["value"] == 0.1 + 0.2  # full precision
    assert doc["metrics"]["latency_p95_ms"]["threshold"] == {"rel": 0.1}
    assert doc["metrics"]["accuracy"]["meta"]["of"] == "numeric_match"
    assert list(tmp_path.glob("deep/er/.*")) == []


def test_save_leaves_out_non_finite_example_scores_and_cis(tmp_path: Path) -> None:
    odd = MetricResult("gsm8k.accuracy", 0.5, (math.nan, 1.0), 4, "higher", "ratio")
    path = tmp_path / "b.json"
    save(path, snapshot({"accuracy": odd}, {"0": {"numeric_match": math.nan, "ok": 1.0}}))
    loaded = load(path)
    assert loaded is not None
    assert loaded.metrics["accuracy"].ci is None
    assert loaded.examples == {"0": {"ok": 1.0}}


def test_save_refuses_a_snapshot_that_could_not_be_loaded(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    save(path, snapshot())
    before = path.read_bytes()
    with pytest.raises(BaselineError, match=r"metrics\.accuracy\.value: expected a finite"):
        save(path, snapshot({"accuracy": metric("accuracy", math.nan)}))
    assert path.read_bytes() == before


@pytest.mark.parametrize("broken", ["os.fsync", "os.replace"])
def test_a_failed_save_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    path = tmp_path / "b.json"
    save(path, snapshot({"accuracy": metric("accuracy", 0.5)}))
    before = path.read_bytes()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    module_name, function = broken.split(".")
    monkeypatch.setattr({"json": json, "os": os}[module_name], function, fail)
    with pytest.raises(BaselineError, match="No space left on device"):
        save(path, snapshot({"accuracy": metric("accuracy", 0.9)}))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_an_interrupted_save_removes_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "b.json", snapshot())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- corrupt files


def good_doc() -> dict[str, Any]:
    return snapshot().to_json()


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "b.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def edited(change: str) -> Any:
    doc = good_doc()
    exec(change, {"doc": doc, "nan": math.nan, "inf": math.inf})
    return doc


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ('{"schema": 1, "benchm', "", "not valid JSON (line 1, column 15)"),
        ("", "", "not valid JSON"),
        ("[1, 2]", "", "expected a JSON object, got an array"),
        (edited("doc['schema'] = 7"), "schema", "unknown schema version 7: written by a newer"),
        (edited("doc['schema'] = '1'"), "schema", "expected the integer 1"),
        (edited("del doc['schema']"), "schema", "missing"),
        (edited("del doc['benchmark']"), "benchmark", "missing"),
        (edited("doc['target'] = 3"), "target", "expected a string, got 3"),
        (edited("doc['git_sha'] = []"), "git_sha", "expected a string, got an array"),
        (edited("doc['dataset'] = 'x'"), "dataset", "expected a JSON object, got a string"),
        (edited("doc['dataset']['n'] = -1"), "dataset.n", "expected a whole number >= 0"),
        (edited("doc['dataset']['n'] = True"), "dataset.n", "expected a whole number >= 0"),
        (edited("del doc['dataset']['fingerprint']"), "dataset.fingerprint", "missing"),
        (edited("doc['environment'] = None"), "environment", "expected a JSON object, got null"),
        (edited("doc['metrics']['accuracy']['value'] = None"), "metrics.accuracy.value", "null"),
        (edited("doc['metrics']['accuracy']['value'] = nan"), "metrics.accuracy.value", "nan"),
        (
            edited("doc['metrics']['accuracy']['value'] = '0.5'"),
            "metrics.accuracy.value",
            "a string",
        ),
        (edited("del doc['metrics']['accuracy']['value']"), "metrics.accuracy.value", "missing"),
        (
            edited("doc['metrics']['accuracy']['direction'] = 'up'"),
            "metrics.accuracy.direction",
            "'up'",
        ),
        (edited("doc['metrics']['accuracy']['ci'] = [0.1]"), "metrics.accuracy.ci", "[low, high]"),
        (edited("doc['metrics']['accuracy']['ci'] = [0.1, inf]"), "metrics.accuracy.ci[1]", "inf"),
        (
            edited("doc['metrics']['accuracy']['samples_used'] = 1.5"),
            "metrics.accuracy.samples_used",
            "whole",
        ),
        (
            edited("doc['metrics']['accuracy']['threshold'] = {'rel': -1}"),
            "metrics.accuracy.threshold",
            '"rel"',
        ),
        (
            edited("doc['metrics']['accuracy']['threshold'] = 0.05"),
            "metrics.accuracy.threshold",
            '"abs"',
        ),
        (edited("doc['metrics']['accuracy']['meta'] = []"), "metrics.accuracy.meta", "object"),
        (edited("doc['examples'] = []"), "examples", "expected a JSON object"),
        (edited("doc['examples']['0'] = 1"), "examples.0", "expected a JSON object"),
        (
            edited("doc['examples']['0']['numeric_match'] = None"),
            "examples.0.numeric_match",
            "null",
        ),
        (
            edited("doc['examples']['0']['numeric_match'] = -inf"),
            "examples.0.numeric_match",
            "-inf",
        ),
    ],
)
def test_a_corrupt_baseline_names_the_file_and_the_field(
    tmp_path: Path, doc: Any, field: str, message: str
) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(BaselineError) as caught:
        load(path)
    assert caught.value.path == path
    assert caught.value.field == field
    prefix = f"{path}: {field}: " if field else f"{path}: "
    assert str(caught.value).startswith(prefix)
    assert message in str(caught.value)


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(BaselineError, match="not UTF-8 text"):
        load(path)


def test_an_unreadable_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="cannot read the file"):
        load(tmp_path)


def test_the_saved_document_has_the_designed_keys() -> None:
    doc = good_doc()
    assert set(doc) == {
        "schema", "benchmark", "suite", "target", "captured_at", "git_sha",
        "plugin_version", "dataset", "environment", "metrics", "examples",
    }  # fmt: skip
    assert set(doc["metrics"]["accuracy"]) == {
        "value", "direction", "unit", "ci", "samples_used", "meta",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("up", "down", "expected"),
    [(5, 5, 1.0), (0, 5, 2 / 32), (1, 9, 2 * (1 + 10) / 1024), (25, 0, 2 / 2**25), (1, 0, 1.0)],
)
def test_the_sign_test_is_the_exact_two_sided_binomial(up: int, down: int, expected: float) -> None:
    assert sign_test(up, down) == pytest.approx(expected)


def test_a_comparison_carries_the_paired_p_value_of_its_score() -> None:
    old_examples = {str(i): {"numeric_match": 1.0} for i in range(10)}
    new_examples = {str(i): {"numeric_match": 0.0 if i < 9 else 1.0} for i in range(10)}
    old = snapshot({"accuracy": metric("accuracy", 1.0)}, old_examples)
    new = snapshot({"accuracy": metric("accuracy", 0.1)}, new_examples)
    (row,) = compare(old, new, Threshold(rel=0.05)).metrics
    assert row.p_value == pytest.approx(2 / 2**9)  # nine of nine changes went down
