"""Dataset rows → the examples of one run, identical in every process.

The rows are read by :mod:`pytest_expertbench.sources` (JSON exactly, with the ``json``
module; CSV, Parquet and hub datasets through Hugging Face ``datasets``), joined with a
second source by a shared key when ``dataset.join`` asks, and filtered by
``dataset.where``. Sampling uses a seeded numpy generator over row positions and then
restores dataset order, so every xdist worker (and every rerun) picks the same examples.

Rows are checked against the fields the templates use: a field no row has (or that is
null in every row) refuses the benchmark; a row that lacks one, or holds null there, is
an example that errors with its reason (:attr:`ExampleSet.problems`) and is never asked.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytest_expertbench.config import Benchmark, ConfigError, HubSource, JoinSpec
from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.records import Example
from pytest_expertbench.sources import file_rows, hub_rows


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
    """The rows as read (JSON rows keep only their own keys), joined when asked."""
    spec = benchmark.dataset
    rows = _source_rows(benchmark.path, spec.file, spec.hub, "dataset")
    if spec.join is None:
        return rows
    join = spec.join
    other = _source_rows(benchmark.path, join.file, join.hub, "dataset.join")
    return joined(benchmark.path, rows, other, join)


def _source_rows(
    bench: Path, file: Path | None, hub: HubSource | None, key: str
) -> Sequence[Mapping[str, Any]]:
    if hub is not None:
        return hub_rows(bench, hub, f"{key}.hf")
    assert file is not None
    return file_rows(bench, file, f"{key}.file")


def joined(
    bench: Path,
    rows: Sequence[Mapping[str, Any]],
    other: Sequence[Mapping[str, Any]],
    join: JoinSpec,
) -> list[dict[str, Any]]:
    """Each row with the ``join.fields`` of the ``other`` row sharing its ``join.by``
    value. Every row must have one (a question without its answer is a broken
    dataset, not an example to skip); the other's rows nobody asks for are left."""
    source = join.describe()
    by_key: dict[Any, Mapping[str, Any]] = {}
    for number, row in enumerate(other, start=1):
        value = _join_value(bench, row, join.by, f"row {number} of {source}")
        if value in by_key:
            raise ConfigError(
                bench, "dataset.join.by", f"{source}: {join.by} {value!r} is in two rows"
            )
        by_key[value] = row
    fields = join.fields or {c: c for r in other for c in r if c != join.by}
    result = []
    seen: set[Any] = set()
    for number, row in enumerate(rows, start=1):
        value = _join_value(bench, row, join.by, f"row {number} of the dataset")
        if value in seen:
            raise ConfigError(
                bench, "dataset.join.by", f"the dataset's {join.by} {value!r} is in two rows"
            )
        seen.add(value)
        match = by_key.get(value)
        if match is None:
            raise ConfigError(
                bench, "dataset.join.by", f"{source} has no row with {join.by} {value!r}"
            )
        added = {new: match.get(column) for new, column in fields.items()}
        clash = next((new for new in added if new in row and new != join.by), None)
        if clash is not None:
            raise ConfigError(
                bench,
                f"dataset.join.fields.{clash}",
                f"the dataset already has a column {clash!r}: give the joined one a new name",
            )
        result.append({**row, **added})
    return result


def _join_value(bench: Path, row: Mapping[str, Any], by: str, where: str) -> Any:
    value = row.get(by)
    if value is None or isinstance(value, dict | list):
        raise ConfigError(bench, "dataset.join.by", f"{where} has no {by!r} to join by")
    return value


def _filled(rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """Rows with every key of any row (in first-seen order), None where a row lacks it."""
    columns = dict.fromkeys(key for row in rows for key in row)
    if all(len(row) == len(columns) for row in rows):
        return rows
    return [{key: row.get(key) for key in columns} for row in rows]


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
