"""What a person reads: the Markdown summary (a pull-request comment) and the terminal table.

Both lead with the session's counts, so that nobody reads "No regressions" over a
run in which something went uncompared, and both say, per metric, how small a
change its n could have caught.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from pytest_expertbench.baseline import DatasetInfo
from pytest_expertbench.config import Price
from pytest_expertbench.gate import MetricComparison, Verdict, counts
from pytest_expertbench.records import Threshold
from pytest_expertbench.replicas import REPLICA_COUNT, REPLICA_REFUSED
from pytest_expertbench.report import BenchmarkResult
from pytest_expertbench.request_stats import JUDGE_TOKENS

REPLICA_KEYS = (REPLICA_COUNT, REPLICA_REFUSED)

FLIPS_SHOWN = 20
HEADER = ["metric", "baseline", "current", "change", "threshold", "p", "detects", "status"]
_TEST_NAMES = {
    "mcnemar": "exact McNemar",
    "permutation": "paired permutation",
    "unpaired-z": "unpaired z-test: the baseline has no per-example scores",
}


# --------------------------------------------------------------------------- numbers


def format_number(value: float) -> str:
    """Four significant digits, but never fewer decimals than 0.0000 for values below 1."""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size < 1:
        return f"{value:.4f}" if size >= 1e-4 or size == 0 else f"{value:.3e}"
    digits = math.floor(math.log10(size)) + 1
    return f"{value:.{max(0, 4 - digits)}f}"


def format_value(value: float | None, unit: str) -> str:
    """A metric's value with its unit; ratios, counts and unitless values stay plain numbers."""
    if value is None:
        return "—"
    if unit == "ratio" and math.isfinite(value) and abs(value) >= 1e-4:
        return f"{value:.4f}"  # one column of ratios lines up: 0.5800, 1.0000
    text = format_number(value)
    return text if unit in ("", "ratio", "count") or not math.isfinite(value) else f"{text} {unit}"


def format_threshold(threshold: Threshold, unit: str = "") -> str:
    if threshold.rel is not None:
        return f"{threshold.rel * 100:g} %"
    return "±" + format_value(threshold.abs or 0.0, unit)


def format_change(row: MetricComparison) -> str:
    """The relative change in percent; the absolute one when the baseline is 0."""
    if row.current is not None and not math.isfinite(row.current.value):
        return "not a number"
    if row.delta_rel is not None:
        return f"{row.delta_rel * 100:+.1f} %"
    if row.delta_abs is not None:
        sign = "+" if row.delta_abs >= 0 else "-"
        return sign + format_value(abs(row.delta_abs), row.unit)
    return "—"


def format_current(row: MetricComparison) -> str:
    if row.current is None:
        return "—"
    text = format_value(row.current.value, row.unit)
    ci = row.current.ci
    if ci is None or not all(map(math.isfinite, ci)):
        return text
    return f"{text} [{format_number(ci[0])}, {format_number(ci[1])}]"


def format_p(row: MetricComparison) -> str:
    return "—" if row.p_value is None else f"{row.p_value:.2g}"


def format_detectable(row: MetricComparison) -> str:
    """The smallest move this comparison could flag: ``≥ 33 %``, or ``≥ 0.02`` where the
    threshold is absolute (or the baseline 0), in the threshold's own terms."""
    if row.detectable is None:
        return "—"
    if row.detectable_rel is not None and row.threshold.abs is None:
        return f"≥ {row.detectable_rel * 100:.3g} %"
    return "≥ " + format_value(row.detectable, row.unit)


# --------------------------------------------------------------------------- lines


def headline(results: Sequence[BenchmarkResult]) -> str:
    """The session in one sentence: the gate's result, then every count that matters."""
    verdicts = [result.verdict for result in results]
    totals = counts(verdicts)
    errors = sum(1 for r in results for e in r.examples if e.error is not None)
    benchmarks = _plural(len(results), "benchmark")
    uncompared = totals.get("new", 0) + totals.get("not_compared", 0)
    improvements = totals.get("improvement", 0)
    parts = [
        _plural(totals.get("regression", 0), "regression"),
        *_nonzero(totals, "incomplete", "inconclusive"),
        *([f"{uncompared} not compared"] if uncompared else []),
        *_nonzero(totals, "missing"),
        *([_plural(errors, "errored example")] if errors else []),
        *([_plural(improvements, "improvement")] if improvements else []),
    ]
    if any(verdict.failed for verdict in verdicts):
        return f"Gate failed: {', '.join(parts)} in {benchmarks}."
    if len(parts) == 1:
        return f"No regressions in {benchmarks} ({_plural(totals.get('ok', 0), 'metric')} ok)."
    return f"Gate passed: {', '.join(parts)} in {benchmarks}."


def _nonzero(totals: Mapping[str, int], *statuses: str) -> list[str]:
    return [f"{totals[s]} {s}" for s in statuses if totals.get(s)]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def verdict_line(benchmark: str, row: MetricComparison) -> str:
    """``REGRESSION gsm8k.accuracy: 0.5800 → 0.5120 (-11.7 %, threshold 5 %, p = 6e-08 …)``."""
    word = row.status.upper().replace("_", " ")
    if row.status in ("incomplete", "not_compared"):
        return f"{word} {benchmark}.{row.name}: {row.reason}"
    current = row.current.value if row.current else None
    tested = ""
    if row.test is not None and row.p_value is not None:
        tested = f", p = {row.p_value:.2g}, {_TEST_NAMES.get(row.test.method, row.test.method)}"
    line = (
        f"{word} {benchmark}.{row.name}: {format_value(row.baseline, row.unit)} → "
        f"{format_value(current, row.unit)} "
        f"({format_change(row)}, threshold {format_threshold(row.threshold, row.unit)}{tested})"
    )
    if row.status == "inconclusive" and row.test is not None:
        n, smallest = row.test.pairs, format_detectable(row)
        line += f": could be noise; n = {n} detects only changes {smallest}"
    return line


def flipped_ids(verdict: Verdict) -> list[str]:
    """The flipped examples' ids, each once, in the verdict's (natural) order."""
    return list(dict.fromkeys(flip.example_id for flip in verdict.flipped))


def _cells(row: MetricComparison) -> list[str]:
    return [
        row.name,
        format_value(row.baseline, row.unit),
        format_current(row),
        format_change(row),
        format_threshold(row.threshold, row.unit),
        format_p(row),
        format_detectable(row),
        row.status.replace("_", " "),
    ]


def _heading(result: BenchmarkResult) -> str:
    snapshot = result.snapshot
    return f"{snapshot.benchmark} (suite {snapshot.suite}, target {snapshot.target})"


def _facts(result: BenchmarkResult) -> str:
    dataset: DatasetInfo = result.snapshot.dataset
    facts = [dataset.source, f"n={dataset.n}", f"fingerprint {dataset.short()}"]
    errors = sum(1 for example in result.examples if example.error is not None)
    if errors:
        facts.append(f"{errors} error{'s' if errors != 1 else ''}")
    return " · ".join(facts)


def _baseline_line(result: BenchmarkResult) -> str | None:
    parts = [f"baseline {result.baseline_path}"] if result.baseline_path else []
    if result.baseline_note:
        parts.append(f"baseline {result.baseline_note}" if not parts else result.baseline_note)
    return " · ".join(parts) or None


def _flagged(verdict: Verdict) -> tuple[MetricComparison, ...]:
    flagged = verdict.having("regression", "incomplete", "inconclusive")
    return flagged + tuple(m for m in verdict.having("not_compared") if m.reason)


# --------------------------------------------------------------------------- markdown


def markdown(
    results: Sequence[BenchmarkResult],
    *,
    title: str = "pytest-expertbench",
    requests: Mapping[str, str] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> str:
    """A summary fit for a pull-request comment; ``requests`` holds each benchmark's request
    line (asked, answered, from the cache and from which run), ``tokens`` its token line."""
    lines = [f"## {_escape(title)}", "", _escape(headline(results))]
    for result in results:
        lines += ["", *_markdown_benchmark(result)]
        for said in (requests, tokens):
            line = (said or {}).get(result.snapshot.benchmark)
            if line:
                lines += ["", f"_{_escape(line)}_"]
    return "\n".join(lines) + "\n"


def _markdown_benchmark(result: BenchmarkResult) -> Iterator[str]:
    yield f"### {_escape(_heading(result))}"
    yield ""
    yield _escape(_facts(result))
    yield ""
    yield "| " + " | ".join(HEADER) + " |"
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for row in result.verdict.metrics:
        cells = [_escape(cell) for cell in _cells(row)]
        if row.status in ("regression", "incomplete"):
            cells[-1] = f"**{cells[-1]}**"
        yield "| " + " | ".join(cells) + " |"
    flagged = _flagged(result.verdict)
    if flagged:
        yield ""
        for row in flagged:
            yield f"- {_escape(verdict_line(result.verdict.benchmark, row))}"
    if result.verdict.note:
        yield ""
        yield f"> {_escape(result.verdict.note)}"
    baseline = _baseline_line(result)
    if baseline:
        yield ""
        yield f"_{_escape(baseline)}_"
    ids = flipped_ids(result.verdict)
    if ids:
        shown = ", ".join(_code(example_id) for example_id in ids[:FLIPS_SHOWN])
        more = f", +{len(ids) - FLIPS_SHOWN} more" if len(ids) > FLIPS_SHOWN else ""
        yield ""
        yield f"**Flipped from right to wrong** ({len(ids)}): {shown}{more}"


def _code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def _escape(text: str) -> str:
    """Keep a cell's text from closing the table cell or starting markup."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- terminal


def terminal_lines(results: Sequence[BenchmarkResult]) -> list[str]:
    """The session's headline, an aligned table per benchmark, then a line per flagged metric."""
    lines: list[str] = [headline(results)] if results else []
    for result in results:
        lines += benchmark_lines(result)
    return lines


def benchmark_lines(result: BenchmarkResult) -> list[str]:
    """One benchmark's table and flagged metrics (also the gate item's failure report)."""
    verdict = result.verdict
    lines = [_heading(result), "  " + _facts(result)]
    lines += ["  " + line for line in align_columns([HEADER, *map(_cells, verdict.metrics)])]
    if verdict.note:
        lines.append(f"  note: {verdict.note}")
    ids = flipped_ids(verdict)
    if ids:
        plural = "s" if len(ids) != 1 else ""
        lines.append(f"  {len(ids)} example{plural} flipped from right to wrong")
    lines += [verdict_line(verdict.benchmark, row) for row in _flagged(verdict)]
    return lines


def align_columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first and last left-aligned, numbers right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    last = len(widths) - 1
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if column in (0, last) else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


# --------------------------------------------------------------------------- requests


def request_line(
    benchmark: str,
    counts: dict[str, float],
    stopped: str | None = None,
    *,
    this_run: str = "",
    rate: bool = True,
) -> str:
    """One benchmark's request counts; ``stopped``: why the engine stopped asking, said once
    here rather than on every item it refused. ``rate=False`` leaves out the requests per
    second, the replicas' shares and where concurrency auto settled, which differ from run
    to run (summary.md says the same for the same answers)."""
    speed = _rate(counts) if rate else ""
    line = (
        f"requests {benchmark}: {counts['asked']:.0f} asked, "
        f"{counts['done'] - counts['errors']:.0f} answered, "
        f"{counts['errors']:.0f} failed, {counts['retries']:.0f} retries, "
        f"{counts['cached']:.0f} from the cache{cache_sources(counts, this_run)}{speed}"
    )
    if counts.get("cache_stale"):
        line += (
            f", {counts['cache_stale']:.0f} stored answers not served "
            "(the server reports another system_fingerprint)"
        )
    if rate:  # like the rate, how requests spread and where auto settled vary run to run
        line += replica_part(counts) + concurrency_part(counts)
    if stopped:
        line += f"; {counts.get('not_asked', 0.0):.0f} not asked, stopped asking: {stopped}"
    return line


def replica_part(counts: Mapping[str, float]) -> str:
    """``; replicas: http://a/v1 660, http://b/v1 0 (refused 3)`` for a target with a
    list of base URLs (replicas.py); "" for one URL."""
    urls = sorted({name.split(":", 1)[1] for name in counts if name.startswith(REPLICA_KEYS)})
    if not urls:
        return ""
    said = []
    for url in urls:
        text = f"{url} {counts.get(REPLICA_COUNT + url, 0.0):.0f}"
        refused = counts.get(REPLICA_REFUSED + url, 0.0)
        said.append(text + (f" (refused {refused:.0f})" if refused else ""))
    return "; replicas: " + ", ".join(said)


def concurrency_part(counts: Mapping[str, float]) -> str:
    """``; concurrency auto: settled at 31 (peak 36)`` (adaptive.py; summed over xdist
    workers, each of which finds its own); "" for a fixed concurrency."""
    settled = counts.get("concurrency_settled", 0.0)
    if not settled:
        return ""
    peak = counts.get("concurrency_peak", 0.0)
    return f"; concurrency auto: settled at {settled:.0f} (peak {peak:.0f})"


def cache_sources(counts: dict[str, float], this_run: str = "") -> str:
    """Which runs the cached answers came from: `` (run 20261201-210405-1234)``, or with
    counts when several (`` (run A: 4, this run: 2)``); "" when none came from the cache."""
    runs = sorted(
        (name.removeprefix("cached_from:"), n)
        for name, n in counts.items()
        if name.startswith("cached_from:") and n
    )
    names = [("this run" if run == this_run else f"run {run}", n) for run, n in runs]
    if len(names) <= 1:
        return f" ({names[0][0]})" if names else ""
    return " (" + ", ".join(f"{name}: {n:.0f}" for name, n in names) + ")"


def token_line(
    benchmark: str, counts: Mapping[str, float], model: str, prices: Mapping[str, Price | None]
) -> str | None:
    """The tokens of one benchmark's answers, the model's and each judge's, with their cost
    where the target has a ``price``; None when no target reported usage:
    ``tokens mini: model live 1,234 in, 5,678 out, $0.0123; judge grader 300 in, 40 out``."""
    parts: list[tuple[str, str, float, float]] = []
    if counts.get("with_usage"):
        parts.append(("model", model, counts["prompt_tokens"], counts["completion_tokens"]))
    prompt_key, completion_key, answers_key = JUDGE_TOKENS
    for name in sorted(counts):
        if name.startswith(answers_key) and counts[name]:
            judge = name.removeprefix(answers_key)
            got = (counts.get(prompt_key + judge, 0.0), counts.get(completion_key + judge, 0.0))
            parts.append(("judge", judge, *got))
    if not parts:
        return None
    said = []
    for role, target, prompt, completion in parts:
        text = f"{role} {target} {prompt:,.0f} in, {completion:,.0f} out"
        price = prices.get(target)
        if price is not None:
            text += f", ${price.cost_usd(prompt, completion):,.4f}"
        said.append(text)
    return f"tokens {benchmark}: " + "; ".join(said)


def waiting_line(benchmark: str, counts: dict[str, float], example: str, waited_s: float) -> str:
    got = {name: counts.get(name, 0.0) for name in ("asked", "done", "errors", "retries")}
    return (
        f"requests {benchmark}: {got['done']:.0f}/{got['asked']:.0f} done{_rate(counts)}, "
        f"{got['errors']:.0f} failed, {got['retries']:.0f} retries; "
        f"{example} has waited {waited_s:.0f} s"
    )


def _rate(counts: dict[str, float]) -> str:
    elapsed = counts.get("elapsed_s", 0.0)
    return f", {counts.get('done', 0.0) / elapsed:.1f} req/s" if elapsed > 0 else ""
