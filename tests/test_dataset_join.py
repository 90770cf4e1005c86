"""JSON read exactly, ``dataset.join`` by a shared key, and one file of a hub repo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.config import Benchmark, ConfigError
from pytest_expertbench.datasets import load_examples
from tests.helpers import write_jsonl

QUESTIONS = [{"id": "q1", "question": "a"}, {"id": "q2", "question": "b"}]
ANSWERS = [
    {"id": "q2", "ground_truth": [{"f": {"x": [2.5]}}]},
    {"id": "q1", "ground_truth": [{"f": {"x": ["", 8.854e-12]}}]},
    {"id": "q9", "ground_truth": []},  # no question asks for it: left out
]


def _bench(tmp_path: Path, dataset: str) -> Benchmark:
    path = tmp_path / "b.yaml"
    path.write_text(
        f"""\
dataset: {dataset}
suites: {{quick: all}}
prompt: "{{question}}"
scorers: [{{exact_match: {{target: x}}}}]
metrics: {{m: {{of: exact_match, direction: higher}}}}
""",
        encoding="utf-8",
    )
    return load_benchmark(path)


def _fields(tmp_path: Path, dataset: str) -> dict[str, dict[str, Any]]:
    examples = load_examples(_bench(tmp_path, dataset), "quick").examples
    return {e.id: dict(e.fields) for e in examples}


def _files(tmp_path: Path, answers: list[dict[str, Any]] = ANSWERS) -> None:
    write_jsonl(tmp_path / "questions.json", QUESTIONS)
    write_jsonl(tmp_path / "answers.json", answers)


JOINED = "{file: questions.json, id: id, join: {file: answers.json, by: id}}"


def test_json_values_are_read_exactly(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "question": "?", "v": [8.854e-12, 1]},
        {"id": "b", "question": "?", "v": ["", 0.5]},
    ]
    write_jsonl(tmp_path / "lines.json", rows)
    (tmp_path / "array.json").write_text(json.dumps(rows), encoding="utf-8")
    for name in ("lines.json", "array.json"):
        fields = _fields(tmp_path, f"{{file: {name}, id: id}}")
        assert fields["a"]["v"] == [8.854e-12, 1]
        assert isinstance(fields["a"]["v"][1], int)  # not unified to a float column
        assert fields["b"]["v"] == ["", 0.5]


def test_a_json_array_of_non_objects_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="item 1: not an object") as error:
        _fields(tmp_path, "{file: bad.json}")
    assert error.value.key == "dataset.file"


def test_join_adds_the_other_files_columns_by_id(tmp_path: Path) -> None:
    _files(tmp_path)
    fields = _fields(tmp_path, JOINED)
    assert list(fields) == ["q1", "q2"]
    assert fields["q1"]["ground_truth"] == [{"f": {"x": ["", 8.854e-12]}}]
    assert fields["q2"]["ground_truth"] == [{"f": {"x": [2.5]}}]


def test_join_fields_rename_and_choose_columns(tmp_path: Path) -> None:
    _files(tmp_path)
    dataset = JOINED.replace("by: id}", "by: id, fields: {expected: ground_truth}}")
    fields = _fields(tmp_path, dataset)
    assert set(fields["q2"]) == {"id", "question", "expected"}


def _error(tmp_path: Path, dataset: str) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        _fields(tmp_path, dataset)
    return error.value


def test_a_missing_join_file_names_the_file_and_key(tmp_path: Path) -> None:
    _files(tmp_path)
    error = _error(tmp_path, JOINED.replace("answers.json", "nope.json"))
    assert error.key == "dataset.join.file"
    assert "nope.json" in str(error)


def test_a_question_without_an_answer_is_refused(tmp_path: Path) -> None:
    _files(tmp_path, ANSWERS[:1])
    error = _error(tmp_path, JOINED)
    assert error.key == "dataset.join.by"
    assert "file:answers.json has no row with id 'q1'" in str(error)


def test_duplicate_ids_are_refused_on_either_side(tmp_path: Path) -> None:
    _files(tmp_path, [*ANSWERS, ANSWERS[0]])
    error = _error(tmp_path, JOINED)
    assert error.key == "dataset.join.by" and "'q2' is in two rows" in str(error)
    _files(tmp_path)
    write_jsonl(tmp_path / "questions.json", [*QUESTIONS, QUESTIONS[0]])
    error = _error(tmp_path, JOINED)
    assert error.key == "dataset.join.by" and "dataset's id 'q1' is in two rows" in str(error)


def test_a_joined_column_the_dataset_has_needs_a_new_name(tmp_path: Path) -> None:
    _files(tmp_path, [{**row, "question": "clash"} for row in ANSWERS])
    error = _error(tmp_path, JOINED)
    assert error.key == "dataset.join.fields.question"


def test_bfcl_questions_join_their_possible_answers_exactly(
    tmp_path: Path, shared_datasets: Path
) -> None:
    folder = shared_datasets / "bfcl"
    dataset = (
        f"{{file: {folder / 'BFCL_v4_simple_python.json'}, id: id, "
        f"join: {{file: {folder / 'possible_answer_BFCL_v4_simple_python.json'}, by: id}}}}"
    )
    fields = _fields(tmp_path, dataset)
    assert len(fields) == 400
    ((_, arguments),) = fields["simple_python_39"]["ground_truth"][0].items()
    assert arguments["permitivity"] == ["", 8.854e-12]  # datasets' arrow read gave 0.0


def _fake_hub_cache(root: Path, repo: str, files: dict[str, list[dict[str, Any]]]) -> None:
    """The layout huggingface_hub reads offline: refs/main -> snapshots/<commit>/<file>."""
    commit = "0" * 40
    folder = root / f"datasets--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name, rows in files.items():
        write_jsonl(folder / "snapshots" / commit / name, rows)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_file_of_a_hub_repo_joins_another_of_the_same_repo(
    tmp_path: Path, hub_cache: Path
) -> None:
    repo = "someone/tool-data"
    _fake_hub_cache(hub_cache, repo, {"q.json": QUESTIONS, "answers/q.json": ANSWERS})
    dataset = (
        f"{{hf: {{path: {repo}, file: q.json}}, id: id, "
        "join: {hf: {file: answers/q.json}, by: id}}"
    )
    fields = _fields(tmp_path, dataset)
    assert fields["q1"]["ground_truth"] == [{"f": {"x": ["", 8.854e-12]}}]
    examples = load_examples(_bench(tmp_path, dataset), "quick")
    assert examples.source == f"hf:{repo}:q.json join hf:{repo}:answers/q.json by id"


def test_a_hub_file_missing_from_the_cache_says_how_to_fetch_it(
    tmp_path: Path, hub_cache: Path
) -> None:
    error = _error(tmp_path, "{hf: {path: someone/absent, file: q.json}, id: id}")
    assert error.key == "dataset.hf"
    assert "q.json of someone/absent is not in the local Hugging Face cache" in str(error)
    assert "hf_hub_download" in str(error)


def test_on_instead_of_by_is_explained(tmp_path: Path) -> None:
    _files(tmp_path)
    with pytest.raises(ConfigError, match="YAML reads 'on' as true") as error:
        _bench(tmp_path, JOINED.replace("by: id}", "on: id}"))
    assert error.value.key == "dataset.join.by"
