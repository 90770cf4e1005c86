"""Tokens and cost: the usage a server reports, as scores, and per benchmark in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_expertbench.config import ConfigError, Price
from pytest_expertbench.records import Completion
from pytest_expertbench.run import usage_scores
from pytest_expertbench.targets_file import load_targets
from tests.helpers import ANSWERS, MINI_YAML, Project
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
JUDGED = """\
name: mini
dataset: {file: data/mini.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
generation: {temperature: 0}
scorers:
  - numeric_match: {target: "{answer}"}
  - judge:
      target: grader
      rubric: "Grade the answer to {question}: {response}"
      parse: verdict
metrics:
  accuracy: {of: numeric_match, direction: higher}
  judged: {of: judge, agg: rate, direction: higher}
  answer_tokens: {of: completion_tokens, agg: mean, direction: lower}
  cost: {of: cost_usd, agg: sum, direction: lower}
"""
# The fake server counts words: each question is 5 (its prompt), each answer 4
# ("The answer is 5."); each rubric 13 and each verdict 1.
MODEL_PRICE = {"input_per_mtok": 1000, "output_per_mtok": 5000}  # $0.025 an example
JUDGE_PRICE = {"input_per_mtok": 100, "output_per_mtok": 100}  # $0.0014 a verdict
LINE = "tokens mini: model live 30 in, 24 out, $0.1500; judge grader 78 in, 6 out, $0.0084"


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_the_tokens_and_cost_of_the_model_and_its_judge(
    project: Project, workers: tuple[str, ...]
) -> None:
    verdicts = {f"Grade the answer to {text}: {answer}": "PASS" for text, answer in ANSWERS.items()}
    with FakeOpenAI(answers=ANSWERS) as model, FakeOpenAI(answers=verdicts) as grader:
        project.targets(
            {
                "live": {"kind": "openai", "base_url": model.base_url, "model": "m"}
                | {"price": MODEL_PRICE},
                "grader": {"kind": "openai", "base_url": grader.base_url, "model": "judge"}
                | {"price": JUDGE_PRICE},
            },
            default="live",
        )
        project.write("mini.yaml", JUDGED)
        result = project.run("--expert-bench=quick", *workers, OUT)
    result.assert_outcomes(passed=6, skipped=1)  # the gate skips: no baseline
    rows = project.results()
    examples = [r for r in rows if r["type"] == "example"]
    assert len(examples) == 6
    for row in examples:
        assert row["scores"]["prompt_tokens"] == 5
        assert row["scores"]["completion_tokens"] == 4
        assert row["scores"]["cost_usd"] == pytest.approx(0.025)
    assert project.metric(rows, "mini.answer_tokens")["value"] == 4
    assert project.metric(rows, "mini.cost")["value"] == pytest.approx(0.15)
    assert project.metric(rows, "mini.judged")["value"] == 1.0
    result.stdout.fnmatch_lines(["requests mini: 6 asked*", LINE])
    summary = (project.report_dir() / "summary.md").read_text(encoding="utf-8")
    assert f"_{LINE}_" in summary


def test_a_target_without_a_price_has_tokens_but_no_cost(project: Project) -> None:
    with FakeOpenAI(answers=ANSWERS) as model:
        project.targets(
            {"live": {"kind": "openai", "base_url": model.base_url, "model": "m"}}, default="live"
        )
        result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, skipped=1)
    scores = next(r for r in project.results() if r["type"] == "example")["scores"]
    assert (scores["prompt_tokens"], scores["completion_tokens"]) == (5, 4)
    assert "cost_usd" not in scores
    result.stdout.fnmatch_lines(["tokens mini: model live 30 in, 24 out"])


def test_a_target_that_reports_no_usage_has_no_token_scores_nor_line(project: Project) -> None:
    tokens = "  answer_tokens: {of: completion_tokens, agg: mean, direction: lower}\n"
    project.write("mini.yaml", MINI_YAML + tokens)
    result = project.run("--expert-bench=quick", OUT)  # the replay target: no usage
    result.assert_outcomes(passed=6, skipped=1)
    rows = project.results()
    scores = next(r for r in rows if r["type"] == "example")["scores"]
    assert not {"prompt_tokens", "completion_tokens", "cost_usd"} & set(scores)
    assert not [r for r in rows if r.get("metric_id") == "mini.answer_tokens"]
    assert "tokens mini" not in result.stdout.str()


def test_a_negative_price_stops_the_run_naming_the_file_and_key(project: Project) -> None:
    price = {"input_per_mtok": -1, "output_per_mtok": 2}
    project.targets({"demo": {"kind": "replay", "path": "recorded/demo.jsonl", "price": price}})
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == 4
    result.stderr.fnmatch_lines(
        ["*targets.yaml: targets.demo.price.input_per_mtok: expected a number of 0 or more*"]
    )


@pytest.mark.parametrize(
    ("price", "key", "message"),
    [
        ({"input_per_mtok": 1, "output_per_mtok": "cheap"}, "output_per_mtok", "a number"),
        ({"input_per_mtok": 1}, "output_per_mtok", "this key is required"),
        ({"input_per_mtok": 1, "output_per_mtok": 2, "per": 3}, "per", "unknown key"),
        ("free", "", "expected a mapping"),
    ],
)
def test_a_bad_price_is_a_config_error(
    tmp_path: Path, price: object, key: str, message: str
) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        f'targets: {{m: {{kind: python, function: "a:b", price: {price!r}}}}}\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=message) as raised:
        load_targets(path)
    assert raised.value.key == "targets.m.price" + (f".{key}" if key else "")
    assert raised.value.path == path


def test_a_price_is_read_per_million_tokens(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "targets: {m: {kind: python, function: 'a:b', "
        "price: {input_per_mtok: 3, output_per_mtok: 15.5}}}\n",
        encoding="utf-8",
    )
    spec = load_targets(path).targets["m"]
    assert spec.price == Price(3.0, 15.5)
    assert "price" not in spec.options  # not the kind's option, nor the cache key's
    assert spec.price.cost_usd(1_000_000, 2_000_000) == pytest.approx(34.0)


def test_usage_scores_are_only_what_the_target_reported() -> None:
    price = Price(1.0, 2.0)
    both = Completion("x", prompt_tokens=10, completion_tokens=5)
    assert usage_scores(both, price) == {
        "prompt_tokens": 10.0,
        "completion_tokens": 5.0,
        "cost_usd": pytest.approx(20e-6),
    }
    assert usage_scores(both, None) == {"prompt_tokens": 10.0, "completion_tokens": 5.0}
    half = Completion("x", completion_tokens=5)
    assert usage_scores(half, price) == {"completion_tokens": 5.0}  # no cost from half a count
    assert usage_scores(Completion("x"), price) == {}
