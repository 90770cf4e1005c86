"""The shipped XSTest benchmarks: what they name, and their rates when run through the plugin.

The runs read XSTest's prompts from ../shared/datasets/xstest (skipped where absent), with
the shipped YAML's hub source replaced by that file and nothing else changed.
"""

from __future__ import annotations

import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.config import HubSource
from tests.helpers import REPO, SHARED_DATASETS, Project

SHIPPED = REPO / "benchmarks_suites"
PROMPTS = SHARED_DATASETS / "xstest" / "xstest_prompts.csv"
HUB_LINE = "  hf: {path: Paul/XSTest, split: train}\n"
# A model that refuses what XSTest calls unsafe and answers the rest; one that refuses all.
EXPERT = """
def calibrated(prompt, fields):
    if fields["label"] == "unsafe":
        return "I'm sorry, but I can't help with that."
    return "Sure. Here is a short, factual answer to your question."

def cautious(prompt):
    return "It is not appropriate for me to answer that."
"""


@pytest.mark.parametrize(
    ("name", "label", "metric", "direction"),
    [
        ("xstest_safe", "safe", "over_refusal_rate", "lower"),
        ("xstest_unsafe", "unsafe", "refusal_rate", "higher"),
    ],
)
def test_the_shipped_xstest_benchmarks_name_the_hub_dataset_and_one_half(
    name: str, label: str, metric: str, direction: str
) -> None:
    bench = load_benchmark(SHIPPED / f"{name}.yaml")
    assert bench.name == name
    assert bench.dataset.hub == HubSource(path="Paul/XSTest", name=None, split="train")
    assert bench.dataset.id_field == "id"
    assert dict(bench.dataset.where) == {"label": (label,)}
    assert dict(bench.suites) == {"standard": None, "comprehensive": None}  # not quick
    assert bench.prompt == "{prompt}"
    assert [s.kind for s in bench.scorers] == ["refusal"]
    rate = next(m for m in bench.metrics if m.name == metric)
    assert (rate.of, rate.direction) == ("refusal", direction)


def xstest_project(project: Project, target: str) -> Project:
    if not PROMPTS.is_file():
        pytest.skip(f"XSTest's prompts are not on this machine ({PROMPTS})")
    (project.bench_dir / "mini.yaml").unlink()
    for name in ("xstest_safe", "xstest_unsafe"):
        text = (SHIPPED / f"{name}.yaml").read_text(encoding="utf-8")
        assert HUB_LINE in text
        project.write(f"{name}.yaml", text.replace(HUB_LINE, f"  file: {PROMPTS}\n"))
    project.pytester.makepyfile(expert=EXPERT)
    project.pytester.makeini("[pytest]\npythonpath = .\n")
    project.targets({"local": {"kind": "python", "function": f"expert:{target}"}}, "local")
    return project


@pytest.mark.parametrize(
    ("target", "over_refusal", "refusal"), [("calibrated", 0.0, 1.0), ("cautious", 1.0, 1.0)]
)
def test_an_xstest_run_reports_the_rates_over_250_safe_and_200_unsafe_prompts(
    project: Project, target: str, over_refusal: float, refusal: float
) -> None:
    xstest_project(project, target)
    result = project.run("--expert-bench=standard", "-q", "--expert-bench-report-dir=reports/out")
    result.assert_outcomes(passed=450, skipped=2)  # the two gates: no baseline
    rows = project.results()
    safe = project.metric(rows, "xstest_safe.over_refusal_rate")
    unsafe = project.metric(rows, "xstest_unsafe.refusal_rate")
    assert (safe["value"], safe["samples_used"]) == (over_refusal, 250)
    assert (unsafe["value"], unsafe["samples_used"]) == (refusal, 200)
    examples = [r for r in rows if r.get("type") == "example"]
    names = [r["benchmark"] for r in examples]
    assert (names.count("xstest_safe"), names.count("xstest_unsafe")) == (250, 200)
