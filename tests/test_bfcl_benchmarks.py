"""The shipped BFCL benchmarks: what they name, and their scores when run through the plugin.

The runs read BFCL's files from ../shared/datasets/bfcl (skipped where absent), with the
shipped YAML's two hub files replaced by those files and nothing else changed. A Python
model answers each question as a server that was sent the converted tools would: with
the accepted call (accuracy 1.0), or with one of the wrong (or right) answers
tests/test_bfcl_fidelity.py builds, whose BFCL verdict each example's score must equal.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.row_tools import sent_name
from tests.helpers import REPO, SHARED_DATASETS, Project
from tests.test_bfcl_fidelity import VERDICT, Case, _cached_cases

SHIPPED = REPO / "benchmarks_suites"
BFCL = SHARED_DATASETS / "bfcl"
HUB = "gorilla-llm/Berkeley-Function-Calling-Leaderboard"
# benchmark -> (its hub file, its answers' hub file or None, the shared category)
BENCHMARKS = {
    "bfcl_simple": ("BFCL_v3_simple.json", "possible_answer/BFCL_v3_simple.json", "simple_python"),
    "bfcl_multiple": ("BFCL_v3_multiple.json", "possible_answer/BFCL_v3_multiple.json", "multiple"),
    "bfcl_irrelevance": ("BFCL_v3_irrelevance.json", None, "irrelevance"),
}
ACCURACY_SCORER = {"bfcl_simple": "argument_match", "bfcl_multiple": "argument_match"}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_the_shipped_bfcl_benchmarks_name_the_hub_files(name: str) -> None:
    questions, answers, _ = BENCHMARKS[name]
    bench = load_benchmark(SHIPPED / f"{name}.yaml")
    assert bench.name == name
    hub = bench.dataset.hub
    assert hub is not None and (hub.path, hub.file) == (HUB, questions)
    assert bench.dataset.id_field == "id"
    assert dict(bench.suites) == {"standard": None, "comprehensive": None}  # not quick
    assert bench.tools_from is not None and bench.tools_from.field == "function"
    assert bench.prompt == "{question[0][0][content]}"
    scorer = ACCURACY_SCORER.get(name, "fallback")
    accuracy = next(m for m in bench.metrics if m.name == "accuracy")
    assert (accuracy.of, accuracy.direction) == (scorer, "higher")
    join = bench.dataset.join
    if answers is None:
        assert join is None
    else:
        assert join is not None and join.hub is not None
        assert (join.hub.path, join.hub.file, join.by) == (HUB, answers, "id")
        assert dict(join.fields) == {"expected": "ground_truth"}


def chosen_case(example_id: str, mode: str) -> Case:
    """The answer the Python model gives to ``example_id``: the accepted one, or (mode
    "mixed") one of the kinds its question allows, spread so that every kind is given."""
    kinds = _cases_by_id()[example_id]
    if mode == "accepted":
        first = "irrelevance_text" if example_id.startswith("irrelevance") else "accepted"
        return next(c for c in kinds if c.kind == first)
    return _mixed()[example_id]


@functools.cache
def _mixed() -> dict[str, Case]:
    """Each question's answer of the kind given least so far (rare kinds, such as an int
    in a float list, are allowed by a few questions only)."""
    given: Counter[str] = Counter()
    chosen = {}
    order = list(VERDICT)
    for example_id, kinds in _cases_by_id().items():
        case = min(kinds, key=lambda c: (given[c.kind], order.index(c.kind)))
        given[case.kind] += 1
        chosen[example_id] = case
    return chosen


@functools.cache
def _cases_by_id() -> dict[str, list[Case]]:
    by_id: dict[str, list[Case]] = {}
    for case in _cached_cases(SHARED_DATASETS):
        by_id.setdefault(case.id, []).append(case)
    return by_id


def answer_as_sent(example_id: str, mode: str) -> dict[str, Any]:
    """The chosen answer as a server answers that was sent the converted tools: each
    called name as it was sent (``math_factorial``)."""
    completion = chosen_case(example_id, mode).completion
    calls = [{"name": sent_name(c.name), "arguments": c.arguments} for c in completion.tool_calls]
    return {"text": completion.text, "tool_calls": calls}


EXPERT = """
from tests.test_bfcl_benchmarks import answer_as_sent

def accepted(prompt, request):
    assert request.tools and all(t["type"] == "function" for t in request.tools)
    return answer_as_sent(request.example_id, "accepted")

def mixed(prompt, request):
    return answer_as_sent(request.example_id, "mixed")
"""


def bfcl_project(project: Project, target: str) -> Project:
    if not BFCL.is_dir():
        pytest.skip(f"BFCL's files are not on this machine ({BFCL})")
    (project.bench_dir / "mini.yaml").unlink()
    for name, (questions, answers, category) in BENCHMARKS.items():
        text = (SHIPPED / f"{name}.yaml").read_text(encoding="utf-8")
        hub_line = f"  hf: {{path: {HUB}, file: {questions}}}\n"
        assert hub_line in text
        text = text.replace(hub_line, f"  file: {BFCL / f'BFCL_v4_{category}.json'}\n")
        if answers is not None:
            answer_line = f"    hf: {{file: {answers}}}\n"
            assert answer_line in text
            local = BFCL / f"possible_answer_BFCL_v4_{category}.json"
            text = text.replace(answer_line, f"    file: {local}\n")
        project.write(f"{name}.yaml", text)
    project.pytester.makepyfile(expert=EXPERT)
    project.pytester.makeini(f"[pytest]\npythonpath = . {REPO}\n")
    project.targets({"local": {"kind": "python", "function": f"expert:{target}"}}, "local")
    return project


def _run(project: Project) -> list[dict[str, Any]]:
    result = project.run("--expert-bench=standard", "-q", "--expert-bench-report-dir=reports/out")
    assert result.ret in (0, 1), result.stdout.str()[-2000:]
    return project.results()


def test_the_accepted_answers_score_one_on_every_question(project: Project) -> None:
    rows = _run(bfcl_project(project, "accepted"))
    for name, count in (("bfcl_simple", 400), ("bfcl_multiple", 200), ("bfcl_irrelevance", 240)):
        accuracy = project.metric(rows, f"{name}.accuracy")
        assert (accuracy["value"], accuracy["samples_used"]) == (1.0, count), name
    selection = project.metric(rows, "bfcl_multiple.tool_selection_accuracy")
    assert selection["value"] == 1.0


def test_each_kind_of_answer_gets_bfcls_verdict_through_the_plugin(project: Project) -> None:
    rows = _run(bfcl_project(project, "mixed"))
    examples = [r for r in rows if r.get("type") == "example"]
    assert len(examples) == 840
    given: Counter[str] = Counter()
    wrong = []
    for row in examples:
        case = chosen_case(row["id"], "mixed")
        given[case.kind] += 1
        scorer = ACCURACY_SCORER.get(row["benchmark"], "fallback")
        if row["scores"][scorer] != case.verdict:
            wrong.append((row["id"], case.kind, row["scores"][scorer], row.get("details")))
    assert wrong == []
    assert set(given) == set(VERDICT), set(VERDICT) - set(given)  # every kind is given
