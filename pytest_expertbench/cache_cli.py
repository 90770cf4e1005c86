"""``expertbench cache info`` and ``expertbench cache clear``: look into the response cache.

The cache decides on its own which answers a run may reuse (see :mod:`cache`); these
commands let a person see what it holds per run, and drop a run's answers (a run
against a model that turned out to be broken) or all of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pytest_expertbench.cache import LEGACY_RUN, ResponseCache, cache_file

EXIT_OK, EXIT_BAD_INPUT = 0, 2
DEFAULT_DIR = Path(".expertbench/cache")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser("cache", help="show or clear the response cache")
    actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="the cache file, its size and its answers per run")
    clear = actions.add_parser("clear", help="delete every stored answer, or one run's")
    clear.add_argument(
        "--run", metavar="RUN_ID", help=f"only this run's answers ({LEGACY_RUN}: those without)"
    )
    for action in (info, clear):
        action.add_argument(
            "--cache-dir",
            type=Path,
            default=DEFAULT_DIR,
            metavar="PATH",
            help="the cache folder or its SQLite file (default .expertbench/cache)",
        )


def run(args: argparse.Namespace) -> int:
    """0 done; 2 when there is no cache there, or ``--run`` names no run in it."""
    file = cache_file(args.cache_dir)
    if not file.is_file():
        print(f"expertbench: error: no response cache at {file}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cache = ResponseCache(file, mode="reuse")  # opening upgrades an older file in place
    try:
        if args.cache_command == "info":
            for line in info_lines(cache):
                print(line)
            return EXIT_OK
        known = {r.run_id for r in cache.runs()}
        if args.run is not None and args.run not in known:
            shown = ", ".join(sorted(known)) or "none"
            message = f"no answers of run {args.run} in {file} (runs: {shown})"
            print(f"expertbench: error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        deleted = cache.clear(args.run)
        which = f"of run {args.run} " if args.run is not None else ""
        print(f"deleted {deleted} answers {which}from {file}")
        return EXIT_OK
    finally:
        cache.close()


def info_lines(cache: ResponseCache) -> list[str]:
    runs = cache.runs()
    size = sum(p.stat().st_size for p in _files(cache.file) if p.exists())
    rows = [["run", "answers", "first", "last", "state"]]
    for run in runs:
        rows.append(
            [
                run.run_id,
                str(run.answers),
                _when(run.first_at),
                _when(run.last_at),
                "finished" if run.finished else "unfinished (a later run resumes it)",
            ]
        )
    total = sum(r.answers for r in runs)
    head = [f"{cache.file} ({size / 1024:.1f} KiB): {total} answers from {len(runs)} runs"]
    if not runs:
        return head
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return head + [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _files(file: Path) -> list[Path]:
    return [file, file.with_name(file.name + "-wal"), file.with_name(file.name + "-shm")]


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
