"""Dataset rows → the examples of one run, identical in every process.

JSON, CSV and Parquet files and hub datasets are read through the Hugging Face
``datasets`` library, so a team's data loads the same way it does in their training
code; JSON Lines, the common case, is read directly (same rows, no 1.5 s import).
Sampling uses a seeded numpy generator over row positions and then restores dataset
order, so every xdist worker (and every rerun) picks the same examples.

Rows are checked against the fields the templates use: a field no row has (or that is
null in every row) refuses the benchmark; a row that lacks one, or holds null there, is
an example that errors with its reason (:attr:`ExampleSet.problems`) and is never asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytest_expertbench.config import Benchmark, ConfigError, DatasetSpec
from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.records import Example

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class ExampleDataError(ExpertBenchError, ValueError):
    """An example whose row lacks a field a template needs, or holds null there."""


@dataclass(frozen=True)
class ExampleSet:
    """The examples one benchmark runs in one suite, and what identifies them."""

    benchmark: str
    suite: str
    source: str
    examples: tuple[Example, ...]
    total: int  # rows in the dataset before sampling
    # Example id -> why it cannot be asked: its row lacks (or holds null in) a field a
    # template needs. Such an example errors in setup; its model is never asked.
    problems: Mapping[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint((e.id, e.digest) for e in self.examples)


def fingerprint(ids_and_digests: Iterable[tuple[str, str]]) -> str:
    """sha256 over the example ids and row digests, in run order."""
    digest = hashlib.sha256()
    for example_id, row in ids_and_digests:
        digest.update(f"{example_id}\t{row}\n".encode())
    return "sha256:" + digest.hexdigest()


def row_digest(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_examples(
    benchmark: Benchmark, suite: str, *, seed: int = 0, limit: int | None = None
) -> ExampleSet:
    """Read, check and sample the rows ``benchmark`` runs in ``suite``."""
    read = _kept_rows(benchmark, _read_rows(benchmark))
    rows = _filled(read)
    columns = _columns(rows, benchmark)
    _check_fields(benchmark, columns)
    uses = field_uses(benchmark)
    _check_not_all_null(benchmark, rows, uses)
    size = benchmark.suites.get(suite)
    if limit is not None:
        size = limit if size is None else min(size, limit)
    positions = sample_positions(len(rows), size, seed)
    examples = tuple(_example(benchmark, rows[i], i) for i in positions)
    _check_unique_ids(benchmark, examples)
    problems = {}
    for example in examples:
        problem = field_problem(benchmark, example.id, read[example.index], uses)
        if problem is not None:
            problems[example.id] = problem
    return ExampleSet(
        benchmark=benchmark.name,
        suite=suite,
        source=benchmark.dataset.describe(),
        examples=examples,
        total=len(rows),
        problems=problems,
    )


def field_uses(benchmark: Benchmark) -> list[tuple[str, str]]:
    """Each dataset field a template needs, with the key that uses it, by field name."""
    return [(name, benchmark.field_user(name)) for name in sorted(benchmark.template_fields())]


def field_problem(
    benchmark: Benchmark,
    example_id: str,
    row: Mapping[str, Any],
    uses: Sequence[tuple[str, str]] | None = None,
) -> str | None:
    """Why the example of ``row`` cannot be asked or scored, in one line, or None.

    A field the row does not have "is missing" (rows as read keep the difference: a
    JSON Lines row without the key); one it holds as None "is null" (JSON null, an
    empty CSV cell, NaN, a key missing from a row of a format ``datasets`` reads). A renamed
    field is looked up under its column.
    """
    reasons = []
    for name, key in field_uses(benchmark) if uses is None else uses:
        column = benchmark.dataset.renames.get(name, name)
        if column not in row:
            state = "is missing"
        elif _is_null(row[column]):
            state = "is null"
        else:
            continue
        where = f"used by {key}" if column == name else f"column {column!r}, used by {key}"
        reasons.append(f"field {name!r} ({where}) {state}")
    if not reasons:
        return None
    return f"example {example_id}: " + "; ".join(reasons)


def sample_positions(total: int, size: int | None, seed: int) -> list[int]:
    """``size`` row positions drawn without replacement, in dataset order."""
    if size is None or size >= total:
        return list(range(total))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(total, size=size, replace=False))


def load_rows(benchmark: Benchmark) -> Sequence[Mapping[str, Any]]:
    """The dataset's rows, each with every column: a key a JSON Lines row lacks is None
    there, as ``datasets`` gives it."""
    return _filled(_kept_rows(benchmark, _read_rows(benchmark)))


def _kept_rows(
    benchmark: Benchmark, rows: Sequence[Mapping[str, Any]]
) -> Sequence[Mapping[str, Any]]:
    """The rows ``dataset.where`` keeps: each named field holds one of its values
    (a renamed field is looked up under its column; ``true`` is not 1)."""
    where = benchmark.dataset.where
    if not where:
        return rows
    for name in where:
        column = benchmark.dataset.renames.get(name, name)
        if not any(column in row for row in rows):
            columns = ", ".join(sorted({key for row in rows for key in row}))
            raise ConfigError(
                benchmark.path,
                f"dataset.where.{name}",
                f"the dataset has no column {column!r} (columns: {columns})",
            )
    kept = [
        row
        for row in rows
        if all(
            _holds(row.get(benchmark.dataset.renames.get(name, name)), values)
            for name, values in where.items()
        )
    ]
    if not kept:
        wanted = "; ".join(f"{name} in {list(values)!r}" for name, values in where.items())
        raise ConfigError(benchmark.path, "dataset.where", f"no row of {len(rows)} has {wanted}")
    return kept


def _holds(value: Any, values: Sequence[Any]) -> bool:
    return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in values)


def _read_rows(benchmark: Benchmark) -> Sequence[Mapping[str, Any]]:
    """The rows as read: JSON Lines rows keep only their own keys."""
    spec = benchmark.dataset
    if spec.hub is not None:
        return _hub_rows(benchmark, spec)
    return _file_rows(benchmark, spec)


def _file_rows(benchmark: Benchmark, spec: DatasetSpec) -> Sequence[Mapping[str, Any]]:
    assert spec.file is not None
    builder = FILE_BUILDERS.get(spec.file.suffix.lower())
    if builder is None:
        raise ConfigError(
            benchmark.path,
            "dataset.file",
            f"cannot read {spec.file.name}: expected one of {', '.join(FILE_BUILDERS)}",
        )
    if not spec.file.is_file():
        raise ConfigError(benchmark.path, "dataset.file", f"no such file: {spec.file}")
    if spec.file.suffix.lower() == ".jsonl":
        return _jsonl_rows(benchmark, spec.file)
    _quiet_datasets()
    import datasets

    try:
        data = datasets.load_dataset(builder, data_files=str(spec.file), split="train")
    except Exception as exc:  # the library raises many kinds for a malformed file
        raise ConfigError(
            benchmark.path, "dataset.file", f"cannot read {spec.file}: {_one_line(exc)}"
        ) from None
    return data.to_list()  # type: ignore[no-any-return]


def _jsonl_rows(benchmark: Benchmark, path: Path) -> list[dict[str, Any]]:
    """JSON Lines read directly: the same rows ``datasets`` gives once filled (JSON
    types are native; see :func:`_filled`), without importing it, which costs 1.5 s in
    every process, xdist workers included."""
    rows: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    rows.append(_jsonl_row(benchmark, path, number, line))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(benchmark.path, "dataset.file", f"cannot read {path}: {exc}") from None
    return rows


def _filled(rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """Rows with every key of any row (in first-seen order), None where a row lacks it."""
    columns = dict.fromkeys(key for row in rows for key in row)
    if all(len(row) == len(columns) for row in rows):
        return rows
    return [{key: row.get(key) for key in columns} for row in rows]


def _jsonl_row(benchmark: Benchmark, path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(
            benchmark.path, "dataset.file", f"cannot read {path}: line {number}: {exc}"
        ) from None
    if not isinstance(row, dict):
        raise ConfigError(
            benchmark.path, "dataset.file", f"cannot read {path}: line {number}: not an object"
        )
    return row


def _hub_rows(benchmark: Benchmark, spec: DatasetSpec) -> Sequence[Mapping[str, Any]]:
    _quiet_datasets()
    import datasets

    hub = spec.hub
    assert hub is not None
    try:
        data = datasets.load_dataset(hub.path, hub.name, split=hub.split, revision=hub.revision)
    except Exception as exc:
        raise ConfigError(
            benchmark.path, "dataset.hf", _hub_failure(hub.path, hub.name, exc)
        ) from None
    return data.to_list()  # type: ignore[no-any-return]


def _hub_failure(path: str, name: str | None, exc: Exception) -> str:
    offline = (
        os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    )
    reason = _one_line(exc)
    how = (
        f'fetch it once on a machine with network: python -c "import datasets; '
        f'datasets.load_dataset({path!r}, {name!r})" (it is then read from the local cache)'
    )
    if offline or "offline" in reason.lower() or "connect" in reason.lower():
        return f"{path} is not in the local Hugging Face cache and the hub is not reachable; {how}"
    return f"cannot load {path}: {reason}"


def _columns(rows: Sequence[Mapping[str, Any]], benchmark: Benchmark) -> set[str]:
    if not rows:
        raise ConfigError(benchmark.path, "dataset", "the dataset has no rows")
    columns = set(rows[0])
    for new, old in benchmark.dataset.renames.items():
        if old not in columns:
            raise ConfigError(
                benchmark.path,
                f"dataset.fields.{new}",
                f"the dataset has no column {old!r} (columns: {', '.join(sorted(columns))})",
            )
        columns.add(new)
    return columns


def _check_fields(benchmark: Benchmark, columns: set[str]) -> None:
    id_field = benchmark.dataset.id_field
    if id_field is not None and id_field not in columns:
        raise ConfigError(
            benchmark.path,
            "dataset.id",
            f"the dataset has no column {id_field!r} (columns: {', '.join(sorted(columns))})",
        )
    missing = sorted(benchmark.template_fields() - columns)
    if missing:
        raise ConfigError(
            benchmark.path,
            benchmark.field_user(missing[0]),
            f"uses {{{missing[0]}}}, which the dataset does not have "
            f"(columns: {', '.join(sorted(columns))})",
        )


def _example(benchmark: Benchmark, row: Mapping[str, Any], position: int) -> Example:
    fields = dict(row)
    for new, old in benchmark.dataset.renames.items():
        fields[new] = row[old]
    id_field = benchmark.dataset.id_field
    example_id = str(row[id_field]) if id_field is not None else str(position)
    return Example(id=example_id, index=position, fields=fields, digest=row_digest(row))


def _check_not_all_null(
    benchmark: Benchmark, rows: Sequence[Mapping[str, Any]], uses: Sequence[tuple[str, str]]
) -> None:
    """A field the templates need that no row holds: the benchmark cannot run at all."""
    for name, key in uses:
        column = benchmark.dataset.renames.get(name, name)
        if all(_is_null(row.get(column)) for row in rows):
            shown = f"{{{name}}}" if column == name else f"{{{name}}} (column {column!r})"
            raise ConfigError(
                benchmark.path,
                key,
                f"uses {shown}, which is missing or null in every row of the dataset "
                f"({len(rows)} rows)",
            )


def _is_null(value: Any) -> bool:
    """None, or a float NaN (what a numeric column holds where a cell is empty)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check_unique_ids(benchmark: Benchmark, examples: Sequence[Example]) -> None:
    seen: dict[str, int] = {}
    for example in examples:
        if example.id in seen:
            raise ConfigError(
                benchmark.path,
                "dataset.id",
                f"the id {example.id!r} is used by rows {seen[example.id]} and {example.index}: "
                "ids must be unique",
            )
        seen[example.id] = example.index


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
