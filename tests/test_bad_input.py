"""Bad input stops the run with one clear line naming the file and the key, and changes nothing."""

from __future__ import annotations

import json

import pytest

from tests.helpers import MINI_YAML, Project

OUT = "--expert-bench-report-dir=reports/out"


def run_refused(project: Project, *args: str) -> str:
    """Run, check that it stopped as a usage error without a traceback, and return stderr."""
    before = project.snapshot_files()
    result = project.run("--expert-bench=quick", OUT, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    assert "Traceback" not in err + result.stdout.str()
    assert project.snapshot_files() == before  # nothing written, nothing lost
    return err


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("name: mini\nsuites: [quick\n", "mini.yaml: not valid YAML: line 3"),
        (
            MINI_YAML.replace("numeric_match: {", "numeric_matsch: {"),
            "mini.yaml: scorers[0]: unknown scorer 'numeric_matsch'",
        ),
        (
            MINI_YAML.replace(", direction: higher", ""),
            "mini.yaml: metrics.accuracy.direction: expected 'higher' or 'lower'",
        ),
        (
            MINI_YAML.replace("of: numeric_match", "of: numeric_mach"),
            "mini.yaml: metrics.accuracy.of: unknown score 'numeric_mach'",
        ),
        (
            MINI_YAML.replace("agg: mean", "agg: median"),
            "mini.yaml: metrics.accuracy.agg: expected one of mean",
        ),
        (
            MINI_YAML.replace("data/mini.jsonl", "data/nope.jsonl"),
            "mini.yaml: dataset.file: no such file",
        ),
        (
            MINI_YAML.replace('prompt: "{question}"', 'prompt: "{questoin}"'),
            "mini.yaml: prompt: uses {questoin}, which the dataset does not have",
        ),
        (
            MINI_YAML.replace("id: id}", "id: key}"),
            "mini.yaml: dataset.id: the dataset has no column 'key'",
        ),
        (
            MINI_YAML.replace("small: 3", "small: -3"),
            "mini.yaml: suites.small: expected a positive whole number or 'all'",
        ),
        (
            MINI_YAML.replace("extract: flexible", "extract: lenient"),
            "mini.yaml: scorers[0].numeric_match.extract",
        ),
        (
            MINI_YAML + "threshold: 5%\n",
            "mini.yaml: threshold: unknown key",
        ),
        (
            MINI_YAML.replace('prompt: "{question}"', 'prompt: "{question} in \\\\boxed{}"'),
            "mini.yaml: prompt: '{question} in \\\\boxed{}' has a positional field {}",
        ),
    ],
    ids=[
        "broken-yaml",
        "unknown-scorer",
        "no-direction",
        "unknown-score",
        "unknown-agg",
        "missing-dataset",
        "missing-field",
        "missing-id-field",
        "bad-suite-size",
        "bad-scorer-option",
        "unknown-key",
        "positional-field",
    ],
)
def test_a_wrong_benchmark_file_is_named_with_its_key(
    project: Project, yaml_text: str, expected: str
) -> None:
    project.write("mini.yaml", yaml_text)
    err = run_refused(project)
    assert expected in err
    assert len([line for line in err.splitlines() if line.startswith("ERROR")]) == 1


def test_an_unknown_target_lists_the_known_ones(project: Project) -> None:
    err = run_refused(project, "--expert-bench-target=gpt-9")
    assert "targets.yaml: targets: unknown target 'gpt-9' (known: demo)" in err


def test_an_unknown_suite_says_so(project: Project) -> None:
    err = run_refused(project, "--expert-bench=nightly")
    assert "no benchmark belongs to the suite(s) nightly" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"schema": 1, "benchmark": "mini", "metr', "not valid JSON"),
        ("", "not valid JSON"),
        (json.dumps({"schema": 7}), "unknown schema version 7"),
        ("[1, 2]", "expected"),
    ],
    ids=["truncated", "empty", "future-schema", "not-an-object"],
)
def test_a_corrupt_baseline_is_refused_and_kept(
    project: Project, content: str, expected: str
) -> None:
    path = project.root / "baselines" / "demo" / "quick" / "mini.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    err = run_refused(project)
    assert "mini.json" in err and expected in err
    assert path.read_text() == content


def test_a_nan_in_a_baseline_names_the_field(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    path = project.root / "baselines" / "demo" / "quick" / "mini.json"
    doc = json.loads(path.read_text())
    text = json.dumps(doc).replace('"value": 1.0', '"value": NaN')
    path.write_text(text)
    err = run_refused(project)
    assert "mini.json: metrics.accuracy.value" in err


def test_a_nan_score_errors_the_item_and_names_the_scorer(project: Project) -> None:
    project.pytester.makeconftest(
        """
        from pytest_expertbench.records import Score

        def pytest_expertbench_register_scorers(register):
            register("always_nan", lambda options, context: lambda c, e: Score(float("nan")))
        """
    )
    project.write(
        "mini.yaml",
        MINI_YAML.replace("metrics:", "  - always_nan: {}\nmetrics:"),
    )
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(failed=7)  # and the gate: no example scored, incomplete
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*mini.yaml: scorers[[]1[]] (always_nan) gave nan for example q0*",
            "INCOMPLETE mini.accuracy: only 0 of 6 examples scored*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_a_bad_option_value_is_a_usage_error(project: Project) -> None:
    for args, expected in [
        (("--expert-bench-threshold=lots",), "--expert-bench-threshold"),
        (("--expert-bench-concurrency=0",), "--expert-bench-concurrency"),
        (("--expert-bench-cache=maybe",), "--expert-bench-cache: expected resume, reuse, refresh"),
    ]:
        err = run_refused(project, *args)
        assert expected in err


def test_a_missing_targets_file_is_named(project: Project) -> None:
    (project.bench_dir / "targets.yaml").unlink()
    err = run_refused(project)
    assert "targets.yaml: the targets file does not exist" in err


def test_a_bad_replay_file_is_named(project: Project) -> None:
    (project.bench_dir / "recorded" / "demo.jsonl").write_text('{"benchmark": "mini", "id":\n')
    err = run_refused(project)
    assert "demo.jsonl: line 1: not valid JSON" in err


def test_a_corrupt_cache_file_is_named_and_kept(project: Project) -> None:
    cache = project.root / ".expertbench" / "cache" / "responses.sqlite3"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a database" * 100)
    err = run_refused(project)
    assert "responses.sqlite3" in err
