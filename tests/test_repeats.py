"""Repeats for sampled generation, as users meet them: ``repeats: K`` asks each example K
times with seeds s … s+K-1, the example's score is the mean of its repeats, pass@k,
pass^k and flaky are aggregated from the repeats, the cache and a recording keep each
repeat apart, and ``expertbench baseline merge`` builds one baseline from several runs."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench import baseline, metrics, stats
from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.cli import main
from pytest_expertbench.config import ConfigError, MetricSpec
from pytest_expertbench.records import Request
from tests.helpers import QUESTIONS, Project, replay_rows, short_benchmark
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
TEXT = {qid: text for qid, text, _ in QUESTIONS}
RIGHT = {qid: f"The answer is {answer.split()[-1]}." for qid, _, answer in QUESTIONS}
WRONG = "The answer is 1000."
# Which of the seeds 10, 11, 12 each example gets right: q0 all, q1 two, q2 one, the rest none.
RIGHT_SEEDS = {"q0": (10, 11, 12), "q1": (10, 11), "q2": (10,)}

REPEATED = """\
name: sampled
dataset: {file: data/mini.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
generation: {temperature: 0.7, seed: 10}
repeats: 3
scorers: [{numeric_match: {target: "{answer}"}}]
metrics:
  accuracy: {of: numeric_match, agg: mean, direction: higher}
  pass1: {of: numeric_match, agg: pass@1, direction: higher}
  pass2: {of: numeric_match, agg: pass@2, direction: higher}
  all2: {of: numeric_match, agg: pass^2, direction: higher}
  flaky: {of: numeric_match, agg: flaky, direction: lower}
"""


def by_seed() -> dict[str, Any]:
    return {
        TEXT[qid]: {
            "by_seed": {str(s): RIGHT[qid] for s in RIGHT_SEEDS.get(qid, ())},
            "default": WRONG,
        }
        for qid in TEXT
    }


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=by_seed()) as fake:
        yield fake


@pytest.fixture
def sampled(project: Project, server: FakeOpenAI) -> Project:
    (project.bench_dir / "mini.yaml").unlink()
    project.write("sampled.yaml", REPEATED)
    target = {"kind": "openai", "base_url": server.base_url, "model": "fake"}
    project.targets({"live": target}, default="live")
    return project


def example_rows(project: Project) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in project.results() if r.get("type") == "example"}


def metric_values(project: Project) -> dict[str, float]:
    rows = project.results()
    return {r["metric_id"]: r["value"] for r in rows if r.get("type") == "metric"}


def seeds_asked(server: FakeOpenAI) -> Counter[Any]:
    return Counter(r.body.get("seed") for r in server.received)


def test_each_example_is_asked_k_times_with_seeds_s_to_s_plus_k_minus_1(
    sampled: Project, server: FakeOpenAI
) -> None:
    result = sampled.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, skipped=1)  # one item per example; the gate skips
    assert server.total == 18
    assert all(server.counts[text] == 3 for text in TEXT.values())
    assert seeds_asked(server) == {10: 6, 11: 6, 12: 6}
    rows = example_rows(sampled)
    assert rows["q1"]["repeat_scores"]["numeric_match"] == [1.0, 1.0, 0.0]
    assert rows["q1"]["scores"]["numeric_match"] == pytest.approx(2 / 3)  # the mean
    assert rows["q2"]["scores"]["numeric_match"] == pytest.approx(1 / 3)
    latencies = rows["q0"]["repeat_scores"]["latency_ms"]
    assert rows["q0"]["scores"]["latency_ms"] == pytest.approx(sum(latencies) / 3)


def test_pass_at_k_pass_hat_k_and_flaky_on_a_constructed_case(
    sampled: Project, server: FakeOpenAI
) -> None:
    sampled.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    values = metric_values(sampled)
    # q0 [1,1,1], q1 [1,1,0], q2 [1,0,0], q3-q5 [0,0,0] (n = 3 repeats each):
    assert values["sampled.accuracy"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 6)
    assert values["sampled.pass1"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 6)
    # pass@2 = 1 - C(n-c, 2)/C(3, 2): q0 1, q1 1, q2 1 - 1/3
    assert values["sampled.pass2"] == pytest.approx((1 + 1 + 2 / 3) / 6)
    # pass^2 = C(c, 2)/C(3, 2): q0 1, q1 1/3, q2 0
    assert values["sampled.all2"] == pytest.approx((1 + 1 / 3) / 6)
    assert values["sampled.flaky"] == pytest.approx(2 / 6)  # q1 and q2 disagree with themselves
    assert example_rows(sampled)["q2"]["scores"]["numeric_match:pass@2"] == pytest.approx(2 / 3)


def test_the_option_sets_repeats_for_benchmarks_that_do_not_say_and_the_file_wins(
    project: Project, server: FakeOpenAI
) -> None:
    target = {"kind": "openai", "base_url": server.base_url, "model": "fake"}
    project.targets({"live": target}, default="live")
    result = project.run("--expert-bench=quick", "--expert-bench-repeats=2", OUT)
    result.assert_outcomes(passed=6, skipped=1)
    assert server.total == 12 and seeds_asked(server) == {0: 6, 1: 6}  # no seed: 0, 1
    server.reset()
    yaml = (project.bench_dir / "mini.yaml").read_text()
    project.write("mini.yaml", yaml + "repeats: 1\n")
    project.run("--expert-bench=quick", "--expert-bench-repeats=2", OUT)
    # the file's own repeats: 1 wins, and a request asked once is sent as written
    assert server.total == 6 and seeds_asked(server) == {None: 6}


def test_a_pass_at_k_beyond_the_repeats_stops_the_run_naming_the_metric(
    project: Project, server: FakeOpenAI
) -> None:
    target = {"kind": "openai", "base_url": server.base_url, "model": "fake"}
    project.targets({"live": target}, default="live")
    extra = "  best_of_2: {of: numeric_match, agg: pass@2, direction: higher}\n"
    project.write("mini.yaml", short_benchmark("mini", extra))
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        ["*mini.yaml: metrics.best_of_2.agg: pass@2 needs 2 answers*(--expert-bench-repeats)*"]
    )
    ok = project.run("--expert-bench=quick", "--expert-bench-repeats=2", OUT)
    ok.assert_outcomes(passed=6, skipped=1)


def test_the_cache_keeps_each_repeat_apart(sampled: Project, server: FakeOpenAI) -> None:
    sampled.run("--expert-bench=quick", OUT).assert_outcomes(passed=6, skipped=1)
    first = {qid: row["repeat_scores"] for qid, row in example_rows(sampled).items()}
    again = sampled.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
    again.assert_outcomes(passed=6, skipped=1)
    assert server.total == 18  # every repeat's answer came from the cache, none asked again
    second = example_rows(sampled)
    assert {qid: row["repeat_scores"]["numeric_match"] for qid, row in second.items()} == {
        qid: scores["numeric_match"] for qid, scores in first.items()
    }


def test_a_repeat_after_the_first_has_its_own_cache_key_and_the_first_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    cache = ResponseCache(tmp_path, "off")
    request = Request("b", "q0", "What?", generation={"temperature": 0.7, "seed": 1})
    identity = {"kind": "openai", "model": "m"}
    assert cache.key(identity, request) != cache.key(
        identity, Request(**{**vars(request), "repeat": 1})
    )
    legacy = Request("b", "q0", "What?", generation={"temperature": 0.7, "seed": 1}, repeat=0)
    assert cache.key(identity, legacy) == cache.key(identity, request)


def test_a_recording_with_repeats_replays_each_repeat(sampled: Project, server: FakeOpenAI) -> None:
    record = sampled.root / "rec.jsonl"
    sampled.run("--expert-bench=quick", OUT, f"--expert-bench-record={record}").assert_outcomes(
        passed=6, skipped=1
    )
    recorded = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(recorded) == 18
    assert Counter(row.get("repeat", 0) for row in recorded) == {0: 6, 1: 6, 2: 6}
    live = metric_values(sampled)
    live_rows = example_rows(sampled)
    sampled.targets({"demo": {"kind": "replay", "path": str(record)}})
    replayed = sampled.run("--expert-bench=quick", OUT)
    replayed.assert_outcomes(passed=6, skipped=1)
    assert server.total == 18  # nothing asked of the server
    assert metric_values(sampled) == live
    for name in ("numeric_match", "latency_ms"):  # tokens_per_s: only the live server's
        assert {q: r["repeat_scores"][name] for q, r in example_rows(sampled).items()} == {
            q: r["repeat_scores"][name] for q, r in live_rows.items()
        }


def test_merge_averages_two_runs_into_a_baseline_the_gate_uses(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.set_replay(replay_rows("mini", wrong=["q0"]))
    project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/a")
    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2"]))
    project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/b")
    out = project.root / "baselines" / "demo" / "quick" / "mini.json"
    runs = [str(project.report_dir(name) / "results.jsonl") for name in ("a", "b")]
    assert main(["baseline", "merge", str(out), *runs]) == 0
    assert "merged 2 runs of mini" in capsys.readouterr().out
    merged = baseline.load(out)
    assert merged is not None
    assert merged.examples["q0"]["numeric_match"] == 0.0
    assert merged.examples["q1"]["numeric_match"] == 0.5
    assert merged.examples["q3"]["numeric_match"] == 1.0
    assert merged.metrics["accuracy"].value == pytest.approx((0 + 0.5 + 0.5 + 1 + 1 + 1) / 6)
    assert merged.metrics["accuracy"].meta["runs"] == 2
    project.set_replay(replay_rows("mini", wrong=["q0", "q1"]))  # between the two runs
    project.run("--expert-bench=quick", OUT).assert_outcomes(passed=7)  # the gate passes too


def test_merge_refuses_runs_of_other_examples_or_benchmarks(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/a")
    project.run("--expert-bench=small", "--expert-bench-report-dir=reports/b")  # 3 examples
    a, b = (str(project.report_dir(name) / "results.jsonl") for name in ("a", "b"))
    out = project.root / "merged.json"
    assert main(["baseline", "merge", str(out), a, b]) == 2
    assert "ran other examples" in capsys.readouterr().err
    project.write("mini.yaml", short_benchmark("other"))
    project.set_replay(replay_rows("other"))
    project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/c")
    c = str(project.report_dir("c") / "results.jsonl")
    assert main(["baseline", "merge", str(out), a, c]) == 2
    assert "merge runs of one benchmark" in capsys.readouterr().err
    assert main(["baseline", "merge", str(out), a]) == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("repeats: 0\n", "repeats"),
        ("repeats: three\n", "repeats"),
        ("repeats: 2\ngeneration: {temperature: 1, seed: x}\n", "generation.seed"),
    ],
)
def test_a_bad_repeats_is_a_config_error_naming_the_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    body = short_benchmark("b").replace("generation: {temperature: 0}\n", "")
    if "generation" not in text:
        body += "generation: {temperature: 0}\n"
    path = tmp_path / "b.yaml"
    path.write_text(body + text)
    with pytest.raises(ConfigError) as raised:
        load_benchmark(path)
    assert raised.value.path == path and raised.value.key == key


def test_a_pass_at_k_above_the_files_repeats_is_refused_at_load(tmp_path: Path) -> None:
    extra = "  p3: {of: numeric_match, agg: pass@3, direction: higher}\nrepeats: 2\n"
    path = tmp_path / "b.yaml"
    path.write_text(short_benchmark("b", extra))
    with pytest.raises(ConfigError) as raised:
        load_benchmark(path)
    assert raised.value.key == "metrics.p3.agg" and "set repeats: 3" in raised.value.message


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_pass_at_k_and_pass_hat_k_equal_the_share_of_k_subsets(n: int) -> None:
    for correct in range(n + 1):
        scores = [1.0] * correct + [0.0] * (n - correct)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(scores, k))
            any_right = sum(max(s) > 0 for s in subsets) / len(subsets)
            all_right = sum(min(s) > 0 for s in subsets) / len(subsets)
            assert metrics.per_example(f"pass@{k}", scores) == pytest.approx(any_right)
            assert metrics.per_example(f"pass^{k}", scores) == pytest.approx(all_right)
    assert metrics.per_example("flaky", [1.0, 1.0]) == 0.0
    assert metrics.per_example("flaky", [0.5, 1.0]) == 1.0


def test_the_gate_has_a_paired_test_for_every_repeat_aggregation() -> None:
    old, new = [1.0, 0.5, 1.0, 0.75] * 5, [0.0, 0.5, 0.25, 0.75] * 5
    for agg in ("pass@1", "pass@7", "pass^3", "flaky"):
        assert agg in stats.STATISTICS
        test = stats.paired_test(agg, old, new)
        assert test.p_down < 0.05
    spec = MetricSpec("f", "s", "flaky", "lower")
    result = metrics.aggregate(spec, "b", [0.0, 1.0, 0.0, 0.0])
    assert result is not None and result.meta["ci_method"] == "wilson"
    assert result.meta["of"] == "s:flaky" and math.isclose(result.value, 0.25)
