"""The ``expertbench`` command: compare and show snapshots outside of a pytest run.

It uses the same gate and the same reports as the plugin, so a comparison made
here reads exactly like the one at the end of a run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_expertbench import __version__, baseline_cli, cache_cli
from pytest_expertbench.baseline import BaselineError, Snapshot, load
from pytest_expertbench.cache import CacheError
from pytest_expertbench.config import ConfigError
from pytest_expertbench.gate import GateRule, compare, decide
from pytest_expertbench.records import GATE_MODES, Threshold
from pytest_expertbench.report import BenchmarkResult, read_results
from pytest_expertbench.summary import (
    align_columns,
    flipped_ids,
    format_number,
    format_threshold,
    format_value,
    markdown,
    terminal_lines,
)
from pytest_expertbench.thresholds import parse_alpha, parse_threshold

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 no regression, 1 a regression, 2 bad input."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has already printed the usage and the error
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    try:
        if args.command == "compare":
            rule = GateRule(threshold=args.threshold, mode=args.gate, alpha=args.alpha)
            return _compare(args.prev, args.curr, rule, args.top, args.markdown)
        if args.command == "cache":
            return cache_cli.run(args)
        if args.command == "baseline":
            return baseline_cli.run(args)
        return _show(args.file)
    except (BaselineError, CacheError) as exc:
        print(f"expertbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expertbench", description="Compare and show pytest-expertbench snapshots."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare_ = commands.add_parser(
        "compare",
        help="hold CURR against PREV; exit 1 on a regression",
        description="Each file is a baseline JSON file or a results.jsonl; "
        "benchmarks are matched by name.",
    )
    compare_.add_argument("prev", type=Path, metavar="PREV", help="the baseline side")
    compare_.add_argument("curr", type=Path, metavar="CURR", help="the side under test")
    compare_.add_argument(
        "--threshold",
        type=_threshold,
        default=Threshold(rel=0.05),
        help="relative threshold for metrics without their own: 0.05 or 5%% (default 5%%)",
    )
    compare_.add_argument(
        "--gate",
        choices=GATE_MODES,
        default="both",
        help="regression when beyond the threshold, significant, or both (default both)",
    )
    compare_.add_argument(
        "--alpha",
        type=_alpha,
        default=0.05,
        help="significance level of the gate's paired tests (default 0.05)",
    )
    compare_.add_argument(
        "--top", type=_count, default=10, metavar="N", help="flipped examples to list (default 10)"
    )
    compare_.add_argument("--markdown", action="store_true", help="print Markdown, for a PR")
    show = commands.add_parser("show", help="print the metrics of a snapshot")
    show.add_argument("file", type=Path, metavar="FILE", help="a baseline JSON or results.jsonl")
    cache_cli.add_parser(commands)
    baseline_cli.add_parser(commands)
    return parser


def _threshold(text: str) -> Threshold:
    try:
        raw: float | str = float(text)
    except ValueError:
        raw = text
    try:
        return parse_threshold(raw, "--threshold", "")
    except ConfigError:
        message = f"{text!r}: expected a fraction (0.05) or a percentage (5%)"
        raise argparse.ArgumentTypeError(message) from None


def _alpha(text: str) -> float:
    try:
        return parse_alpha(float(text), "--alpha", "")
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number between 0 and 1") from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0")
    return int(text)


def read_snapshots(path: Path) -> list[Snapshot]:
    """The snapshots in a baseline file (one) or a results.jsonl (one per benchmark)."""
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise BaselineError(path, "", "no such file")
        return read_results(path)
    snapshot = load(path)
    if snapshot is None:
        raise BaselineError(path, "", "no such file")
    return [snapshot]


def _compare(prev: Path, curr: Path, rule: GateRule, top: int, as_markdown: bool) -> int:
    before = {snapshot.benchmark: snapshot for snapshot in read_snapshots(prev)}
    current = read_snapshots(curr)
    verdicts = decide([compare(before.get(s.benchmark), s, rule) for s in current])
    results = [
        BenchmarkResult(snapshot, verdict, ())
        for snapshot, verdict in zip(current, verdicts, strict=True)
    ]
    names = {result.snapshot.benchmark for result in results}
    if as_markdown:
        print(markdown(results, title=f"expertbench compare {prev.name} {curr.name}"), end="")
    else:
        for line in terminal_lines(results):
            print(line)
        for result in results:
            for line in _flip_lines(result, top):
                print(line)
    for name in sorted(set(before) - names):
        print(f"{name}: only in {prev}, not compared")
    failed = any(result.verdict.failed for result in results)
    return EXIT_REGRESSION if failed else EXIT_OK


def _flip_lines(result: BenchmarkResult, top: int) -> list[str]:
    flips = result.verdict.flipped
    if not flips or top == 0:
        return []
    ids = flipped_ids(result.verdict)
    shown = ids[:top]
    heading = f"flipped from right to wrong in {result.verdict.benchmark}"
    heading += f" (first {len(shown)} of {len(ids)}):" if len(ids) > top else f" ({len(ids)}):"
    rows = [
        [flip.example_id, flip.score, f"{flip.old:g} → {flip.new:g}"]
        for flip in flips
        if flip.example_id in shown
    ]
    return [heading, *("  " + line for line in align_columns(rows))]


def _show(path: Path) -> int:
    for snapshot in read_snapshots(path):
        for line in describe(snapshot):
            print(line)
    return EXIT_OK


def describe(snapshot: Snapshot) -> list[str]:
    """A snapshot's metrics as an aligned table, under what was measured and when."""
    dataset = snapshot.dataset
    rows = [["metric", "value", "ci", "samples", "direction", "threshold"]]
    for name, metric in snapshot.metrics.items():
        own = snapshot.thresholds.get(name)
        ci = metric.ci
        rows.append(
            [
                name,
                format_value(metric.value, metric.unit),
                f"[{format_number(ci[0])}, {format_number(ci[1])}]" if ci else "—",
                str(metric.samples_used),
                metric.direction,
                format_threshold(own, metric.unit) if own else "default",
            ]
        )
    return [
        f"{snapshot.benchmark} (suite {snapshot.suite}, target {snapshot.target})",
        f"  {dataset.source} · n={dataset.n} · fingerprint {dataset.short()}",
        f"  captured {snapshot.captured_at or '?'} · git {snapshot.git_sha or '?'}"
        f" · pytest-expertbench {snapshot.plugin_version or '?'}"
        f" · {len(snapshot.examples)} examples",
        *("  " + line for line in align_columns(rows)),
    ]


if __name__ == "__main__":
    sys.exit(main())
