"""One source's rows as read: a local file, a hub dataset, or one file of a hub repo.

JSON and JSON Lines (one object per line, or a JSON array of objects) are read with the
``json`` module, so every value is exactly what the file says: ``datasets`` unifies a
column's arrow type, which turned 13 of BFCL's accepted floats (8.854e-12 among them)
into 0.0, and costs a 1.5 s import in every process, xdist workers included. CSV,
Parquet and hub datasets go through Hugging Face ``datasets``, as a team's training
code reads them. A file of a hub repo (``hf: {path, file}``) is fetched with
``huggingface_hub`` (``datasets``' own dependency) into the local Hugging Face cache and
read like a local file: repos whose files do not share one schema, such as BFCL's, load
that way where ``load_dataset`` fails.

Errors name the benchmark file and the key (``dataset.file``, ``dataset.join.hf`` …).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_expertbench.config import ConfigError, HubSource

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
Rows = Sequence[Mapping[str, Any]]


def file_rows(bench: Path, file: Path, key: str) -> Rows:
    """The rows of a local file; ``key`` names the YAML key that gave it."""
    builder = FILE_BUILDERS.get(file.suffix.lower())
    if builder is None:
        raise ConfigError(
            bench, key, f"cannot read {file.name}: expected one of {', '.join(FILE_BUILDERS)}"
        )
    if not file.is_file():
        raise ConfigError(bench, key, f"no such file: {file}")
    if builder == "json":
        return json_rows(bench, file, key)
    _quiet_datasets()
    import datasets

    try:
        data = datasets.load_dataset(builder, data_files=str(file), split="train")
    except Exception as exc:  # the library raises many kinds for a malformed file
        raise ConfigError(bench, key, f"cannot read {file}: {one_line(exc)}") from None
    return data.to_list()  # type: ignore[no-any-return]


def hub_rows(bench: Path, hub: HubSource, key: str) -> Rows:
    """A hub dataset's split, or (with ``file``) one file of the hub repo."""
    if hub.file is not None:
        return file_rows(bench, _hub_file(bench, hub, key), f"{key}.file")
    _quiet_datasets()
    import datasets

    try:
        data = datasets.load_dataset(hub.path, hub.name, split=hub.split, revision=hub.revision)
    except Exception as exc:
        raise ConfigError(bench, key, _hub_failure(hub, exc)) from None
    return data.to_list()  # type: ignore[no-any-return]


def _hub_file(bench: Path, hub: HubSource, key: str) -> Path:
    assert hub.file is not None
    _quiet_datasets()
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(
            repo_id=hub.path, filename=hub.file, repo_type="dataset", revision=hub.revision
        )
    except Exception as exc:  # offline and not cached, no such repo or file, network
        raise ConfigError(bench, key, _hub_failure(hub, exc)) from None
    return Path(local)


def _hub_failure(hub: HubSource, exc: Exception) -> str:
    offline = (
        os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    )
    reason = one_line(exc)
    what = hub.path if hub.file is None else f"{hub.file} of {hub.path}"
    if hub.file is None:
        fetch = f"import datasets; datasets.load_dataset({hub.path!r}, {hub.name!r})"
    else:
        fetch = (
            "import huggingface_hub; huggingface_hub.hf_hub_download("
            f"{hub.path!r}, {hub.file!r}, repo_type='dataset')"
        )
    how = (
        f'fetch it once on a machine with network: python -c "{fetch}" '
        "(it is then read from the local cache)"
    )
    if offline or "offline" in reason.lower() or "connect" in reason.lower():
        return f"{what} is not in the local Hugging Face cache and the hub is not reachable; {how}"
    return f"cannot load {what}: {reason}"


def json_rows(bench: Path, path: Path, key: str) -> list[dict[str, Any]]:
    """A JSON array of objects, or JSON Lines, each value exactly as written."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(bench, key, f"cannot read {path}: {exc}") from None
    if text.lstrip().startswith("["):
        return _json_array(bench, path, key, text)
    return [
        _json_line(bench, path, number, line, key)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _json_array(bench: Path, path: Path, key: str, text: str) -> list[dict[str, Any]]:
    try:
        rows = json.loads(text)
    except ValueError as exc:
        raise ConfigError(bench, key, f"cannot read {path}: {exc}") from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ConfigError(bench, key, f"cannot read {path}: item {number}: not an object")
    return rows  # type: ignore[no-any-return]


def _json_line(bench: Path, path: Path, number: int, line: str, key: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(bench, key, f"cannot read {path}: line {number}: {exc}") from None
    if not isinstance(row, dict):
        raise ConfigError(bench, key, f"cannot read {path}: line {number}: not an object")
    return row


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
