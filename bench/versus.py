"""pytest --expert-bench against lm-evaluation-harness and inspect-ai, on one server.

Each tool evaluates the same N examples (the same prompt text, the same exact-match
target) against the same fake OpenAI-compatible server (tests/support/fake_openai.py,
127.0.0.1, ``--latency`` seconds per answer, ``--capacity`` at a time), through the same
chat-completions route, ``--concurrency`` requests in flight, caches off. The server is
reset between tools, and its per-prompt counts prove that each tool asked every example
exactly once: a tool that asked fewer, more or other prompts is reported, not timed.

The other tools run as subprocesses of ``--compare-python`` (a separate virtualenv, so
this project never depends on them); a tool missing there is printed as ``skipped``.

    python bench/versus.py --n 1319 --latency 0.2
    python bench/versus.py --n 1319 --latency 0          # per-request overhead
    python bench/versus.py --n 200 --repeat 3 --tools expertbench,inspect

limit = N x latency / min(concurrency, capacity): no tool can do better. Each wall time
includes the tool's own start-up (imports, dataset loading, writing its logs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
import yaml
from throughput import (
    Server,
    expertbench_command,
    fake_server,
    prompt_of,
    server_arguments,
    write_benchmark,
)

COMPARE_PYTHON = "/work/venv-compare/bin/python"
MODEL = "bench"
MAX_TOKENS = 16
MAX_RETRIES = 3
TASK = "expertbench_versus"
TOOLS = ("expertbench", "lm-eval", "inspect")


@dataclass(frozen=True)
class Setup:
    """Everything a tool's command is built from; each run gets its own folder."""

    folder: Path
    n: int
    examples: Path
    base_url: str
    concurrency: int
    compare_python: str


@dataclass(frozen=True)
class Tool:
    name: str
    package: str
    external: bool  # runs in --compare-python, not in this interpreter
    command: Callable[[Setup], list[str]]
    accuracy: Callable[[Setup], float | None]


@dataclass(frozen=True)
class Outcome:
    """One tool's measurement, or why there is none."""

    tool: str
    version: str
    walls: tuple[float, ...] = ()
    asked: int = 0
    max_in_flight: int = 0
    accuracies: tuple[float | None, ...] = ()
    problem: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def accuracy(self) -> float | None:
        """The worst run's, or None when a run's result could not be read."""
        known = [a for a in self.accuracies if a is not None]
        return min(known) if known and len(known) == len(self.accuracies) else None


def write_examples(folder: Path, n: int) -> Path:
    """The JSONL the other tools read: the prompt pytest-expertbench renders, fully spelled."""
    path = folder / "examples.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            row = {"id": f"q{i}", "prompt": prompt_of(i), "answer": f"ANSWER: question {i}"}
            handle.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------- pytest --expert-bench


def expertbench_tool_command(setup: Setup) -> list[str]:
    """throughput.py's benchmark: its prompt template renders exactly ``prompt_of(i)``."""
    folder = setup.folder / "expertbench"
    suite = write_benchmark(folder, setup.n, setup.base_url, setup.concurrency)
    return expertbench_command(folder, suite, setup.concurrency)


def expertbench_accuracy(setup: Setup) -> float | None:
    scores = [
        json.loads(line)["scores"]["exact_match"]
        for path in setup.folder.rglob("results.jsonl")
        for line in path.read_text().splitlines()
        if json.loads(line).get("type") == "example"
    ]
    return statistics.fmean(scores) if scores else None


# ---------------------------------------------------------------- lm-evaluation-harness


def lm_eval_command(setup: Setup) -> list[str]:
    """A generate_until task over the local JSONL; the chat API model without a tokenizer."""
    tasks = setup.folder / "lm_eval_tasks"
    tasks.mkdir()
    task = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(setup.examples)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": [], "max_gen_toks": MAX_TOKENS, "temperature": 0},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    (tasks / f"{TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    model_args = ",".join(
        [
            f"model={MODEL}",
            f"base_url={setup.base_url}/chat/completions",
            f"num_concurrent={setup.concurrency}",
            f"max_retries={MAX_RETRIES}",
            "tokenized_requests=False",
            "tokenizer_backend=None",
        ]
    )
    return [
        setup.compare_python,
        "-m",
        "lm_eval",
        "run",
        "--model=local-chat-completions",
        f"--model_args={model_args}",
        f"--tasks={TASK}",
        f"--include_path={tasks}",
        "--apply_chat_template",
        "--batch_size=1",
        f"--output_path={setup.folder / 'lm_eval_out'}",
        "--log_samples",  # per-sample records, as the other two tools keep
    ]


def lm_eval_accuracy(setup: Setup) -> float | None:
    for path in (setup.folder / "lm_eval_out").rglob("results_*.json"):
        return float(json.loads(path.read_text())["results"][TASK]["exact_match,none"])
    return None


# ---------------------------------------------------------------- inspect-ai

_INSPECT_TASK = """\
from inspect_ai import Task, task
from inspect_ai.dataset import FieldSpec, json_dataset
from inspect_ai.scorer import exact
from inspect_ai.solver import generate


@task
def {name}():
    fields = FieldSpec(input="prompt", target="answer", id="id")
    return Task(dataset=json_dataset({path!r}, fields), solver=generate(), scorer=exact())
"""


def inspect_command(setup: Setup) -> list[str]:
    """``inspect eval`` with the openai-api provider (chat completions) at the fake server."""
    task_file = setup.folder / "inspect_task.py"
    task_file.write_text(_INSPECT_TASK.format(name=TASK, path=str(setup.examples)))
    return [
        setup.compare_python,
        "-m",
        "inspect_ai",
        "eval",
        f"{task_file}@{TASK}",
        f"--model=openai-api/fake/{MODEL}",  # FAKE_BASE_URL, FAKE_API_KEY in the environment
        f"--max-connections={setup.concurrency}",
        f"--max-retries={MAX_RETRIES}",
        f"--max-tokens={MAX_TOKENS}",
        "--temperature=0",
        f"--log-dir={setup.folder / 'inspect_logs'}",
        "--display=none",
    ]


_INSPECT_ACCURACY = """\
import sys
from inspect_ai.log import list_eval_logs, read_eval_log
log = read_eval_log(list_eval_logs(sys.argv[1])[0], header_only=True)
print(log.results.scores[0].metrics["mean"].value if log.results else "")
"""


def inspect_accuracy(setup: Setup) -> float | None:
    """Read from its log with inspect's own reader (the .eval zip is zstd-compressed)."""
    command = [setup.compare_python, "-c", _INSPECT_ACCURACY, str(setup.folder / "inspect_logs")]
    done = subprocess.run(command, capture_output=True, text=True)
    return float(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


TOOL_TABLE = {
    "expertbench": Tool(
        "pytest --expert-bench",
        "pytest-expertbench",
        False,
        expertbench_tool_command,
        expertbench_accuracy,
    ),
    "lm-eval": Tool("lm-eval", "lm_eval", True, lm_eval_command, lm_eval_accuracy),
    "inspect": Tool("inspect-ai", "inspect_ai", True, inspect_command, inspect_accuracy),
}


# ---------------------------------------------------------------- running


def environment(setup: Setup) -> dict[str, str]:
    """Offline, fresh caches in the temp folder, and the fake server as inspect's service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "INSPECT_"))}
    env |= {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(setup.folder / "hf_home"),
        "FAKE_BASE_URL": setup.base_url,
        "FAKE_API_KEY": "unused",
        "NO_COLOR": "1",
    }
    return env


def installed_version(tool: Tool, setup: Setup) -> str | None:
    """The tool's version in its own interpreter; None when it is not installed there."""
    if not tool.external:
        try:
            return version(tool.package)
        except PackageNotFoundError:
            return None
    if not Path(setup.compare_python).exists():
        return None
    probe = f"from importlib.metadata import version; print(version({tool.package!r}))"
    command = [setup.compare_python, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def run_once(command: list[str], setup: Setup, server: Server, n: int) -> tuple[float, str]:
    """Wall seconds of one run, and a problem ("" when the server saw exactly N prompts)."""
    server.reset()
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=setup.folder, env=environment(setup), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n    ".join((done.stdout + done.stderr).splitlines()[-15:])
        return elapsed, f"exit code {done.returncode}:\n    {tail}"
    return elapsed, asked_problem(server, n)


def server_stats(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.root}/_stats")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def asked_problem(server: Server, n: int) -> str:
    stats = server_stats(server)
    counts: dict[str, int] = stats["counts"]
    expected = {prompt_of(i) for i in range(n)}
    missing, extra = expected - counts.keys(), counts.keys() - expected
    repeated = sum(1 for c in counts.values() if c > 1)
    if missing or extra or repeated or stats["total"] != n:
        return (
            f"server saw {stats['total']} requests: {len(missing)} prompts missing, "
            f"{len(extra)} unexpected, {repeated} asked more than once"
        )
    return ""


def unmeasured(key: str, setup: Setup) -> Outcome:
    """The tool's version, or why it is skipped."""
    tool = TOOL_TABLE[key]
    found = installed_version(tool, setup)
    if found is None:
        where = setup.compare_python if tool.external else sys.executable
        return Outcome(
            tool.name, "-", problem=f"skipped: {tool.package} is not installed in {where}"
        )
    return Outcome(tool.name, found)


def measure_once(key: str, attempt: int, outcome: Outcome, setup: Setup, server: Server) -> Outcome:
    """One more run of the tool, folded into its outcome."""
    tool = TOOL_TABLE[key]
    run_setup = dataclasses.replace(setup, folder=setup.folder / f"{key}-{attempt}")
    run_setup.folder.mkdir()
    wall, problem = run_once(tool.command(run_setup), run_setup, server, setup.n)
    if problem:
        return dataclasses.replace(outcome, walls=(), problem=problem)
    stats = server_stats(server)
    return dataclasses.replace(
        outcome,
        walls=(*outcome.walls, wall),
        asked=int(stats["total"]),
        max_in_flight=max(outcome.max_in_flight, int(stats["max_concurrent"])),
        accuracies=(*outcome.accuracies, tool.accuracy(run_setup)),
    )


def measure(keys: Sequence[str], setup: Setup, server: Server, repeat: int) -> list[Outcome]:
    """Round-robin over the tools, so a noisy neighbour on the machine hits all of them alike."""
    outcomes = {key: unmeasured(key, setup) for key in keys}
    for attempt in range(repeat):
        for key in keys:
            if not outcomes[key].problem:
                outcomes[key] = measure_once(key, attempt, outcomes[key], setup, server)
    return list(outcomes.values())


def report(outcomes: Sequence[Outcome], args: argparse.Namespace) -> None:
    limit = args.n * args.latency / min(args.concurrency, args.capacity)
    print(
        f"N={args.n} latency={args.latency:g}s capacity={args.capacity} "
        f"concurrency={args.concurrency} limit={limit:.2f}s repeat={args.repeat} (median wall)"
    )
    reference = next((o for o in outcomes if o.tool.startswith("pytest") and o.walls), None)
    header = f"  {'tool':<22} {'version':<9} {'wall s':>8} {'asked':>6} {'in flight':>9}"
    header += f" {'accuracy':>8}"
    print(header + f" {'wall/limit':>10} {'vs expertbench':>14}  runs")
    for outcome in outcomes:
        if not outcome.walls:
            print(f"  {outcome.tool:<22} {outcome.version:<9} {outcome.problem}")
            continue
        versus = f"{outcome.wall / reference.wall:.2f}x" if reference else "-"
        per_limit = f"{outcome.wall / limit:.2f}" if limit > 0 else "-"
        runs = " ".join(f"{w:.2f}" for w in outcome.walls)
        accuracy = "?" if outcome.accuracy is None else f"{outcome.accuracy:.3f}"
        print(
            f"  {outcome.tool:<22} {outcome.version:<9} {outcome.wall:>8.2f} {outcome.asked:>6} "
            f"{outcome.max_in_flight:>9} {accuracy:>8} {per_limit:>10} {versus:>14}  {runs}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(__doc__)
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool, median shown [1]")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    parser.add_argument("--compare-python", default=COMPARE_PYTHON, help="the others' Python")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.tools.split(",") if k.strip()]
    unknown = [k for k in keys if k not in TOOL_TABLE]
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    with (
        tempfile.TemporaryDirectory(prefix="expertbench-versus-") as temp,
        fake_server(args.latency, args.capacity) as server,
    ):
        folder = Path(temp)
        examples = write_examples(folder, args.n)
        setup = Setup(
            folder, args.n, examples, server.base_url, args.concurrency, args.compare_python
        )
        load_before = os.getloadavg()[0]
        outcomes = measure(keys, setup, server, args.repeat)
    load_after = os.getloadavg()[0]
    report(outcomes, args)
    print(f"  load average (1 min): {load_before:.2f} before, {load_after:.2f} after")


if __name__ == "__main__":
    main()
