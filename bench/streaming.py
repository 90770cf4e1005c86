"""Streamed timing against a server whose timing is known: ttft and tpot as measured vs set.

tests/support/fake_openai.py (a subprocess) sends each streamed answer's first chunk
after ``--first-token-s`` and one more chunk (one word, one token) every ``--token-s``.
This script runs pytest --expert-bench over N examples twice, ``stream: false`` and
``stream: true`` (an openai chat target, or ``--kind ollama``), and prints the median
``ttft_ms`` against the server's first-token delay (within 10 % passes), the median
``tpot_ms`` against its per-token delay (within 25 %), and whether every streamed answer
and its token counts equal the whole ones.

Each chunk costs the engine's loop about 0.2 ms of CPU (httpcore's body reading is most
of it): 16 streams of a token every 4 ms keep a core busy, and on a 2-core machine that
also runs the server the chunks queue and ttft reads 1.5 x the server's delay. The
default of 4 in flight measures the streams, not the machine.

    python bench/streaming.py                        # 150 ms, then 4 ms a token
    python bench/streaming.py --kind ollama --n 200 --words 128

Run from anywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "streamed"


@contextmanager
def fake_server(args: argparse.Namespace, answers: Path) -> Iterator[str]:
    """The server's root URL while it runs."""
    command = [sys.executable, "-m", "tests.support.fake_openai", "--port", "0"]
    command += ["--first-token-s", str(args.first_token_s), "--token-s", str(args.token_s)]
    command += ["--answers", str(answers), "--capacity", str(args.concurrency)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def write_project(folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The benchmark directory and the answers file (``--words`` words an answer)."""
    suite = folder / "suite"
    suite.mkdir()
    rows = [{"id": f"q{i}", "question": f"question {i}"} for i in range(args.n)]
    (suite / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    words = " ".join(f"w{k}" for k in range(args.words - 1))
    answers = {f"question {i}": f"{words} {i}" for i in range(args.n)}
    answers_file = folder / "answers.json"
    answers_file.write_text(json.dumps(answers))
    benchmark = {
        "name": BENCHMARK,
        "dataset": {"file": "data.jsonl", "id": "id"},
        "suites": {BENCHMARK: "all"},
        "prompt": "{question}",
        "scorers": [{"contains": {"target": "w0"}}],
        "metrics": {"answered": {"of": "contains", "direction": "higher"}},
    }
    (suite / f"{BENCHMARK}.yaml").write_text(yaml.safe_dump(benchmark, sort_keys=False))
    return suite, answers_file


def run(folder: Path, suite: Path, target: dict[str, Any], name: str) -> dict[str, Any]:
    """One pytest run; its example rows by id."""
    targets = {"default": "fake", "targets": {"fake": target}}
    (suite / "targets.yaml").write_text(yaml.safe_dump(targets, sort_keys=False))
    reports = folder / "reports" / name
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [f"--expert-bench={BENCHMARK}", f"--expert-bench-dir={suite}"]
    command += ["--expert-bench-cache=off", f"--expert-bench-report-dir={reports}"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: the gate, which has no baseline to pass
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}")
    rows = [json.loads(line) for line in (reports / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows if r.get("type") == "example"}


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    usage = ("prompt_tokens", "completion_tokens")
    return (
        a["response"] == b["response"]
        and a.get("tool_calls") == b.get("tool_calls")
        and all(a["scores"].get(k) == b["scores"].get(k) for k in usage)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=128, help="examples [128]")
    parser.add_argument("--words", type=int, default=64, help="tokens an answer [64]")
    parser.add_argument("--first-token-s", type=float, default=0.15, help="[0.15]")
    parser.add_argument("--token-s", type=float, default=0.004, help="[0.004]")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight [4]")
    parser.add_argument("--kind", choices=("openai", "ollama"), default="openai")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="expertbench-") as temp:
        folder = Path(temp)
        suite, answers = write_project(folder, args)
        with fake_server(args, answers) as root:
            base_url = f"{root}/v1" if args.kind == "openai" else root
            target = {"kind": args.kind, "base_url": base_url, "model": "m"}
            target["concurrency"] = args.concurrency
            whole = run(folder, suite, target, "whole")
            streamed = run(folder, suite, {**target, "stream": True}, "streamed")
    ttft = statistics.median(r["scores"]["ttft_ms"] for r in streamed.values())
    tpot = statistics.median(r["scores"]["tpot_ms"] for r in streamed.values())
    itl = statistics.median(r["scores"]["itl_p99_ms"] for r in streamed.values())
    equal = sorted(whole) == sorted(streamed) and all(
        same_answer(whole[qid], streamed[qid]) for qid in whole
    )
    set_ttft, set_tpot = args.first_token_s * 1000, args.token_s * 1000
    print(f"N={args.n} {args.kind} words={args.words} concurrency={args.concurrency}")
    print(_row("median ttft_ms", ttft, set_ttft, 0.10))
    print(_row("median tpot_ms", tpot, set_tpot, 0.25))
    print(f"  median itl_p99_ms  {itl:8.2f}")
    print(f"  answers, tool calls and usage equal the whole ones: {'yes' if equal else 'NO'}")


def _row(name: str, measured: float, expected: float, tolerance: float) -> str:
    ratio = measured / expected
    verdict = "ok" if abs(ratio - 1) <= tolerance else "OUT OF BOUNDS"
    return (
        f"  {name:<16} {measured:8.2f} vs {expected:g}: x{ratio:.3f}"
        f" (within {tolerance:.0%}: {verdict})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
