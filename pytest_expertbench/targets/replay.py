"""Answers recorded earlier (``--expert-bench-record``), replayed without a model.

``path`` is one JSONL file or a folder whose ``*.jsonl`` files are read together
(one file per benchmark, say); an answer recorded twice is an error. A benchmark with
``repeats`` > 1 records one row per repeat, with its ``repeat`` index (0 when absent).

A replay is deterministic down to its latency: each answer keeps the latency it was
recorded with (the target says ``live = False`` and the engine keeps the Completion's
own ``latency_ms``), so a replayed run's metrics equal the recorded run's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_expertbench.config import ConfigError, TargetSpec
from pytest_expertbench.files import atomic_write_text
from pytest_expertbench.records import Completion, ExampleResult, Request, TargetError, ToolCall
from pytest_expertbench.targets import ModelClient, Options, as_arguments

_OPTIONS = "path"
Recording = dict[tuple[str, str, int], Completion]  # benchmark, id, repeat


@dataclass
class ReplayTarget:
    name: str
    path: Path
    live: bool = False
    _answers: Recording | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def identity(self) -> Mapping[str, Any]:
        return {"kind": "replay", "path": str(self.path)}

    def load(self) -> Recording:
        """The recorded answers, read on first use; a bad file raises ConfigError."""
        with self._lock:
            if self._answers is None:
                self._answers = read_replay(self.path)
            return self._answers

    async def complete(self, request: Request, client: ModelClient) -> Completion:
        answer = self.load().get(request.key)
        if answer is None:
            repeat = f" (repeat {request.repeat})" if request.repeat else ""
            raise TargetError(
                f"no recorded answer for {request.benchmark}[{request.example_id}]{repeat} "
                f"in {self.path}"
            )
        return answer


def read_replay(path: Path) -> Recording:
    """The answers of a replay file, or of every ``*.jsonl`` file of a folder."""
    if not path.is_dir():
        return _read_file(path, {})
    answers: Recording = {}
    for file in sorted(path.glob("*.jsonl")):
        _read_file(file, answers)
    return answers


def _read_file(path: Path, answers: Recording) -> Recording:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the replay file: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                key, completion = _row(line, path, number)
                if key in answers:
                    repeat = f" (repeat {key[2]})" if key[2] else ""
                    raise ConfigError(
                        path, f"line {number}", f"a second answer for {key[0]}[{key[1]}]{repeat}"
                    )
                answers[key] = completion
    return answers


def _row(line: str, path: Path, number: int) -> tuple[tuple[str, str, int], Completion]:
    where = f"line {number}"
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(path, where, f"not valid JSON: {exc}") from None
    if not isinstance(row, Mapping):
        raise ConfigError(path, where, "expected a JSON object")
    for key in ("benchmark", "id"):
        if not isinstance(row.get(key), str | int) or isinstance(row.get(key), bool):
            raise ConfigError(path, f"{where}: {key}", "expected text")
    response = row.get("response", "")
    if not isinstance(response, str):
        raise ConfigError(path, f"{where}: response", "expected text")
    repeat = row.get("repeat") or 0
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 0:
        raise ConfigError(path, f"{where}: repeat", "expected a whole number of 0 or more")
    latency = row.get("latency_ms") or 0.0
    if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
        raise ConfigError(path, f"{where}: latency_ms", "expected a number of 0 or more")
    calls = row.get("tool_calls") or []
    if not isinstance(calls, list) or not all(
        isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in calls
    ):
        raise ConfigError(path, f"{where}: tool_calls", 'expected a list of {"name", "arguments"}')
    completion = Completion(
        text=response,
        tool_calls=tuple(ToolCall(c["name"], as_arguments(c.get("arguments", {}))) for c in calls),
        latency_ms=float(latency),
    )
    return (str(row["benchmark"]), str(row["id"]), repeat), completion


def write_replay(path: Path, rows: Iterable[ExampleResult]) -> None:
    """Write the answered examples as a replay file, atomically (temp file + replace).

    Examples that ended in an error have no answer to replay and are left out, so
    replaying them reports "no recorded answer" instead of a made-up one.
    """
    lines = (
        json.dumps(record, ensure_ascii=False) + "\n"
        for result in rows
        if result.error is None
        for record in _records(result)
    )
    atomic_write_text(path, "".join(lines))


def _records(result: ExampleResult) -> list[dict[str, Any]]:
    """One row per answer: the example's, or each repeat's with its ``repeat`` index."""
    if not result.repeat_answers:
        return [_record(result)]
    base = {"benchmark": result.benchmark, "id": result.id}
    return [
        {**base, "repeat": r, **answer} if r else {**base, **answer}
        for r, answer in enumerate(result.repeat_answers)
    ]


def _record(result: ExampleResult) -> dict[str, Any]:
    return {
        "benchmark": result.benchmark,
        "id": result.id,
        "response": result.response,
        "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls],
        "latency_ms": result.scores.get("latency_ms", 0.0),
    }


def build(spec: TargetSpec) -> ReplayTarget:
    options = Options(spec)
    options.reject_unknown(_OPTIONS)
    path = Path(options.required("path"))
    if not path.exists():
        raise options.error("path", f"the replay file or folder {path} does not exist")
    target = ReplayTarget(name=spec.name, path=path)
    target.load()  # a bad line is one usage error now, not an error on every item
    return target
