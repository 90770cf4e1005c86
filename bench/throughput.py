"""How close a benchmark run comes to the physical limit of its model server.

A fake OpenAI-compatible server (tests/support/fake_openai.py) answers every request
after ``--latency`` seconds, ``--capacity`` at a time. In the same run this script
measures:

  (a) wall   pytest --expert-bench over N generated examples (a subprocess), every
             feature on: a fresh response cache storing each answer, reports, and
             the comparison with a baseline an untimed first run saved
  (b) seq    the same N requests asked one after another with httpx.Client
  (c) bare   plain pytest running N trivial parametrized tests
  (d) limit  N x latency / min(concurrency, capacity): no engine can do better
             (with --judge: 2 x N x latency / min(concurrency, capacity / 2))
  (e) client the plain alternative: the same requests from a bare asyncio loop, one
             httpx.AsyncClient per request in flight, as many in flight as (d) allows,
             no pytest. What it takes beyond (d) is the fake server's own overhead (a
             threaded Python server on the same two cores answers 32 requests of 0.2 s
             in about 0.206 s each, not 0.2) and the last, partial round of requests,
             which no client can avoid.

  (f) overlap bare pytest's N trivial tests with the plain client (e) running on a thread
             of the same process: the floor of any design that asks the model from
             pytest's process, since the client's CPU and pytest's share one GIL

and prints wall/(limit+bare) (the plugin's own cost: 1.0 is perfect), wall/(client+bare)
(its cost against the plain alternative), wall/overlap (against the in-process floor),
wall/limit, seq/wall (the speed-up over a sequential loop) and wall/bare.

    python bench/throughput.py --n 1319 --latency 0.2 --capacity 64 --concurrency 32
    python bench/throughput.py --n 1319 --latency 0.2 --skip-sequential
    python bench/throughput.py --latency 0 --skip-sequential --repeat 5   # a noisy machine
    python bench/throughput.py --n 400 --judge --skip-sequential   # model + judge per example
    python bench/throughput.py --replicas 2 --capacity 16 --concurrency auto --skip-sequential
                             # two servers as one target's base_url list, concurrency auto:
                             # the limit is then N x latency / (replicas x capacity)
    python bench/throughput.py --memory 20000     # peak RSS of a 20 000-item run, latency 0
                                                  # (pytest and its children, summed)

Run from anywhere; it starts its server with this checkout's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
# Runs are timed as users run them: writing bytecode. With PYTHONDONTWRITEBYTECODE (set
# on this project's machines) pytest cannot keep the assertion-rewritten modules of a
# plugin it loads (every module of this package), and parses and rewrites them all
# again on every run: 1.8 s of CPU per run measured, which no user pays twice.
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
BENCHMARK = "bench"


@dataclass(frozen=True)
class Server:
    base_url: str
    process: subprocess.Popen[str]

    def reset(self) -> None:
        httpx.post(f"{self.root}/_control", json={"reset": True}).raise_for_status()

    def total(self) -> int:
        return int(httpx.get(f"{self.root}/_stats").json()["total"])

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")


@contextmanager
def fake_server(latency: float, capacity: int) -> Iterator[Server]:
    command = [sys.executable, "-m", "tests.support.fake_openai", "--port", "0"]
    command += ["--latency", str(latency), "--capacity", str(capacity)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield Server(f"http://127.0.0.1:{port}/v1", process)
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def fake_servers(latency: float, capacity: int, replicas: int) -> Iterator[list[Server]]:
    """``replicas`` fake servers of ``capacity`` slots each (one target's base_url list)."""
    with ExitStack() as stack:
        yield [stack.enter_context(fake_server(latency, capacity)) for _ in range(replicas)]


def concurrency_value(text: str) -> int | str:
    """``--concurrency``: a whole number, or ``auto``."""
    return "auto" if text == "auto" else int(text)


def prompt_of(i: int) -> str:
    return f"Answer with the question's number.\nquestion {i}"


def write_benchmark(
    folder: Path,
    n: int,
    base_url: str | list[str],
    concurrency: int | str,
    *,
    judge: bool = False,
) -> Path:
    """A benchmark directory: N examples, one benchmark in suite ``bench``, one target;
    with ``judge``, a judge scorer too, asking a second target on the same server."""
    suite = folder / "suite"
    suite.mkdir(parents=True)
    (folder / "baselines").mkdir(exist_ok=True)  # named on the command line: must exist
    with (suite / "data.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(n):
            row = {"id": f"q{i}", "question": f"question {i}", "answer": f"ANSWER: question {i}"}
            handle.write(json.dumps(row) + "\n")
    benchmark = {
        "name": BENCHMARK,
        "description": "generated by bench/throughput.py",
        "dataset": {"file": "data.jsonl", "id": "id"},
        "suites": {BENCHMARK: "all"},
        "prompt": "Answer with the question's number.\n{question}",
        "generation": {"max_tokens": 16, "temperature": 0},
        "scorers": [{"exact_match": {"target": "{answer}"}}],
        "metrics": {
            "accuracy": {"of": "exact_match", "agg": "mean", "direction": "higher"},
            "latency_p95_ms": {"of": "latency_ms", "agg": "p95", "direction": "lower"},
        },
    }
    target = {"kind": "openai", "base_url": base_url, "model": "bench", "concurrency": concurrency}
    targets = {"default": "fake", "targets": {"fake": target}}
    if judge:  # the fake answers "ANSWER: <last line>": the rubric's last line is the verdict
        rubric = "Grade this answer: {response}\nPASS"
        benchmark["scorers"].append({"judge": {"target": "judge", "rubric": rubric}})
        benchmark["scorers"][-1]["judge"]["parse"] = "verdict"
        benchmark["metrics"]["judged"] = {"of": "judge", "agg": "rate", "direction": "higher"}
        targets["targets"]["judge"] = {**target, "model": "judge"}
    (suite / f"{BENCHMARK}.yaml").write_text(yaml.safe_dump(benchmark, sort_keys=False))
    (suite / "targets.yaml").write_text(yaml.safe_dump(targets, sort_keys=False))
    return suite


def expertbench_command(
    folder: Path, suite: Path, concurrency: int | str, *, cache: str | None = None
) -> list[str]:
    """The plugin's run. ``cache``: a fresh cache folder's name (every feature on: the
    cache stores every answer, none served), else the cache is off."""
    cache_options = ["--expert-bench-cache=off"]
    if cache is not None:
        cache_options = [
            "--expert-bench-cache=resume",
            f"--expert-bench-cache-dir={folder / cache}",
        ]
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--expert-bench={BENCHMARK}",
        f"--expert-bench-dir={suite}",
        *cache_options,
        f"--expert-bench-concurrency={concurrency}",
        f"--expert-bench-report-dir={folder / 'reports'}",
        f"--expert-bench-baseline-dir={folder / 'baselines'}",
    ]


def write_bare_tests(folder: Path, n: int, name: str = "bare") -> Path:
    bare = folder / name
    bare.mkdir()
    (bare / "test_bare.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({n}))\n"
        "def test_item(i):\n    assert i >= 0\n"
    )
    return bare


OVERLAP_CONFTEST = """
import os, sys, threading

sys.path.insert(0, os.environ["EXPERTBENCH_BENCH_DIR"])
from throughput import plain_client

URLS = os.environ["EXPERTBENCH_BENCH_URLS"].split(",")
REQUESTS = int(os.environ["EXPERTBENCH_BENCH_REQUESTS"])
SLOTS = int(os.environ["EXPERTBENCH_BENCH_SLOTS"])
done = threading.Event()


def _ask():
    try:
        plain_client(URLS, REQUESTS, SLOTS)
    finally:
        done.set()


def pytest_sessionstart(session):
    threading.Thread(target=_ask, daemon=True).start()


def pytest_sessionfinish(session):
    done.wait()
"""


def write_overlap_tests(folder: Path, n: int) -> Path:
    """The bare tests, with a conftest that runs the plain client on a thread meanwhile."""
    overlap = write_bare_tests(folder, n, name="overlap")
    (overlap / "conftest.py").write_text(OVERLAP_CONFTEST)
    return overlap


def overlap_env(urls: list[str], requests: int, slots: int) -> dict[str, str]:
    return {
        **RUN_ENV,
        "EXPERTBENCH_BENCH_DIR": str(Path(__file__).resolve().parent),
        "EXPERTBENCH_BENCH_URLS": ",".join(urls),
        "EXPERTBENCH_BENCH_REQUESTS": str(requests),
        "EXPERTBENCH_BENCH_SLOTS": str(slots),
    }


def bare_command() -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_bare.py"]


def timed(
    command: list[str], cwd: Path, echo: str | None = None, env: dict[str, str] | None = None
) -> float:
    """Seconds ``command`` took; ``echo``: print its output lines that start so."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env or RUN_ENV)
    elapsed = time.perf_counter() - started
    for line in done.stdout.splitlines() if echo else ():
        if line.startswith(echo or ""):
            print(f"  {line}")
    if done.returncode != 0 and not _only_gates_failed(done.stdout):
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"{' '.join(command[:4])}… failed ({done.returncode}):\n{tail}")
    return elapsed


def _only_gates_failed(output: str) -> bool:
    """A run whose only failures are gate items: a timed run is compared with the
    baseline, and latency on a busy machine may well regress; the time still counts."""
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return bool(failed) and all(line.split(" ")[1].endswith("::gate") for line in failed)


def sequential(base_url: str, n: int) -> float:
    started = time.perf_counter()
    with httpx.Client(timeout=120.0) as client:
        for i in range(n):
            payload = {
                "model": "bench",
                "messages": [{"role": "user", "content": prompt_of(i)}],
                "max_tokens": 16,
                "temperature": 0,
            }
            response = client.post(f"{base_url}/chat/completions", json=payload)
            response.raise_for_status()
            response.json()
    return time.perf_counter() - started


def plain_client(urls: list[str], requests: int, slots: int) -> float:
    """Seconds for ``requests`` chat requests, ``slots`` at a time, round-robin over
    ``urls``, from a bare asyncio loop (one httpx client per request in flight, sharing
    one TLS context as the engine's do)."""

    async def ask_all() -> None:
        queue = iter(range(requests))
        tls = httpx.create_ssl_context()  # made once: each costs about 40 ms of CPU

        async def worker() -> None:
            async with httpx.AsyncClient(timeout=120.0, verify=tls) as client:
                for i in queue:
                    payload = {
                        "model": "bench",
                        "messages": [{"role": "user", "content": prompt_of(i)}],
                        "max_tokens": 16,
                        "temperature": 0,
                    }
                    url = f"{urls[i % len(urls)]}/chat/completions"
                    response = await client.post(url, json=payload)
                    response.raise_for_status()
                    response.json()

        await asyncio.gather(*(worker() for _ in range(slots)))

    started = time.perf_counter()
    asyncio.run(ask_all())
    return time.perf_counter() - started


def peak_rss_mb(command: list[str], cwd: Path) -> float:
    """Peak of the summed RSS of ``command`` and its descendants (a sympy helper, a server).

    Sampled from /proc every 20 ms: a process's own peak (ru_maxrss) would miss that
    processes a run starts (a sympy helper for math scorers) add their memory to pytest's.
    """
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, env=RUN_ENV)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kb(process.pid))
        time.sleep(0.02)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}… failed ({process.returncode})")
    return peak / 1024


def _tree_rss_kb(root: int) -> int:
    """RSS of ``root`` and every process below it, in KB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields.get("PPid", "0").strip()), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def throughput(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="expertbench-") as temp,
        fake_servers(args.latency, args.capacity, args.replicas) as servers,
    ):
        server = servers[0]
        folder = Path(temp)
        urls = [s.base_url for s in servers]
        base_url = urls if len(urls) > 1 else server.base_url
        suite = write_benchmark(folder, args.n, base_url, args.concurrency, judge=args.judge)
        bare_dir = write_bare_tests(folder, args.n)
        overlap_dir = write_overlap_tests(folder, args.n)
        walls, bares, overlaps = [], [], []
        # A first run records the baseline every timed run is then compared with.
        saving = expertbench_command(folder, suite, args.concurrency, cache="cache-0")
        timed([*saving, "--expert-bench-save-baseline"], folder)
        timed(bare_command(), bare_dir)  # its bytecode too, as the plugin's first run wrote
        shares: list[list[int]] = []  # requests each replica got, per run
        clients: list[float] = []
        passes, slots = _passes_and_slots(args)
        for run in range(1, args.repeat + 1):  # taking turns, so that a noisy spell hits all
            for each in servers:
                each.reset()
            command = expertbench_command(folder, suite, args.concurrency, cache=f"cache-{run}")
            if args.replicas > 1 or args.concurrency == "auto":  # -q -v: the request line too
                command.append("-v")
            walls.append(timed(command, folder, echo="requests "))
            shares.append([each.total() for each in servers])
            asked = sum(shares[-1])
            bares.append(timed(bare_command(), bare_dir))
            clients.append(plain_client(urls, passes * args.n, slots))
            together = overlap_env(urls, passes * args.n, slots)
            overlaps.append(timed(bare_command(), overlap_dir, env=together))
        wall, bare = statistics.median(walls), statistics.median(bares)
        client, overlap = statistics.median(clients), statistics.median(overlaps)
        seq = None if args.skip_sequential else sequential(server.base_url, args.n)
    limit = passes * args.n * args.latency / slots
    replicas = f" x {args.replicas} replicas" if args.replicas > 1 else ""
    print(
        f"N={args.n} latency={args.latency:g}s capacity={args.capacity}{replicas} "
        f"concurrency={args.concurrency}{' judged' if args.judge else ''}; "
        f"the server saw {asked} requests per run"
    )
    if args.replicas > 1:
        least = min(min(run) / sum(run) for run in shares)
        said = "; ".join(" ".join(str(n) for n in run) for run in shares)
        print(f"  requests per replica, each run: {said} (the least share {least:.1%})")
    if args.repeat > 1:
        print(
            f"  medians of {args.repeat} runs: wall {_runs(walls)}; bare {_runs(bares)};"
            f" client {_runs(clients)}; overlap {_runs(overlaps)}"
        )
    rows = [
        ("wall: pytest --expert-bench", f"{wall:.2f} s"),
        ("seq: sequential httpx loop", f"{seq:.2f} s" if seq is not None else "skipped"),
        ("bare: pytest, N trivial tests", f"{bare:.2f} s"),
        ("limit: N x latency / concurrency", f"{limit:.2f} s"),
        ("client: plain asyncio + httpx loop", f"{client:.2f} s"),
        ("overlap: bare with (e) on a thread", f"{overlap:.2f} s"),
        ("wall / (limit + bare)", _ratio(wall, limit + bare)),
        ("wall / (client + bare)", _ratio(wall, client + bare)),
        ("wall / overlap", _ratio(wall, overlap)),
        ("overlap / bare", _ratio(overlap, bare)),
        ("client / limit", _ratio(client, limit)),
        ("wall / limit", _ratio(wall, limit)),
        ("seq / wall", _ratio(seq, wall) if seq is not None else "skipped"),
        ("wall / bare", _ratio(wall, bare)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")


def _passes_and_slots(args: argparse.Namespace) -> tuple[int, int]:
    """Requests per example (a judged one waits for two) and the requests in flight that
    the servers and ``--concurrency`` allow."""
    passes = 2 if args.judge else 1
    slots = args.replicas * args.capacity // passes
    if args.concurrency != "auto":
        slots = min(args.concurrency, slots)
    return passes, slots


def memory(args: argparse.Namespace) -> None:
    n = args.memory
    with (
        tempfile.TemporaryDirectory(prefix="expertbench-") as temp,
        fake_server(0.0, args.capacity) as server,
    ):
        folder = Path(temp)
        suite = write_benchmark(folder, n, server.base_url, args.concurrency)
        bare_dir = write_bare_tests(folder, n)
        started = time.perf_counter()
        plugin_mb = peak_rss_mb(expertbench_command(folder, suite, args.concurrency), folder)
        wall = time.perf_counter() - started
        asked = server.total()
        bare_mb = peak_rss_mb(bare_command(), bare_dir)
    print(f"N={n} latency=0 concurrency={args.concurrency}; the server saw {asked} requests")
    print(f"  peak RSS, pytest --expert-bench  {plugin_mb:8.1f} MB  ({wall:.1f} s, with children)")
    print(f"  peak RSS, bare pytest            {bare_mb:8.1f} MB")
    print(f"  per example beyond bare pytest   {(plugin_mb - bare_mb) * 1024 / n:8.2f} KB")


def _runs(seconds: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in seconds)


def compile_package() -> None:
    """Compile this checkout's package, as ``pip install`` does for an installed one.

    With PYTHONDONTWRITEBYTECODE set (as on this project's machines) an editable
    checkout would otherwise be compiled again by every run, which users never pay.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "pytest_expertbench")], check=True
    )


def _ratio(a: float | None, b: float) -> str:
    return f"{a / b:.2f}" if a is not None and b > 0 else "-"


def server_arguments(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the options every bench shares: examples, the server, concurrency."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--n", type=int, default=1319, help="examples [1319, gsm8k's test set]")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per answer [0.2]")
    parser.add_argument("--capacity", type=int, default=64, help="server slots [64]")
    parser.add_argument(
        "--concurrency", type=concurrency_value, default=32, help="requests in flight, or auto [32]"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(__doc__)
    parser.add_argument("--skip-sequential", action="store_true", help="skip the slow loop (b)")
    parser.add_argument("--memory", type=int, metavar="N", help="measure peak RSS for N items")
    parser.add_argument("--repeat", type=int, default=1, help="runs of (a) and (c); medians [1]")
    parser.add_argument(
        "--judge", action="store_true", help="a judge (same latency) grades every answer"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="fake servers, one target's base_url list [1]"
    )
    args = parser.parse_args(argv)
    compile_package()
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * args.capacity:
        print("warning: a low open-file limit may refuse connections", file=sys.stderr)
    if args.memory:
        memory(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
