"""CPU spent per errored item against CPU per passing item.

An item errors when its model could not be asked; a run against a broken server may
error every item, and the report of an error must not cost more than the work of a
passing item. This script writes a throw-away benchmark project whose replay target
answers every example (``pass``) or none of them (``error``: each item errors in
setup with one line), runs pytest on it in a subprocess at two sizes, and prints the
CPU (user + system, of pytest and its children) per item: the difference between the
two sizes divided by the difference in items, so that pytest's start-up cancels out.

    python bench/errors.py                    # 200 and 1200 items, median of 3
    python bench/errors.py --small 100 --large 2100 --repeat 5

Run from anywhere; no network, no server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BENCHMARK = """\
name: errs
dataset: {file: data/rows.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
generation: {temperature: 0}
scorers: [{numeric_match: {target: "{answer}"}}]
metrics:
  accuracy: {of: numeric_match, direction: higher}
"""


def write_project(root: Path, n: int, answered: bool) -> None:
    bench = root / "benchmarks_suites"
    (bench / "data").mkdir(parents=True)
    (bench / "recorded").mkdir()
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": i + 1} for i in range(n)]
    (bench / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    replay = [
        {"benchmark": "errs", "id": r["id"], "response": f"It is {r['answer']}."}
        for r in (rows if answered else rows[:0])
    ]
    (bench / "recorded" / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replay))
    (bench / "errs.yaml").write_text(BENCHMARK)
    targets = {
        "default": "demo",
        "targets": {"demo": {"kind": "replay", "path": "recorded/demo.jsonl"}},
    }
    (bench / "targets.yaml").write_text(json.dumps(targets))
    (root / "pytest.ini").write_text("[pytest]\n")


def cpu_of_run(n: int, answered: bool) -> float:
    """CPU seconds of one pytest run over ``n`` items (all passing, or all erroring)."""
    with tempfile.TemporaryDirectory(prefix="expertbench-errors-") as tmp:
        root = Path(tmp)
        write_project(root, n, answered)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--expert-bench=quick",
                "--expert-bench-cache=off",
                "--expert-bench-report-dir=reports/out",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        expected = f"{n} passed" if answered else f"{n} error"
        if expected not in done.stdout:
            raise SystemExit(f"unexpected outcome ({expected!r} not found):\n{done.stdout[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def per_item_ms(small: int, large: int, answered: bool, repeat: int) -> float:
    samples = [
        (cpu_of_run(large, answered) - cpu_of_run(small, answered)) / (large - small) * 1000.0
        for _ in range(repeat)
    ]
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    passing = per_item_ms(args.small, args.large, True, args.repeat)
    erroring = per_item_ms(args.small, args.large, False, args.repeat)
    print(f"CPU per passing item: {passing:.2f} ms")
    print(f"CPU per errored item: {erroring:.2f} ms ({erroring / passing:.2f}x a passing one)")


if __name__ == "__main__":
    main(sys.argv[1:])
