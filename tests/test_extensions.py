"""Extending the plugin: scorers and targets from hooks and entry points, judges."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.helpers import (
    LOCAL,
    MINI_YAML,
    QUESTIONS,
    Project,
    assert_stopped,
    fake_server_block,
    replay_rows,
)
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"


def test_a_scorer_from_an_installed_package_is_found_by_its_entry_point(project: Project) -> None:
    site = project.root / "site"
    (site / "shout_scorers").mkdir(parents=True)
    (site / "shout_scorers" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from pytest_expertbench.records import Score

            def shouting(options, context):
                return lambda completion, example: Score(float(completion.text.isupper()))
            """
        )
    )
    dist = site / "shout_scorers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-scorers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pytest_expertbench.scorers]\nshouting = shout_scorers:shouting\n"
    )
    project.write("mini.yaml", MINI_YAML.replace("metrics:", "  - shouting: {}\nmetrics:"))
    project.set_replay(
        [{**row, "response": row["response"].upper()} for row in replay_rows("mini")][:3]
        + replay_rows("mini")[3:]
    )
    project.pytester.makeini("[pytest]\npythonpath = site\n")  # as if pip-installed there
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, skipped=1)  # the gate skips: no baseline
    examples = [r for r in project.results() if r["type"] == "example"]
    assert [r["scores"]["shouting"] for r in examples] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_a_target_kind_from_a_hook(project: Project) -> None:
    project.pytester.makeconftest(
        """
        from pytest_expertbench.records import Completion

        class Oracle:
            name = "oracle"
            live = True

            def identity(self):
                return {"kind": "oracle"}

            async def complete(self, request, client):
                return Completion(text="#### " + request.fields["answer"].split()[-1])

        def pytest_expertbench_make_target(spec):
            return Oracle() if spec.kind == "oracle" else None
        """
    )
    project.targets({"oracle": {"kind": "oracle"}}, default="oracle")
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.accuracy")["value"] == 1.0


def test_an_unknown_target_kind_is_a_usage_error(project: Project) -> None:
    project.targets({"odd": {"kind": "carrier-pigeon"}}, default="odd")
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == 4
    assert "targets.odd.kind: expected one of openai" in result.stderr.str()


JUDGED = """\
name: mini
dataset: {file: data/mini.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
scorers:
  - judge:
      target: grader
      rubric: "Grade the answer to {question}: {response}"
      parse: verdict
metrics:
  judged: {of: judge, agg: rate, direction: higher}
"""


def test_a_judge_grades_through_the_run_and_its_verdicts_are_cached(project: Project) -> None:
    verdicts = {}
    for qid, text, _ in QUESTIONS:
        answer = next(r["response"] for r in replay_rows("mini") if r["id"] == qid)
        verdicts[f"Grade the answer to {text}: {answer}"] = "FAIL" if qid == "q5" else "PASS"
    with FakeOpenAI(answers=verdicts) as grader:
        project.targets(
            {
                "demo": {"kind": "replay", "path": "recorded/demo.jsonl"},
                "grader": {"kind": "openai", "base_url": grader.base_url, "model": "judge"},
            }
        )
        project.write("mini.yaml", JUDGED)
        first = project.run("--expert-bench=quick", OUT)
        first.assert_outcomes(passed=6, skipped=1)
        assert project.metric(project.results(), "mini.judged")["value"] == 5 / 6
        assert grader.total == 6
        reuse = project.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
        reuse.assert_outcomes(passed=6, skipped=1)
        assert grader.total == 6  # every verdict came from the cache
        project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
        assert grader.total == 12  # resume: the first run finished, its verdicts are old


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_judge_with_a_managed_server_gets_it_started_and_stopped(
    project: Project, workers: tuple[str, ...]
) -> None:
    server = fake_server_block()
    grader = {"kind": "openai", "base_url": LOCAL + "/v1", "model": "judge", "server": server}
    unused = {**grader, "server": {**server, "command": [sys.executable, "-c", "exit(3)"]}}
    project.targets(
        {
            "demo": {"kind": "replay", "path": "recorded/demo.jsonl"},
            "grader": grader,
            "unused": unused,  # a server no benchmark needs is not started
        }
    )
    scored = JUDGED.replace('"Grade the answer to {question}: {response}"', '"{response}\\n7"')
    scored = scored.replace("parse: verdict", "parse: score").replace("agg: rate", "agg: mean")
    project.write("mini.yaml", scored)
    result = project.run("--expert-bench=quick", OUT, *workers, subprocess=True)
    result.assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.judged")["value"] == pytest.approx(0.7)
    assert_stopped(project.report_dir() / "grader.log")  # at the end of the session
    assert not (project.report_dir() / "unused.log").exists()


def test_a_judge_server_that_fails_to_start_stops_the_run_and_the_model_server(
    project: Project,
) -> None:
    broken = {"command": [sys.executable, "-c", "print('judge needs a GPU'); exit(3)"]}
    live = {"kind": "openai", "base_url": LOCAL + "/v1", "model": "m"}
    project.targets(
        {
            "live": {**live, "server": fake_server_block()},
            "grader": {**live, "model": "j", "server": broken},
        },
        default="live",
    )
    project.write("mini.yaml", JUDGED)
    result = project.run("--expert-bench=quick", OUT, subprocess=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "judge needs a GPU" in result.stderr.str()
    assert_stopped(project.report_dir() / "live.log")  # the model's server too


def test_an_unreachable_judge_fails_the_item_in_one_line(project: Project) -> None:
    project.targets(
        {
            "demo": {"kind": "replay", "path": "recorded/demo.jsonl"},
            "grader": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "judge",
                "max_retries": 0,
            },
        }
    )
    project.write("mini.yaml", JUDGED)
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(failed=7)  # and the gate: nothing was judged, incomplete
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*mini[[]q0[]]: mini.yaml: scorers[[]0[]] (judge): judge 'grader'*",
            "INCOMPLETE mini.judged: only 0 of 6 examples scored*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


SCORING = """
from pytest_expertbench.records import Score

def polite(completion, example, word="answer"):
    return Score(1.0) if word in completion.text else Score(0.0, "not polite")
"""


def test_a_python_function_in_the_yaml_is_a_scorer(project: Project) -> None:
    project.pytester.makepyfile(scoring=SCORING)
    project.pytester.makeini("[pytest]\npythonpath = .\n")
    project.write(
        "mini.yaml",
        MINI_YAML.replace(
            "metrics:",
            "  - python: {function: 'scoring:polite', kwargs: {word: 'is 5'}, as: polite}\n"
            "metrics:\n  polite_rate: {of: polite, agg: rate, direction: higher}",
        ),
    )
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.polite_rate")["value"] == 1 / 6


def test_a_python_scorer_that_returns_no_number_fails_its_items_saying_what_it_gave(
    project: Project,
) -> None:
    project.pytester.makepyfile(
        scoring="""
from pytest_expertbench.records import Score

def verdict(completion, example):
    return "yes" if example.id == "q0" else Score(float("nan"), "judge was unsure")
"""
    )
    project.pytester.makeini("[pytest]\npythonpath = .\n")
    project.write(
        "mini.yaml",
        MINI_YAML.replace("metrics:", "  - python: {function: 'scoring:verdict'}\nmetrics:"),
    )
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(failed=7)  # and the gate: no example scored, incomplete
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*q0*mini.yaml: scorers[[]1[]] (python): returned str 'yes', not a number or a Score",
            "*q1*mini.yaml: scorers[[]1[]] (python) gave nan (judge was unsure) for example q1*",
            "INCOMPLETE mini.accuracy: only 0 of 6 examples scored*",
        ]
    )


def test_a_python_scorer_that_cannot_be_imported_stops_the_run(project: Project) -> None:
    project.pytester.makepyfile(scoring=SCORING)
    project.pytester.makeini("[pytest]\npythonpath = .\n")
    project.write(
        "mini.yaml",
        MINI_YAML.replace("metrics:", "  - python: {function: 'scoring:polit'}\nmetrics:"),
    )
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == 4
    assert (
        "mini.yaml: scorers[1].python.function: 'scoring' has no function 'polit'"
        in result.stderr.str()
    )


NUMERIC_MATCH_AS_ZERO = """
from pytest_expertbench.records import Score

def pytest_expertbench_register_scorers(register):
    register("numeric_match", lambda options, context: lambda completion, example: Score(0.0))
"""


def test_a_scorer_named_like_a_built_in_wins_in_its_own_run_only(project: Project) -> None:
    conftest = project.pytester.makeconftest(NUMERIC_MATCH_AS_ZERO)
    # A fresh process, where the built-in family is first imported after the registration
    fresh = project.run("--expert-bench=quick", OUT, subprocess=True)
    fresh.assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.accuracy")["value"] == 0.0
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.accuracy")["value"] == 0.0
    conftest.unlink()  # the next run in this process must not see the last one's scorer
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.accuracy")["value"] == 1.0


SHOUTING_CONFTEST = """
from pytest_expertbench.records import Score

def pytest_expertbench_register_scorers(register):
    register("shouting", lambda options, context: lambda c, e: Score(float(c.text.isupper())))
"""


@pytest.mark.parametrize("where", ["benchmarks_suites", "rootdir"])
def test_a_scorer_from_a_conftest_the_benchmark_directory_sees(
    project: Project, where: str
) -> None:
    folder = project.bench_dir if where == "benchmarks_suites" else project.root
    (folder / "conftest.py").write_text(textwrap.dedent(SHOUTING_CONFTEST))
    project.write("mini.yaml", MINI_YAML.replace("metrics:", "  - shouting: {}\nmetrics:"))
    project.set_replay([{**r, "response": r["response"].upper()} for r in replay_rows("mini")])
    # the benchmark directory is named on the command line, or found by the plugin itself
    for args in [(), ("benchmarks_suites",)]:
        result = project.run("--expert-bench=quick", OUT, *args)
        result.assert_outcomes(passed=6, skipped=1)
        examples = [r for r in project.results() if r["type"] == "example"]
        assert [r["scores"]["shouting"] for r in examples] == [1.0] * 6


def test_a_scorer_from_the_benchmark_directorys_conftest_reaches_xdist_workers(
    project: Project,
) -> None:
    (project.bench_dir / "conftest.py").write_text(textwrap.dedent(SHOUTING_CONFTEST))
    project.write("mini.yaml", MINI_YAML.replace("metrics:", "  - shouting: {}\nmetrics:"))
    result = project.run("--expert-bench=quick", OUT, "-n", "2", subprocess=True)
    result.assert_outcomes(passed=6, skipped=1)
    examples = [r for r in project.results() if r["type"] == "example"]
    assert [r["scores"]["shouting"] for r in examples] == [0.0] * 6  # the replay is lowercase


def test_a_target_kind_from_an_installed_package_is_found_by_its_entry_point(
    project: Project,
) -> None:
    site = project.root / "site"
    (site / "oracle_targets").mkdir(parents=True)
    (site / "oracle_targets" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from pytest_expertbench.records import Completion

            class Oracle:
                live = True

                def __init__(self, spec):
                    self.name = spec.name
                    self.last_word = spec.options.get("last_word", True)

                def identity(self):
                    return {"kind": "oracle"}

                async def complete(self, request, client):
                    return Completion(text="#### " + request.fields["answer"].split()[-1])
            """
        )
    )
    dist = site / "oracle_targets-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: oracle-targets\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pytest_expertbench.targets]\noracle = oracle_targets:Oracle\n"
    )
    project.targets({"sage": {"kind": "oracle"}}, default="sage")
    project.pytester.makeini("[pytest]\npythonpath = site\n")  # as if pip-installed there
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results(), "mini.accuracy")["value"] == 1.0


LONG_ENOUGH_CONFTEST = """
from pytest_expertbench.records import Score
from pytest_expertbench.scorers import OptionReader

def long_enough(options, context):
    reader = OptionReader(options)
    least = reader.whole("least")
    reader.finish()
    return lambda c, e: Score(float(len(c.text) >= least))

def pytest_expertbench_register_scorers(register):
    register("long_enough", long_enough)
"""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{least: many}", "scorers[1].long_enough.least: expected a whole number of 0 or more"),
        ("{least: 3, most: 9}", "scorers[1].long_enough.most: unknown option"),
        ("{}", "scorers[1].long_enough.least: this option is required"),
    ],
)
def test_a_third_party_scorer_reads_its_options_with_the_public_reader(
    project: Project, options: str, message: str
) -> None:
    project.pytester.makeconftest(LONG_ENOUGH_CONFTEST)
    project.write(
        "mini.yaml", MINI_YAML.replace("metrics:", f"  - long_enough: {options}\nmetrics:")
    )
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"mini.yaml: {message}" in result.stderr.str()  # the file, the option, the fault


def test_a_third_party_scorer_with_good_options_scores(project: Project) -> None:
    project.pytester.makeconftest(LONG_ENOUGH_CONFTEST)
    project.write(
        "mini.yaml", MINI_YAML.replace("metrics:", "  - long_enough: {least: 1}\nmetrics:")
    )
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    examples = [r for r in project.results() if r["type"] == "example"]
    assert [r["scores"]["long_enough"] for r in examples] == [1.0] * 6
