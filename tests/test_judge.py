"""The judge scorer and the target pool, against a real OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.config import Benchmark, ConfigError, TargetsFile, TargetSpec
from pytest_expertbench.engine import EngineSettings
from pytest_expertbench.judging import TargetPool
from pytest_expertbench.records import Completion, Example, Request, Score, TargetError
from pytest_expertbench.scorers.judge import JudgeError, read_score, read_verdict, word_pattern
from pytest_expertbench.targets import Target, build_target
from pytest_expertbench.targets_file import load_targets
from pytest_expertbench.template import render
from tests.support.fake_openai import FakeOpenAI

RUBRIC = "Question: {question}\nAnswer: {response}\nGrade it from 0 to 10 as 'Score: N'."
VERDICT_RUBRIC = "Is '{response}' a right answer to '{question}'? Say PASS or FAIL."
EXAMPLE = Example("q1", 0, {"question": "What is 2 + 2?"}, "d")
SETTINGS = EngineSettings(concurrency=4, timeout_s=10.0, max_retries=0)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def targets(tmp_path: Path, server: FakeOpenAI) -> TargetsFile:
    recorded = tmp_path / "judged.jsonl"
    row = {"benchmark": "judge:recorded", "id": "bench:q1", "response": "Score: 6"}
    recorded.write_text(json.dumps(row) + "\n", encoding="utf-8")
    doc = {
        "default": "grader",
        "targets": {
            "grader": {
                "kind": "openai",
                "base_url": server.base_url,
                "model": "judge-m",
                "max_retries": 0,
            },
            "recorded": {"kind": "replay", "path": recorded.name},
        },
    }
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_targets(path)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ResponseCache]:
    opened = ResponseCache(tmp_path / "cache")
    yield opened
    opened.close()


@pytest.fixture
def pool(targets: TargetsFile, cache: ResponseCache) -> Iterator[TargetPool]:
    with TargetPool(targets, build_target, SETTINGS, lambda: cache) as opened:
        yield opened


def write_benchmark(tmp_path: Path, scorer: dict[str, Any]) -> Path:
    doc = {
        "name": "bench",
        "dataset": {"file": "data.jsonl"},
        "suites": {"quick": "all"},
        "prompt": "{question}",
        "scorers": [{"judge": scorer}],
        "metrics": {"quality": {"of": "judge", "direction": "higher"}},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def judge_with(tmp_path: Path, pool: TargetPool | None, **options: Any) -> Benchmark:
    return load_benchmark(write_benchmark(tmp_path, {"target": "grader", **options}), pool)


def judged(bench: Benchmark, response: str, example: Example = EXAMPLE) -> Score:
    return bench.scorers[0].function(Completion(text=response), example)


def rubric_prompt(rubric: str, response: str, example: Example = EXAMPLE) -> str:
    return render(rubric, {**example.fields, "response": response})


def test_the_judge_score_is_its_number_over_the_scale(
    tmp_path: Path, pool: TargetPool, server: FakeOpenAI
) -> None:
    server.answers[rubric_prompt(RUBRIC, "4")] = "The answer is right.\nScore: 8"
    server.answers[rubric_prompt(RUBRIC, "5")] = "Score: 1"
    bench = judge_with(tmp_path, pool, rubric=RUBRIC)
    assert judged(bench, "4") == Score(0.8, "judge said: 'The answer is right. Score: 8'")
    assert judged(bench, "5").value == pytest.approx(0.1)


def test_the_judge_request_carries_the_rendered_rubric_with_the_response(
    tmp_path: Path, pool: TargetPool, server: FakeOpenAI
) -> None:
    bench = judge_with(tmp_path, pool, rubric=RUBRIC, system="You grade {question}")
    judged(bench, "It is 4, of course.")
    (received,) = server.received
    messages = received.body["messages"]
    assert messages[0] == {"role": "system", "content": "You grade What is 2 + 2?"}
    assert messages[-1]["content"] == (
        "Question: What is 2 + 2?\nAnswer: It is 4, of course.\n"
        "Grade it from 0 to 10 as 'Score: N'."
    )
    assert received.body["model"] == "judge-m"
    assert received.body["temperature"] == 0
    assert received.body["max_tokens"] == 256


def test_a_verdict_passes_on_the_pass_word_without_the_fail_word(
    tmp_path: Path, pool: TargetPool, server: FakeOpenAI
) -> None:
    answers = {"4": "Verdict: PASS", "5": "Verdict: fail", "6": "PASS? No: FAIL", "7": "passable"}
    for response, answer in answers.items():
        server.answers[rubric_prompt(VERDICT_RUBRIC, response)] = answer
    bench = judge_with(tmp_path, pool, rubric=VERDICT_RUBRIC, parse="verdict")
    assert judged(bench, "4") == Score(1.0)
    assert judged(bench, "5") == Score(0.0, "judge said: 'Verdict: fail'")
    assert judged(bench, "6").value == 0.0
    assert judged(bench, "7") == Score(0.0, "judge answer had no verdict: 'passable'")


def test_verdict_words_can_be_chosen(tmp_path: Path, pool: TargetPool, server: FakeOpenAI) -> None:
    server.answers[rubric_prompt(VERDICT_RUBRIC, "4")] = "Correct."
    bench = judge_with(
        tmp_path, pool, rubric=VERDICT_RUBRIC, parse="verdict", **{"pass": "correct", "fail": "no"}
    )
    assert judged(bench, "4") == Score(1.0)


def test_an_unparseable_judge_answer_scores_zero_and_says_what_it_was(
    tmp_path: Path, pool: TargetPool, server: FakeOpenAI
) -> None:
    rambling = "I think this answer is quite good overall, " * 5
    server.answers[rubric_prompt(RUBRIC, "4")] = rambling
    score = judged(judge_with(tmp_path, pool, rubric=RUBRIC), "4")
    shown = " ".join(rambling.split())[:80]
    assert score == Score(0.0, f"judge answer had no score: '{shown}…'")


def test_a_second_identical_judgement_comes_from_the_cache(
    tmp_path: Path, targets: TargetsFile, cache: ResponseCache, server: FakeOpenAI
) -> None:
    prompt = rubric_prompt(RUBRIC, "4")
    server.answers[prompt] = "Score: 9"
    scores = []
    for _ in range(2):  # the second pool has fresh engines: only the cache can answer
        with TargetPool(targets, build_target, SETTINGS, lambda: cache) as pool:
            bench = judge_with(tmp_path, pool, rubric=RUBRIC)
            scores += [judged(bench, "4"), judged(bench, "4")]
    assert [s.value for s in scores] == [pytest.approx(0.9)] * 4
    assert server.counts[prompt] == 1


def test_the_judge_request_is_keyed_apart_from_the_model_under_test(
    tmp_path: Path, pool: TargetPool
) -> None:
    bench = load_benchmark(
        write_benchmark(tmp_path, {"target": "recorded", "rubric": RUBRIC}), pool
    )
    assert judged(bench, "4").value == pytest.approx(0.6)  # replayed as judge:recorded, bench:q1


def test_an_unknown_judge_target_is_a_load_error_listing_the_known_ones(
    tmp_path: Path, pool: TargetPool
) -> None:
    path = write_benchmark(tmp_path, {"target": "nobody", "rubric": RUBRIC})
    with pytest.raises(ConfigError) as raised:
        load_benchmark(path, pool)
    assert raised.value.path == path
    assert raised.value.key == "scorers[0].judge.target"
    assert raised.value.message == "unknown target 'nobody' (known: grader, recorded)"


def test_without_targets_the_judge_loads_and_fails_when_scoring(tmp_path: Path) -> None:
    bench = judge_with(tmp_path, None, rubric=RUBRIC)
    with pytest.raises(JudgeError, match="judge 'grader': no targets to ask"):
        judged(bench, "4")


def test_a_failed_judge_request_is_one_line_naming_the_judge(
    tmp_path: Path, pool: TargetPool, server: FakeOpenAI
) -> None:
    server.script(match="Answer: 4", faults=["500"])
    with pytest.raises(JudgeError) as raised:
        judged(judge_with(tmp_path, pool, rubric=RUBRIC), "4")
    message = str(raised.value)
    assert message.startswith("judge 'grader' failed: ") and "500" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "rubric", "this option is required"),
        ({"rubric": "{response"}, "rubric", "malformed template"),
        ({"rubric": RUBRIC, "parse": "stars"}, "parse", "expected one of score, verdict"),
        ({"rubric": RUBRIC, "scale": 0}, "scale", "expected a number above 0"),
        ({"rubric": RUBRIC, "parse": "verdict", "scale": 5}, "scale", "only used with parse"),
        ({"rubric": RUBRIC, "pass": "OK"}, "pass", "only used with parse: verdict"),
        ({"rubric": RUBRIC, "parse": "verdict", "fail": "pass"}, "fail", "must differ"),
        ({"rubric": RUBRIC, "generation": 0}, "generation", "expected a mapping"),
        ({"rubric": RUBRIC, "rubrik": RUBRIC}, "rubrik", "unknown option"),
    ],
)
def test_bad_judge_options_are_load_errors(
    tmp_path: Path, pool: TargetPool, options: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        judge_with(tmp_path, pool, **options)
    assert raised.value.key == f"scorers[0].judge.{key}"
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("answer", "scale", "expected"),
    [
        ("Score: 8", 10, 0.8),
        ("Score: 8/10", 10, 0.8),
        ("7 out of 10. On reflection: 9", 10, 0.9),
        ("4.5", 5, 0.9),
        ("Score: 12", 10, 1.0),
        ("Score: -2", 10, 0.0),
        ("gpt4 says 3", 10, 0.3),
    ],
)
def test_read_score_takes_the_last_number(answer: str, scale: float, expected: float) -> None:
    assert read_score(answer, scale).value == pytest.approx(expected)


def test_verdict_words_match_whole_words_in_any_case() -> None:
    passing, failing = word_pattern("PASS"), word_pattern("FAIL")
    assert read_verdict("pass.", passing, failing).value == 1.0
    assert read_verdict("bypass", passing, failing).value == 0.0
    assert read_verdict("Pass, though some would FAIL it", passing, failing).value == 0.0


# --------------------------------------------------------------------------- the pool


def test_the_pool_names_every_target_and_builds_each_once(
    targets: TargetsFile, server: FakeOpenAI
) -> None:
    built: list[str] = []

    def make_target(spec: TargetSpec) -> Target:
        built.append(spec.name)
        return build_target(spec)

    requests = [Request("judge:grader", f"b:{i}", f"say {i}") for i in range(8)]
    with TargetPool(targets, make_target, SETTINGS) as pool:
        assert pool.names() == {"grader", "recorded"}
        threads = [threading.Thread(target=pool.ask, args=("grader", r)) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert built == ["grader"]
    assert server.total == len(requests)


def test_the_pool_uses_a_targets_own_engine_settings(tmp_path: Path, server: FakeOpenAI) -> None:
    spec = TargetSpec(
        name="slow",
        kind="openai",
        options={"base_url": server.base_url, "model": "m"},
        source=tmp_path / "targets.yaml",
        concurrency=1,
        max_retries=1,
    )
    server.script(match="retry me", faults=["503"])
    targets = TargetsFile(path=spec.source, default=None, targets={"slow": spec})
    settings = EngineSettings(concurrency=4, max_retries=0, backoff_base_s=0.0)
    with TargetPool(targets, build_target, settings) as pool:
        answer = pool.ask("slow", Request("judge:slow", "b:0", "retry me"))
    assert answer.attempts == 2  # the target's max_retries, not the run's


def test_the_pool_reports_unusable_targets_as_target_errors(tmp_path: Path) -> None:
    spec = TargetSpec(name="broken", kind="openai", options={}, source=tmp_path / "targets.yaml")
    targets = TargetsFile(path=spec.source, default=None, targets={"broken": spec})
    request = Request("judge:x", "b:0", "hello")
    with TargetPool(targets, build_target, SETTINGS) as pool:
        with pytest.raises(TargetError, match=r"cannot use the target 'broken': .*base_url"):
            pool.ask("broken", request)
        with pytest.raises(TargetError, match=r"unknown target 'nobody' .*\(known: broken\)"):
            pool.ask("nobody", request)


def test_a_closed_pool_refuses_to_ask(targets: TargetsFile) -> None:
    pool = TargetPool(targets, build_target, SETTINGS)
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.ask("grader", Request("judge:grader", "b:0", "hello"))
