"""``dataset.where``: only the rows whose field holds one of the given values, before
sampling; a wrong column or a filter that keeps nothing is a ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.config import Benchmark, ConfigError
from pytest_expertbench.datasets import load_examples
from tests.helpers import write_jsonl

ROWS = [
    {"id": "s1", "prompt": "a", "label": "safe", "type": "homonyms", "flag": True},
    {"id": "s2", "prompt": "b", "label": "safe", "type": "figurative", "flag": 1},
    {"id": "u1", "prompt": "c", "label": "unsafe", "type": "contrast_homonyms", "flag": False},
    {"id": "u2", "prompt": "d", "label": "unsafe", "type": "contrast_figurative", "flag": 1},
]


def _bench(
    tmp_path: Path, where: str, suite_size: str = "all", file: str = "rows.jsonl"
) -> Benchmark:
    if file == "rows.jsonl":
        write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path = tmp_path / "b.yaml"
    path.write_text(
        f"""\
dataset: {{file: {file}, id: id, where: {where}}}
suites: {{quick: {suite_size}}}
prompt: "{{prompt}}"
scorers: [{{exact_match: {{target: x}}}}]
metrics: {{m: {{of: exact_match, direction: higher}}}}
""",
        encoding="utf-8",
    )
    return load_benchmark(path)


def _ids(tmp_path: Path, where: str, size: str = "all") -> list[str]:
    examples = load_examples(_bench(tmp_path, where, size), "quick")
    return [e.id for e in examples.examples]


def test_one_value_keeps_the_rows_holding_it(tmp_path: Path) -> None:
    assert _ids(tmp_path, "{label: safe}") == ["s1", "s2"]
    assert _ids(tmp_path, "{label: unsafe}") == ["u1", "u2"]


def test_a_list_keeps_rows_holding_any_of_its_values(tmp_path: Path) -> None:
    assert _ids(tmp_path, "{type: [homonyms, contrast_figurative]}") == ["s1", "u2"]


def test_several_fields_must_all_hold(tmp_path: Path) -> None:
    assert _ids(tmp_path, "{label: unsafe, type: [homonyms, contrast_homonyms]}") == ["u1"]


def test_true_is_not_one(tmp_path: Path) -> None:
    assert _ids(tmp_path, "{flag: true}") == ["s1"]
    assert _ids(tmp_path, "{flag: 1}") == ["s2", "u2"]


def test_the_filter_comes_before_sampling(tmp_path: Path) -> None:
    examples = load_examples(_bench(tmp_path, "{label: safe}", "1"), "quick")
    assert examples.total == 2
    assert [e.id for e in examples.examples] in (["s1"], ["s2"])
    assert "where label=safe" in examples.source


def test_a_column_the_dataset_lacks_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _ids(tmp_path, "{labl: safe}")
    assert error.value.key == "dataset.where.labl"
    assert "no column 'labl'" in str(error.value)


def test_a_filter_that_keeps_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _ids(tmp_path, "{label: Safe}")
    assert error.value.key == "dataset.where"
    assert "no row of 4" in str(error.value)


def test_a_mapping_as_the_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _bench(tmp_path, "{label: {eq: safe}}")
    assert error.value.key == "dataset.where.label"


def test_xstest_splits_into_its_safe_and_unsafe_halves(
    tmp_path: Path, shared_datasets: Path
) -> None:
    csv = shared_datasets / "xstest" / "xstest_prompts.csv"
    safe = load_examples(_bench(tmp_path, "{label: safe}", file=str(csv)), "quick")
    unsafe = load_examples(_bench(tmp_path, "{label: unsafe}", file=str(csv)), "quick")
    assert (len(safe.examples), len(unsafe.examples)) == (250, 200)
    assert all(e.fields["type"].startswith("contrast_") for e in unsafe.examples)
