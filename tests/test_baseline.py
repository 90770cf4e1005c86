from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from pytest_expertbench.baseline import (
    BaselineError,
    DatasetInfo,
    MetricGate,
    Snapshot,
    baseline_path,
    load,
    previous_path,
    restore,
    save,
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
    gates: dict[str, MetricGate] | None = None,
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
        gates=gates or {},
    )


# --------------------------------------------------------------------------- files


def test_baseline_path_is_safe_for_the_filesystem(tmp_path: Path) -> None:
    path = baseline_path(tmp_path, "qwen3:8b", "standard", "gsm8k")
    assert path == tmp_path / "qwen3%3A8b" / "standard" / "gsm8k.json"
    assert baseline_path(tmp_path, "qwen2.5-7b_it", "s", "b").parent.parent.name == "qwen2.5-7b_it"
    escaped = baseline_path(tmp_path, "../..", "a/b", ".hidden")
    assert escaped.resolve().is_relative_to(tmp_path.resolve())
    assert all(not part.startswith(".") for part in escaped.relative_to(tmp_path).parts)


@pytest.mark.parametrize(
    "pair", [("a/b", "a_b"), ("a b", "a_b"), ("é", "_"), ("", "%"), (".x", "_x")]
)
def test_names_never_share_a_baseline_file(tmp_path: Path, pair: tuple[str, str]) -> None:
    one, other = (baseline_path(tmp_path, name, "s", "b") for name in pair)
    assert one != other
    assert unquote(one.parent.parent.name) == pair[0] or pair[0] == ""  # reversible


def test_restore_puts_the_previous_baseline_back_and_undoes_itself(tmp_path: Path) -> None:
    path = tmp_path / "demo" / "quick" / "mini.json"
    save(path, snapshot({"accuracy": metric("accuracy", 0.9)}))
    first = path.read_bytes()
    previous_path(path).parent.mkdir(parents=True)
    previous_path(path).write_bytes(first)
    save(path, snapshot({"accuracy": metric("accuracy", 0.1)}))
    second = path.read_bytes()
    restore(path)
    assert path.read_bytes() == first and previous_path(path).read_bytes() == second
    restore(path)
    assert path.read_bytes() == second
    previous_path(path).write_text("{broken")
    with pytest.raises(BaselineError, match="not valid JSON"):
        restore(path)
    assert path.read_bytes() == second  # nothing lost


def test_saved_files_are_readable_by_the_team(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    save(path, snapshot())
    assert path.stat().st_mode & 0o044 == 0o044  # group and others may read (umask 022)


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
        (edited("del doc['schema']"), "schema", "this field is required"),
        (edited("del doc['benchmark']"), "benchmark", "this field is required"),
        (edited("doc['target'] = 3"), "target", "expected text, got a number 3"),
        (edited("doc['git_sha'] = []"), "git_sha", "expected text, got an array []"),
        (edited("doc['dataset'] = 'x'"), "dataset", "expected a JSON object, got text 'x'"),
        (edited("doc['dataset']['n'] = -1"), "dataset.n", "expected a whole number of 0 or more"),
        (edited("doc['dataset']['n'] = True"), "dataset.n", "whole number of 0 or more, got true"),
        (edited("del doc['dataset']['fingerprint']"), "dataset.fingerprint", "required"),
        (edited("doc['environment'] = None"), "environment", "expected a JSON object, got null"),
        (
            edited("doc['metrics']['accuracy']['value'] = None"),
            "metrics.accuracy.value",
            "expected a number, got null",
        ),
        (
            edited("doc['metrics']['accuracy']['value'] = nan"),
            "metrics.accuracy.value",
            "expected a finite number, got a number nan",
        ),
        (
            edited("doc['metrics']['accuracy']['value'] = '0.5'"),
            "metrics.accuracy.value",
            "expected a number, got text '0.5'",
        ),
        (edited("del doc['metrics']['accuracy']['value']"), "metrics.accuracy.value", "required"),
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
            "metrics.accuracy.threshold.rel",
            "expected a number of 0 or more, got a number -1",
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


def test_negative_metrics_a_null_git_sha_and_fields_of_later_versions_load(
    tmp_path: Path,
) -> None:
    doc = good_doc()
    doc["metrics"]["accuracy"].update(value=-0.25, ci=[-0.5, 0.0], added_later={"x": 1})
    doc["examples"]["0"]["numeric_match"] = -1
    doc.update(git_sha=None, added_later=[1])
    loaded = load(write(tmp_path, doc))
    assert loaded is not None and loaded.git_sha is None
    assert loaded.metrics["accuracy"].value == -0.25
    assert loaded.metrics["accuracy"].ci == (-0.5, 0.0)
    assert loaded.examples == {"0": {"numeric_match": -1.0}}


def test_a_long_wrong_value_is_shortened_in_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, edited("doc['environment'] = list(range(100))"))
    with pytest.raises(BaselineError) as caught:
        load(path)
    message = caught.value.message
    assert message.startswith("expected a JSON object, got an array [0, 1, 2, 3,")
    assert message.endswith("...") and len(message) < 80


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
