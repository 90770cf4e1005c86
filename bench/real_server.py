"""Run pytest-expertbench against a real OpenAI-compatible server and print pass/fail.

Our fake servers (tests/support/fake_openai.py) have hidden bugs before: this script asks
a server that someone else wrote (``transformers serve``, llama.cpp, vLLM, Ollama's /v1)
what it answers, then runs the plugin against it as users run it (pytest in a subprocess
on benchmarks written to a temporary folder) and checks what the plugin made of it.

Against a server already running::

    python bench/real_server.py --base-url http://127.0.0.1:8000/v1 --model MODEL

Or let the script start ``transformers serve`` from a virtualenv (it then also kills it
mid-run, for the "server killed" check, and starts it again)::

    python bench/real_server.py --server-venv /work/realserver/venv --model /path/to/model

It builds nothing: the model and the server's environment are yours. Each check prints
one row (PASS, FAIL or SKIP and what was seen); ``--raw`` prints the server's own answers
(status, usage, tool-call and stream shapes) first. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What does the plugin do?",
    "How is a run judged?",
    "What is a target?",
    "Where do baselines live?",
]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass(frozen=True)
class Server:
    """Where the server answers; ``restart`` is set only when this script started it."""

    base_url: str
    model: str
    kill: Callable[[], None] | None = None
    restart: Callable[[], None] | None = None


@dataclass
class Run:
    """One pytest run of the plugin: its exit code, output and results.jsonl rows."""

    code: int
    output: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def examples(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("type") == "example"]

    def request_line(self) -> str:
        lines = [line for line in self.output.splitlines() if line.startswith("requests ")]
        return lines[-1] if lines else ""


@dataclass
class Table:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, check: str, ok: bool | None, seen: str) -> None:
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append((check, verdict, seen))
        print(f"{verdict:4}  {check:28} {seen}", flush=True)

    @property
    def failed(self) -> bool:
        return any(verdict == "FAIL" for _, verdict, _ in self.rows)


# --- the server's own answers ------------------------------------------------------------


def raw_answers(server: Server) -> None:
    """Print what the server answers to each request shape the plugin sends."""
    chat = f"{server.base_url}/chat/completions"
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    base = {"model": server.model, "max_tokens": 12, "temperature": 0}
    shapes: dict[str, tuple[str, dict[str, Any]]] = {
        "chat": (chat, {**base, "messages": messages}),
        "completions": (f"{server.base_url}/completions", {**base, "prompt": QUESTIONS[0]}),
        "chat+tools": (chat, {**base, "messages": messages, "tools": [TOOL]}),
        "unknown model": (chat, {**base, "model": "no-such-model", "messages": messages}),
        "chat stream": (
            chat,
            {
                **base,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
    }
    with httpx.Client(timeout=120) as client:
        for name, (url, body) in shapes.items():
            try:
                answer = client.post(url, json=body)
                text = answer.text
            except httpx.HTTPError as error:
                print(f"raw {name}: {type(error).__name__}: {error}")
                continue
            print(f"raw {name}: HTTP {answer.status_code} {answer.headers.get('content-type')}")
            print("   ", text[:1500].replace("\n", "\n    "))


# --- plugin runs ---------------------------------------------------------------------------


def write_bench(folder: Path, target: dict[str, Any], **benchmark: Any) -> Path:
    """A benchmark folder: four questions, one benchmark ``real`` and the target ``t``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "question": q, "city": "Oslo"} for i, q in enumerate(QUESTIONS)]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec: dict[str, Any] = {
        "name": "real",
        "dataset": {"file": "data.jsonl", "id": "id"},
        "suites": {"real": "all"},
        "prompt": "{question}",
        "generation": {"max_tokens": 16, "temperature": 0},
        "scorers": [{"length": {}}],
        "metrics": {"chars": {"of": "length", "agg": "mean", "direction": "higher"}},
    }
    spec.update(benchmark)
    (folder / "real.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    targets = {"default": "t", "targets": {"t": {"kind": "openai", **target}}}
    (folder / "targets.yaml").write_text(yaml.safe_dump(targets, sort_keys=False))
    return folder


def run_plugin(folder: Path, *extra: str, timeout_s: float = 600) -> Run:
    report = folder / f"report-{time.monotonic_ns()}"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--expert-bench=real",
        f"--expert-bench-dir={folder}",
        f"--expert-bench-targets={folder / 'targets.yaml'}",
        f"--expert-bench-report-dir={report}",
        f"--expert-bench-cache-dir={folder / 'cache'}",
        "--rootdir",
        str(folder),
        *extra,
    ]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    results = report / "results.jsonl"
    rows = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    return Run(done.returncode, done.stdout + done.stderr, rows, time.monotonic() - started)


def usage_of(run: Run) -> str:
    tokens = [
        (row["scores"].get("prompt_tokens"), row["scores"].get("completion_tokens"))
        for row in run.examples()
    ]
    return f"tokens (in, out) {tokens}"


def errors_of(run: Run) -> list[str]:
    return [row["error"] for row in run.examples() if row.get("error")]


def one_line_errors(run: Run) -> bool:
    errors = errors_of(run)
    return bool(errors) and all("\n" not in error and len(error) < 400 for error in errors)


def tail(run: Run, lines: int = 6) -> str:
    return " | ".join(run.output.strip().splitlines()[-lines:])


# --- the checks ----------------------------------------------------------------------------


def check_chat(server: Server, work: Path, table: Table) -> Run:
    run = run_plugin(write_bench(work / "chat", target(server)))
    examples = run.examples()
    has_usage = all(
        isinstance(row["scores"].get("completion_tokens"), (int, float)) for row in examples
    )
    ok = run.code == 0 and len(examples) == 4 and not errors_of(run) and has_usage
    table.add("chat endpoint", ok, f"exit {run.code}; {usage_of(run)}; {errors_of(run)[:1]}")
    return run


def check_completions(server: Server, work: Path, table: Table) -> None:
    run = run_plugin(write_bench(work / "completions", target(server, endpoint="completions")))
    examples = run.examples()
    ok = run.code == 0 and len(examples) == 4 and not errors_of(run)
    seen = f"exit {run.code}; {usage_of(run)}; {errors_of(run)[:1] or tail(run, 2)}"
    table.add("completions endpoint", ok, seen)
    options = {"endpoint": "completions", "stream": True}
    streamed = run_plugin(write_bench(work / "completions-stream", target(server, **options)))
    same = [r["response"] for r in streamed.examples()] == [r["response"] for r in examples]
    # vLLM's rule: an answer with no text has no first token (this model often says nothing)
    timed = all("ttft_ms" in r["scores"] for r in streamed.examples() if r["response"])
    ok = streamed.code == 0 and same and timed and bool(examples)
    seen = (
        f"exit {streamed.code}; equal to non-streamed: {same}; ttft_ms on each non-empty: {timed}"
    )
    table.add("completions, streamed", ok, f"{seen}; {errors_of(streamed)[:1]}")


def check_generation(server: Server, work: Path, table: Table) -> None:
    """max_tokens caps the answer; stop cuts it; a seed at temperature 1 answers alike twice."""
    capped = run_plugin(
        write_bench(work / "max_tokens", target(server), generation={"max_tokens": 3})
    )
    counts = [row["scores"].get("completion_tokens") for row in capped.examples()]
    ok = capped.code == 0 and bool(counts) and all(c is not None and c <= 3 for c in counts)
    table.add("max_tokens: 3", ok, f"exit {capped.code}; completion_tokens {counts}")

    plain = run_plugin(write_bench(work / "nostop", target(server)))
    whole = [row["response"] for row in plain.examples()]
    stop = next((text[6:9] for text in whole if len(text) > 12), "e")
    generation = {"max_tokens": 16, "temperature": 0, "stop": [stop]}
    stopped = run_plugin(write_bench(work / "stop", target(server), generation=generation))
    cut = [row["response"] for row in stopped.examples()]
    # OpenAI leaves the stop sequence out; some servers keep it: both are a cut answer.
    # HF's stop_strings end on the token that completes the stop: the rest of it stays.
    cut_right = [
        (len(a) < len(b) and b.startswith(a)) if stop in b else a == b
        for a, b in zip(cut, whole, strict=False)
    ]
    kept = any(stop in text for text in cut)
    ok = stopped.code == 0 and len(cut) == len(whole) > 0 and all(cut_right)
    seen = f"exit {stopped.code}; {cut[:2]} (unstopped {whole[:1]}); stop kept: {kept}"
    table.add(f"stop: [{stop!r}]", ok, seen)

    # One request at a time: transformers serve seeds torch's global generator, so requests
    # in flight together draw from one stream and a seed alone does not fix an answer.
    sampled = {"max_tokens": 16, "temperature": 1.0, "seed": 7}
    one = target(server, concurrency=1)
    first = run_plugin(write_bench(work / "seed1", one, generation=sampled))
    second = run_plugin(write_bench(work / "seed2", one, generation=sampled))
    a = [row["response"] for row in first.examples()]
    b = [row["response"] for row in second.examples()]
    table.add(
        "seed 7 at temperature 1", first.code == 0 and a == b and bool(a), f"{a[:1]} vs {b[:1]}"
    )


def check_tools(server: Server, work: Path, table: Table) -> None:
    folder = write_bench(
        work / "tools",
        target(server),
        prompt="What's the weather in {city}?",
        generation={"max_tokens": 64, "temperature": 0},  # a whole call; cut, it is a 500
        tools=[TOOL],
        scorers=[{"tool_selection": {"expected_field": "expected"}}],
        metrics={"selection": {"of": "tool_selection", "agg": "mean", "direction": "higher"}},
    )
    rows = [
        {"id": f"q{i}", "city": city, "expected": [{"get_weather": {"city": [city]}}]}
        for i, city in enumerate(["Oslo", "Paris", "Rome", "Lima"])
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = run_plugin(folder)
    calls = [row.get("tool_calls") for row in run.examples()]
    ok = run.code == 0 and not errors_of(run) and len(calls) == 4
    table.add("tools", ok, f"exit {run.code}; calls {calls[:2]}; {errors_of(run)[:1]}")
    targets = {"default": "t", "targets": {"t": {"kind": "openai", **target(server, stream=True)}}}
    (folder / "targets.yaml").write_text(yaml.safe_dump(targets, sort_keys=False))
    streamed = run_plugin(folder)
    streamed_calls = [row.get("tool_calls") for row in streamed.examples()]
    seen = f"exit {streamed.code}; equal to non-streamed: {streamed_calls == calls}"
    if not any(calls):  # e.g. transformers serve parses tool calls of a few model types only
        table.add("tools, streamed", None, f"the model made no tool calls to compare; {seen}")
        return
    ok = streamed.code == 0 and streamed_calls == calls and not errors_of(streamed)
    table.add("tools, streamed", ok, f"{seen}; {errors_of(streamed)[:1]}")


def check_stream(server: Server, work: Path, table: Table, plain: Run) -> None:
    run = run_plugin(write_bench(work / "stream", target(server, stream=True)))
    examples = run.examples()
    scores = [row["scores"] for row in examples]
    timed = all(
        isinstance(s.get("ttft_ms"), (int, float))
        and 0 < s["ttft_ms"] <= s["latency_ms"]
        and (s.get("tpot_ms") is None or 0 <= s["tpot_ms"] <= s["latency_ms"])
        for s in scores
    )
    same = [row["response"] for row in examples] == [row["response"] for row in plain.examples()]
    usage = all(isinstance(s.get("completion_tokens"), (int, float)) for s in scores)
    ok = run.code == 0 and len(examples) == 4 and timed and same and usage
    figures = [
        (round(s.get("ttft_ms") or -1), round(s.get("tpot_ms") or -1), round(s["latency_ms"]))
        for s in scores
        if "latency_ms" in s
    ]
    seen = (
        f"exit {run.code}; (ttft, tpot, latency) ms {figures}; equal to non-streamed: {same}; "
        f"{usage_of(run)}; {errors_of(run)[:1]}"
    )
    table.add("stream: true", ok, seen)


def check_repeats(server: Server, work: Path, table: Table) -> None:
    generation = {"max_tokens": 8, "temperature": 1.0, "seed": 3}
    run = run_plugin(
        write_bench(work / "repeats", target(server), generation=generation, repeats=3)
    )
    repeats = [len((row.get("repeat_scores") or {}).get("length", [])) for row in run.examples()]
    line = run.request_line()
    ok = run.code == 0 and repeats == [3] * 4 and "12 asked" in line
    table.add("repeats: 3", ok, f"exit {run.code}; repeat_scores {repeats}; {line}")


def check_cache(server: Server, work: Path, table: Table) -> None:
    folder = write_bench(work / "cache", target(server))
    first = run_plugin(folder)
    second = run_plugin(folder, "--expert-bench-cache=reuse")
    same = [r["response"] for r in first.examples()] == [r["response"] for r in second.examples()]
    line = second.request_line()
    ok = first.code == 0 and second.code == 0 and "4 from the cache" in line and same
    table.add("cache (reuse)", ok, f"{line}; same answers: {same}")


def check_xdist(server: Server, work: Path, table: Table, plain: Run) -> None:
    run = run_plugin(write_bench(work / "xdist", target(server)), "-n", "2")
    same = sorted(r["response"] for r in run.examples()) == sorted(
        r["response"] for r in plain.examples()
    )
    ok = run.code == 0 and len(run.examples()) == 4 and same
    table.add("-n 2", ok, f"exit {run.code}; same answers as serial: {same}; {run.request_line()}")


def check_unknown_model(server: Server, work: Path, table: Table) -> None:
    folder = write_bench(work / "unknown", {**target(server), "model": "no-such-model"})
    run = run_plugin(folder)
    errors = errors_of(run)
    ok = run.code != 0 and one_line_errors(run) and "retries" in run.request_line()
    seen = f"exit {run.code}; {errors[:1]}; {run.request_line()}; {run.seconds:.1f} s"
    table.add("unknown model", ok, seen)


def check_refused_key(server: Server, work: Path, table: Table) -> None:
    """A key the server refuses (transformers serve: 422) fails each item once, unretried."""
    generation = {"max_tokens": 8, "temperature": 0, "no_such_setting": 1}
    run = run_plugin(write_bench(work / "refused", target(server), generation=generation))
    line = run.request_line()
    ok = run.code != 0 and one_line_errors(run) and " 0 retries" in line
    table.add("refused request key", ok, f"exit {run.code}; {errors_of(run)[:1]}; {line}")


def check_reset_after_500(server: Server, work: Path, table: Table) -> None:
    """A server that answered 500 and then reset the kept-alive connection was reached:
    the run must not call it unreachable. transformers serve does both when a tool call is
    cut by max_tokens (its parser raises); one request at a time, no retries, to see it."""
    folder = write_bench(
        work / "reset",
        target(server, concurrency=1, max_retries=0),
        prompt="What's the weather in {city}?",
        tools=[TOOL],
        generation={"max_tokens": 16, "temperature": 0},
    )
    cities = ["Oslo", "Paris", "Rome", "Lima", "Bern", "Cairo"]
    rows = [{"id": f"q{i}", "city": city} for i, city in enumerate(cities)]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = run_plugin(folder)
    errors = errors_of(run)
    if not any(error.startswith("HTTP 500") for error in errors):
        table.add("500 then a reset", None, f"the server gave no 500 here: {errors[:1]}")
        return
    unreachable = [error for error in errors if "unreachable" in error]
    ok = not unreachable
    seen = f"{len(unreachable)} of {len(errors)} errors say unreachable; {sorted(set(errors))[:3]}"
    table.add("500 then a reset", ok, seen)


def check_killed(server: Server, work: Path, table: Table) -> None:
    """Kill the server while the run is asking; the run must end with one-line errors."""
    if server.kill is None or server.restart is None:
        table.add("server killed mid-run", None, "needs --server-venv (this script's own server)")
        return
    many = {"max_tokens": 200, "temperature": 0}
    folder = write_bench(
        work / "killed", target(server, max_retries=1, concurrency=1), generation=many
    )
    # Enough rows that a model which stops early (10 tokens, not 200) is still asking at 3 s
    rows = [{"id": f"q{i}", "question": f"{QUESTIONS[i % 4]} ({i})"} for i in range(400)]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    kill, restart = server.kill, server.restart
    killed = threading.Event()

    def kill_now() -> None:
        killed.set()
        kill()

    timer = threading.Timer(3.0, kill_now)
    timer.start()
    try:
        run = run_plugin(folder, timeout_s=300)
    finally:
        timer.cancel()
        if killed.is_set():
            restart()
    if not killed.is_set():
        table.add("server killed mid-run", None, f"the run ended in {run.seconds:.1f} s, unkilled")
        return
    errors = errors_of(run)
    answered = len(run.examples()) - len(errors)
    ok = run.code != 0 and one_line_errors(run) and run.seconds < 120
    seen = (
        f"exit {run.code} in {run.seconds:.1f} s; {answered} answered, {len(errors)} errored; "
        f"{sorted(set(errors))[:2]}; {run.request_line()}"
    )
    table.add("server killed mid-run", ok, seen)


def target(server: Server, **options: Any) -> dict[str, Any]:
    return {"base_url": server.base_url, "model": server.model, "timeout_s": 120, **options}


# --- a server this script starts -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer {url} in {timeout_s:.0f} s")


@dataclass
class ManagedServer:
    """``transformers serve`` from a virtualenv, on a port of its own, restartable."""

    venv: Path
    model: str
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start the server, killing the one this object started before if it still runs
        (else it would answer the health check and outlive the script)."""
        self.kill()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        command = [str(self.venv / "bin" / "transformers"), "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), self.model]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        wait_healthy(f"{self.base_url}/models", self.process)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        self.start()
        try:
            yield Server(self.base_url, self.model, kill=self.kill, restart=self.start)
        finally:
            self.kill()


def run_checks(server: Server, work: Path, raw: bool) -> Table:
    if raw:
        raw_answers(server)
    table = Table()
    plain = check_chat(server, work, table)
    check_completions(server, work, table)
    check_generation(server, work, table)
    check_tools(server, work, table)
    check_stream(server, work, table, plain)
    check_repeats(server, work, table)
    check_cache(server, work, table)
    check_xdist(server, work, table, plain)
    check_unknown_model(server, work, table)
    check_refused_key(server, work, table)
    check_reset_after_500(server, work, table)
    check_killed(server, work, table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--base-url", help="a running server's OpenAI base URL (…/v1)")
    where.add_argument("--server-venv", type=Path, help="a virtualenv with transformers serve")
    parser.add_argument("--model", required=True, help="the model name (or path) to ask")
    parser.add_argument("--raw", action="store_true", help="print the server's own answers")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="real-server-"))
    with contextlib.ExitStack() as stack:
        if args.server_venv:
            managed = ManagedServer(args.server_venv, args.model, work / "server.log")
            server = stack.enter_context(managed.running())
            print(f"started transformers serve at {server.base_url} (log {managed.log})")
        else:
            server = Server(args.base_url.rstrip("/"), args.model)
        table = run_checks(server, work, args.raw)
    print(
        f"\n{sum(v == 'PASS' for _, v, _ in table.rows)} passed, "
        f"{sum(v == 'FAIL' for _, v, _ in table.rows)} failed"
        + (f" (work folder {work})" if args.keep else "")
    )
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
