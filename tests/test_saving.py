"""A save can only leave the baseline better informed, never lose it."""

from __future__ import annotations

import json

import pytest

from pytest_expertbench.cli import main
from tests.helpers import Project, replay_rows

OUT = "--expert-bench-report-dir=reports/out"
SAVE = "--expert-bench-save-baseline"


def baseline_file(project: Project) -> str:
    return str(project.root / "baselines" / "demo" / "quick" / "mini.json")


def note(project: Project) -> str:
    row = next(r for r in project.results() if r["type"] == "benchmark")
    return str(row["baseline_note"])


@pytest.fixture
def saved(project: Project) -> bytes:
    """A good baseline of all six examples."""
    assert project.run("--expert-bench=quick", SAVE, OUT).ret == 0
    with open(baseline_file(project), "rb") as handle:
        return handle.read()


def unchanged(project: Project, before: bytes) -> bool:
    with open(baseline_file(project), "rb") as handle:
        return handle.read() == before


def test_a_run_with_errored_examples_never_replaces_the_baseline(
    project: Project, saved: bytes
) -> None:
    project.set_replay(replay_rows("mini")[:3])  # the server "died" after three answers
    result = project.run("--expert-bench=quick", SAVE, OUT)
    assert result.ret == 1
    assert note(project) == (
        "not saved: 3 of 6 examples errored; a baseline needs every example scored"
    )
    result.stdout.fnmatch_lines(["baseline mini: not saved: 3 of 6 examples errored*"])
    assert unchanged(project, saved)


def test_a_partial_run_never_becomes_the_baseline(project: Project) -> None:
    result = project.run("--expert-bench=quick", SAVE, "-k", "q0 or q1", OUT)
    assert note(project) == (
        "not saved: 2 of 6 examples ran (-k, -x, --lf or a stop left the rest out); "
        "a baseline needs every example"
    )
    assert result.ret == 0
    assert not (project.root / "baselines").exists()


def test_a_regression_is_saved_only_when_forced_and_can_be_undone(
    project: Project, saved: bytes
) -> None:
    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2", "q4", "q5"]))
    refused = project.run("--expert-bench=quick", SAVE, OUT)
    assert refused.ret == 1
    assert note(project) == (
        "not saved: the gate failed (accuracy regression); "
        "--expert-bench-save-baseline=force saves it anyway"
    )
    assert unchanged(project, saved)
    forced = project.run("--expert-bench=quick", f"{SAVE}=force", OUT)
    assert forced.ret == 1  # saving does not change the verdict
    assert note(project).startswith("saved to baselines/demo/quick/mini.json (the one it replaced")
    with open(baseline_file(project), encoding="utf-8") as handle:
        assert json.load(handle)["metrics"]["accuracy"]["value"] < 0.2
    assert main(["baseline", "restore", baseline_file(project)]) == 0
    assert unchanged(project, saved)
    assert main(["baseline", "restore", baseline_file(project)]) == 0  # and undone
    assert not unchanged(project, saved)


def test_a_larger_run_of_other_examples_replaces_the_baseline_a_smaller_one_does_not(
    project: Project,
) -> None:
    project.run("--expert-bench=quick", "--expert-bench-limit=3", SAVE, OUT)
    assert note(project).startswith("saved to")
    assert project.run("--expert-bench=quick", SAVE, OUT).ret == 0
    assert note(project).startswith("saved to baselines/demo/quick/mini.json (the one it replaced")
    project.run("--expert-bench=quick", "--expert-bench-limit=3", SAVE, OUT)
    assert note(project) == (
        "not saved: baselines/demo/quick/mini.json holds a baseline of more examples "
        "(n=6, this run n=3); delete it to replace it"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--expert-bench-baseline=demoo", "--expert-bench-baseline: no baselines labelled 'demoo'"),
        ("--expert-bench-baseline-dir=baselinez", "--expert-bench-baseline-dir: no such folder"),
        (f"{SAVE}=always", "--expert-bench-save-baseline: expected no value or =force"),
    ],
)
def test_a_mistyped_baseline_option_is_an_error_not_no_baseline_yet(
    project: Project, saved: bytes, option: str, message: str
) -> None:
    result = project.run("--expert-bench=quick", option, OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_restore_without_a_previous_baseline_is_an_error(
    project: Project, saved: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["baseline", "restore", baseline_file(project)]) == 2
    assert "no previous baseline to restore" in capsys.readouterr().err
    assert unchanged(project, saved)


def test_an_ini_file_may_ask_for_saves(project: Project) -> None:
    project.pytester.makeini("[pytest]\nexpert_bench_save_baseline = true\n")
    project.run("--expert-bench=quick", OUT)
    assert note(project).startswith("saved to")
