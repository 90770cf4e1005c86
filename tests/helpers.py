"""A small benchmark project written into a pytester directory, for plugin tests."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

QUESTIONS = [
    ("q0", "What is 2 + 3?", "#### 5"),
    ("q1", "What is 10 - 4?", "#### 6"),
    ("q2", "What is 3 x 4?", "#### 12"),
    ("q3", "What is 20 / 5?", "#### 4"),
    ("q4", "What is 7 + 8?", "#### 15"),
    ("q5", "What is 9 - 9?", "#### 0"),
]

# What a model that gets every one of QUESTIONS right says (the fake server's answers).
ANSWERS = {text: f"The answer is {answer.split()[-1]}." for _, text, answer in QUESTIONS}

MINI_YAML = """\
name: mini
description: six sums
dataset: {file: data/mini.jsonl, id: id}
suites: {quick: all, standard: all, small: 3}
prompt: "{question}"
generation: {temperature: 0}
scorers:
  - numeric_match: {target: "{answer}", extract: flexible}
metrics:
  accuracy: {of: numeric_match, agg: mean, direction: higher, unit: ratio}
"""


def short_benchmark(name: str, extra: str = "") -> str:
    """A benchmark YAML on the six sums in the quick suite, with ``extra`` keys appended."""
    return f"""\
name: {name}
dataset: {{file: data/mini.jsonl, id: id}}
suites: {{quick: all}}
prompt: "{{question}}"
generation: {{temperature: 0}}
scorers: [{{numeric_match: {{target: "{{answer}}"}}}}]
metrics:
  accuracy: {{of: numeric_match, direction: higher}}
{extra}"""


LOCAL = "http://127.0.0.1:{port}"  # a managed server's address, before its port is picked


def fake_server_block(*options: str) -> dict[str, Any]:
    """A targets file's ``server:`` block that runs tests/support/fake_openai.py."""
    command = [sys.executable, "-m", "tests.support.fake_openai", "--port", "{port}", *options]
    return {
        "command": command,
        "env": {"PYTHONPATH": str(REPO)},
        "health_url": LOCAL + "/_stats",
        "startup_timeout_s": 30,
    }


def assert_stopped(log: Path) -> None:
    """The fake server that wrote ``log`` (its port is a line of its own) listens no more."""
    port = int(next(line for line in log.read_text().splitlines() if line.strip().isdigit()))
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(1)
        probe.connect(("127.0.0.1", port))


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def replay_rows(benchmark: str, wrong: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Recorded answers to QUESTIONS; the ids in ``wrong`` get a wrong number."""
    wrong = set(wrong)
    rows = []
    for qid, _, answer in QUESTIONS:
        value = int(answer.split()[-1]) + (1 if qid in wrong else 0)
        rows.append(
            {"benchmark": benchmark, "id": qid, "response": f"It is {value}.", "latency_ms": 100.0}
        )
    return rows


# pytester's captured output of subprocess runs, and caches that are not the project's
IGNORED_IN_SNAPSHOTS = {"stdout", "stderr", ".cache", ".pytest_cache"}


class Project:
    """A throw-away benchmark project inside a pytester directory."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path
        self.bench_dir = self.root / "benchmarks_suites"
        self.bench_dir.mkdir()
        write_jsonl(
            self.bench_dir / "data" / "mini.jsonl",
            [{"id": q, "question": text, "answer": a} for q, text, a in QUESTIONS],
        )
        self.write("mini.yaml", MINI_YAML)
        self.set_replay(replay_rows("mini"))
        self.targets({"demo": {"kind": "replay", "path": "recorded/demo.jsonl"}})
        pytester.makeini("[pytest]\n")

    def write(self, name: str, text: str) -> Path:
        path = self.bench_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def set_replay(self, rows: Iterable[Mapping[str, Any]], name: str = "demo.jsonl") -> Path:
        return write_jsonl(self.bench_dir / "recorded" / name, rows)

    def targets(self, targets: Mapping[str, Any], default: str = "demo") -> None:
        doc = {"default": default, "targets": targets}
        (self.bench_dir / "targets.yaml").write_text(json.dumps(doc), encoding="utf-8")

    def run(self, *args: str, subprocess: bool = False) -> pytest.RunResult:
        run: Callable[..., pytest.RunResult] = (
            self.pytester.runpytest_subprocess if subprocess else self.pytester.runpytest
        )
        return run("-p", "no:cacheprovider", *args)

    def report_dir(self, name: str = "out") -> Path:
        return self.root / "reports" / name

    def results(self, name: str = "out") -> list[dict[str, Any]]:
        text = (self.report_dir(name) / "results.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def metric(self, rows: list[dict[str, Any]], metric_id: str) -> dict[str, Any]:
        return next(r for r in rows if r.get("type") == "metric" and r["metric_id"] == metric_id)

    def snapshot_files(self) -> dict[str, bytes]:
        """Every file of the project with its bytes, to prove nothing changed on disk."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
            and "__pycache__" not in p.parts
            and p.relative_to(self.root).parts[0] not in IGNORED_IN_SNAPSHOTS
        }


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
