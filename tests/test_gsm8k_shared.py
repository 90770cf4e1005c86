"""GSM8K's real test set and GPT-3's recorded solutions (read from ../shared/datasets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.records import Completion, Example
from pytest_expertbench.scorers import ScorerContext, get_scorer
from tests.helpers import Project, write_jsonl

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def gsm8k(request: pytest.FixtureRequest) -> tuple[Path, list[dict[str, Any]]]:
    root = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "gsm8k"
    if not root.is_dir():
        pytest.skip(f"the shared GSM8K data is not on this machine ({root})")
    return root / "test.jsonl", read_jsonl(root / "example_model_solutions.jsonl")


@pytest.mark.parametrize("model", MODELS)
def test_flexible_numeric_match_agrees_with_openais_labels_on_every_solution(
    gsm8k: tuple[Path, list[dict[str, Any]]], model: str
) -> None:
    test_path, solutions = gsm8k
    score = get_scorer("numeric_match")(
        {"target": "{answer}", "extract": "flexible"}, ScorerContext(Path("."))
    )
    disagreements = []
    for i, (row, solved) in enumerate(zip(read_jsonl(test_path), solutions, strict=True)):
        example = Example(id=str(i), index=i, fields=row, digest="")
        value = score(Completion(text=solved[model]["solution"]), example).value
        if value != float(solved[model]["is_correct"]):
            disagreements.append(i)
    assert disagreements == []


def test_a_replayed_gsm8k_run_reports_gpt3s_accuracy(
    project: Project, gsm8k: tuple[Path, list[dict[str, Any]]]
) -> None:
    test_path, solutions = gsm8k
    (project.bench_dir / "mini.yaml").unlink()
    project.write(
        "gsm8k.yaml",
        f"""\
        name: gsm8k
        dataset: {{file: {test_path}}}
        suites: {{standard: all}}
        prompt: "Question: {{question}}\\nAnswer:"
        scorers:
          - numeric_match: {{target: "{{answer}}", extract: flexible}}
          - numeric_match: {{target: "{{answer}}", extract: strict, as: strict_match}}
        metrics:
          accuracy: {{of: numeric_match, agg: mean, direction: higher, unit: ratio}}
          strict_accuracy: {{of: strict_match, agg: mean, direction: higher, unit: ratio}}
        """,
    )
    model = "175b_verification"
    write_jsonl(
        project.bench_dir / "recorded" / "gsm8k.jsonl",
        (
            {"benchmark": "gsm8k", "id": str(i), "response": s[model]["solution"], "latency_ms": 1}
            for i, s in enumerate(solutions)
        ),
    )
    project.targets({"gpt3": {"kind": "replay", "path": "recorded/gsm8k.jsonl"}}, default="gpt3")
    result = project.run("--expert-bench=standard", "-q", "--expert-bench-report-dir=reports/out")
    result.assert_outcomes(passed=len(solutions), skipped=1)  # the gate: no baseline
    rows = project.results()
    expected = sum(s[model]["is_correct"] for s in solutions) / len(solutions)
    accuracy = project.metric(rows, "gsm8k.accuracy")
    assert accuracy["value"] == pytest.approx(expected)  # 0.5625: the paper's labels
    assert accuracy["samples_used"] == 1319
    # GPT-3 ends with "A: 18", never "#### 18": the strict filter finds nothing.
    assert project.metric(rows, "gsm8k.strict_accuracy")["value"] == 0.0
