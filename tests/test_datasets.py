"""Dataset loading: files of every format, the hub through its local cache, sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.config import ConfigError
from pytest_expertbench.datasets import (
    ExampleDataError,
    field_problem,
    load_examples,
    load_rows,
    sample_positions,
)

ROWS = [
    {"id": f"r{i}", "question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(8)
]

YAML = """\
name: tiny
dataset: {dataset}
suites: {{quick: 3, standard: all}}
prompt: "{{question}}"
scorers: [{{numeric_match: {{target: "{{answer}}"}}}}]
metrics:
  accuracy: {{of: numeric_match, direction: higher}}
"""


def write_benchmark(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(YAML.format(dataset=dataset))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".json"])
def test_every_file_format_gives_the_same_examples(tmp_path: Path, suffix: str) -> None:
    import datasets

    data = tmp_path / f"rows{suffix}"
    table = datasets.Dataset.from_list(ROWS)
    {
        ".jsonl": lambda: table.to_json(str(data), lines=True),
        ".json": lambda: table.to_json(str(data), lines=True),
        ".csv": lambda: table.to_csv(str(data), index=False),
        ".parquet": lambda: table.to_parquet(str(data)),
    }[suffix]()
    bench = load_benchmark(write_benchmark(tmp_path, f"{{file: rows{suffix}, id: id}}"))
    examples = load_examples(bench, "standard").examples
    assert [e.id for e in examples] == [r["id"] for r in ROWS]
    assert examples[3].fields["question"] == "What is 3 + 3?"


def test_ids_default_to_the_row_index_and_renames_apply(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": r["question"], "answer": r["answer"]}) + "\n" for r in ROWS)
    )
    path = write_benchmark(tmp_path, "{file: rows.jsonl, fields: {question: problem}}")
    examples = load_examples(load_benchmark(path), "standard").examples
    assert [e.id for e in examples] == [str(i) for i in range(8)]
    assert examples[1].fields["question"] == ROWS[1]["question"]


def test_a_sample_is_seeded_in_dataset_order_and_fingerprinted(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    bench = load_benchmark(write_benchmark(tmp_path, "{file: rows.jsonl, id: id}"))
    first = load_examples(bench, "quick", seed=1)
    again = load_examples(bench, "quick", seed=1)
    other = load_examples(bench, "quick", seed=2)
    indices = [e.index for e in first.examples]
    assert len(indices) == 3 and indices == sorted(indices)
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint
    assert first.fingerprint.startswith("sha256:")
    unchanged = load_examples(bench, "standard").fingerprint
    data.write_text(data.read_text().replace("What is 1 + 1?", "What is 1 + 2?"))
    changed = load_examples(bench, "standard")
    assert [e.id for e in changed.examples] == [r["id"] for r in ROWS]  # same ids ...
    assert changed.fingerprint != unchanged  # ... but a changed row is noticed


def test_sample_positions_are_identical_in_every_process() -> None:
    code = (
        "from pytest_expertbench.datasets import sample_positions; "
        "print(sample_positions(1319, 25, 0))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert outputs == {f"{sample_positions(1319, 25, 0)}\n"}


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({**r, "id": "same"}) + "\n" for r in ROWS[:2]))
    bench = load_benchmark(write_benchmark(tmp_path, "{file: rows.jsonl, id: id}"))
    with pytest.raises(ConfigError, match=r"dataset\.id: the id 'same' is used by rows 0 and 1"):
        load_examples(bench, "standard")


def test_a_malformed_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"id": 1, "question": \n')
    bench = load_benchmark(write_benchmark(tmp_path, "{file: rows.jsonl, id: id}"))
    with pytest.raises(ConfigError, match=r"tiny\.yaml: dataset\.file: cannot read .*rows\.jsonl"):
        load_examples(bench, "standard")


def _write_rows(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_benchmark(tmp_path, "{file: rows.jsonl, id: id}")


def test_a_row_without_a_field_or_with_null_there_is_a_problem_of_its_own(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [dict(r) for r in ROWS]
    del rows[1]["question"]  # heterogeneous keys: the other rows keep theirs
    rows[2]["question"] = None
    rows[3]["answer"] = None
    del rows[4]["answer"]
    rows[5]["question"] = ""  # empty is a value: the model is asked
    examples = load_examples(load_benchmark(_write_rows(tmp_path, rows)), "standard")
    assert examples.problems == {
        "r1": "example r1: field 'question' (used by prompt) is missing",
        "r2": "example r2: field 'question' (used by prompt) is null",
        "r3": "example r3: field 'answer' (used by scorers[0].numeric_match.target) is null",
        "r4": "example r4: field 'answer' (used by scorers[0].numeric_match.target) is missing",
    }
    # The rows are still read as datasets reads them: a key a row lacks is None there,
    # so the examples and their fingerprint are those of a run before this check.
    assert [e.id for e in examples.examples] == [r["id"] for r in ROWS]
    assert examples.examples[1].fields["question"] is None
    assert "question" in load_rows(load_benchmark(tmp_path / "tiny.yaml"))[1]


def test_a_sample_records_only_its_own_problems(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{**r, "question": None} for r in ROWS]
    rows[0]["question"] = "What is 0 + 0?"
    examples = load_examples(load_benchmark(_write_rows(tmp_path, rows)), "quick", seed=1)
    ids = {e.id for e in examples.examples}
    assert set(examples.problems) == ids - {"r0"}


def test_every_bad_field_of_a_row_is_named_on_one_line(tmp_path: Path) -> None:
    bench = load_benchmark(_write_rows(tmp_path, ROWS))
    problem = field_problem(bench, "r7", {"id": "r7", "answer": float("nan")})
    assert problem == (
        "example r7: field 'answer' (used by scorers[0].numeric_match.target) is null; "
        "field 'question' (used by prompt) is missing"
    )
    assert field_problem(bench, "r7", ROWS[7]) is None


def test_a_null_cell_of_a_csv_is_null(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("id,question,answer\nr0,hi,#### 5\nr1,,#### 6\n")
    bench = load_benchmark(write_benchmark(tmp_path, "{file: rows.csv, id: id}"))
    assert load_examples(bench, "standard").problems == {
        "r1": "example r1: field 'question' (used by prompt) is null"
    }


def test_a_field_null_in_every_row_refuses_the_benchmark(tmp_path: Path) -> None:
    rows = [{**r, "answer": None} for r in ROWS]
    bench = load_benchmark(_write_rows(tmp_path, rows))
    with pytest.raises(
        ConfigError,
        match=r"tiny\.yaml: scorers\[0\]\.numeric_match\.target: uses \{answer\}, which is "
        r"missing or null in every row of the dataset \(8 rows\)",
    ):
        load_examples(bench, "standard")


def test_make_request_never_renders_a_null_field(tmp_path: Path) -> None:
    from pytest_expertbench.records import Example
    from pytest_expertbench.run import make_request

    bench = load_benchmark(_write_rows(tmp_path, ROWS))
    example = Example(id="r9", index=9, fields={"question": None, "answer": "5"}, digest="")
    with pytest.raises(ExampleDataError, match=r"^example r9: field 'question' .* is null$"):
        make_request(bench, example)


HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from pytest_expertbench.benchmark_file import load_benchmark
    from pytest_expertbench.config import ConfigError
    from pytest_expertbench.datasets import load_examples
    try:
        examples = load_examples(load_benchmark(Path(sys.argv[1])), "standard").examples
    except ConfigError as exc:
        print("ERROR", exc)
    else:
        print(json.dumps([[e.id, e.fields["question"]] for e in examples]))
    """
)


def _hub_env(hf_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


def _cache_hub_dataset(hf_home: Path, tmp_path: Path) -> None:
    """Put tester/tiny (config main, split test) into the local cache, as a download would."""
    rows = tmp_path / "src.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    script = textwrap.dedent(
        f"""
        import shutil
        from pathlib import Path
        from datasets.packaged_modules.json.json import Json
        builder = Json(
            dataset_name="tiny", config_name="main",
            data_files={{"test": {str(rows)!r}}}, hash="0123abcd",
        )
        builder.download_and_prepare()
        target = Path({str(hf_home)!r}) / "datasets" / "tester___tiny" / "main" / "0.0.0"
        target = target / "0123abcd"
        target.parent.mkdir(parents=True)
        shutil.copytree(builder.cache_dir, target)
        """
    )
    subprocess.run(
        [sys.executable, "-c", script], env=_hub_env(hf_home), check=True, capture_output=True
    )


def test_a_hub_dataset_is_read_from_the_local_cache_offline(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    _cache_hub_dataset(hf_home, tmp_path)
    path = write_benchmark(tmp_path, "{hf: {path: tester/tiny, name: main, split: test}, id: id}")
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(path)],
        env=_hub_env(hf_home),
        capture_output=True,
        text=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == [[r["id"], r["question"]] for r in ROWS]


def test_a_hub_dataset_not_in_the_cache_says_how_to_fetch_it(tmp_path: Path) -> None:
    path = write_benchmark(tmp_path, "{hf: {path: tester/absent, name: main, split: test}}")
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(path)],
        env=_hub_env(tmp_path / "empty-hf"),
        capture_output=True,
        text=True,
    )
    line = done.stdout.strip().splitlines()[-1]
    assert (
        line.startswith("ERROR ")
        and "tiny.yaml: dataset.hf: tester/absent is not in the local" in line
    )
    assert "datasets.load_dataset('tester/absent', 'main')" in line
