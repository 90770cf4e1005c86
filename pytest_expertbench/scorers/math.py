"""``math_equiv``: is the model's final answer mathematically the expected one.

The answer is the last ``\\boxed{…}`` (or ``\\fbox{…}``) of the response, else its
last number. Both sides are normalised the way the MATH benchmark does it
(fractions, ``\\left``/``\\right``, units, degrees, percent, ``x = 5`` …) and compared
as strings, then as numbers, then symbolically with sympy.

Sympy can run for minutes on a hostile expression, and a signal-based alarm only
works in the main thread of the main process (not under xdist's execnet threads or a
scoring thread), so the symbolic step runs in one spawned helper process: a check
that overruns ``timeout_s`` kills it (the next check starts a new one) and scores 0
with the detail "timed out". There is one helper per core (two at most), because
the example pipeline scores several examples at once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import re
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import OptionReader, ScoreFunction, ScorerContext, scorer
from pytest_expertbench.template import render

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_UNIT_WORDS = (
    "dollars|dollar|cents|cent|inches|inch|feet|foot|ft|cm|mm|km|meters|meter|"
    "units|unit|square units|sq units|degrees|degree|hours|hour|minutes|minute|seconds|"
    "second|days|day|miles|mile|mph|pounds|pound|lbs|kg"
)
_TRAILING_UNITS = re.compile(rf"(?<=[\d}}])\s*(?:{_UNIT_WORDS})(?:\^?\{{?[23]\}}?)?\s*$")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;: ]|\\quad|\\qquad|\\displaystyle")
_SIMPLE_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+")
_SYMPY_FUNCTIONS = ("sqrt", "root", "log", "ln", "exp", "sin", "cos", "tan", "pi", "oo")
_SYMPY_SAFE = re.compile(r"[0-9A-Za-z+\-*/().,\s]*")


# --------------------------------------------------------------------------- extraction


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}``/``\\fbox{…}``, nested braces included."""
    start, command = max((text.rfind(c), c) for c in _BOX_COMMANDS)
    if start < 0:
        return None
    rest = text[start + len(command) :]
    if not rest.startswith("{"):
        token = rest.strip().split("$")[0].split()
        return token[0] if token else None
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return rest[1:i]
    return None  # unbalanced: no answer rather than half of one


def final_answer(text: str) -> str | None:
    """The last boxed answer, else the last number, else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


# --------------------------------------------------------------------------- normalisation


def normalize(answer: str) -> str:
    """The MATH benchmark's answer normalisation, plus units in words and thousands commas."""
    s = answer.strip().replace("\n", "").replace("\\!", "")
    s = s.replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _SPACING.sub(" ", s)
    s = _strip_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"(^|[\s{(=])\.(\d)", r"\g<1>0.\2", s)
    s = _strip_variable(s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "").rstrip(".")
    s = _fix_fracs(s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if m := re.fullmatch(r"(-?\d+)/(\d+)", s):
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


def _strip_units(s: str) -> str:
    """``10\\text{ cm}`` → ``10``; a lone ``\\text{Monday}`` keeps its content."""
    s = re.sub(r"(?<=\S)\s*\\(?:text|mbox|mathrm)\{\s[^{}]*\}(?:\^\{?[23]\}?)?\s*$", "", s)
    s = _TEXT_COMMAND.sub(r"\1", s).strip()
    return _TRAILING_UNITS.sub("", s).strip()


def _strip_variable(s: str) -> str:
    """``x = 5`` → ``5``: a short left-hand side is a name, not part of the answer."""
    if s.count("=") == 1:
        left, right = s.split("=")
        if len(left.strip()) <= 2 and right.strip():
            return right.strip()
    return s


def _fix_fracs(s: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\frac1{x}`` → ``\\frac{1}{x}``."""
    s = re.sub(r"\\frac(\w)(\w)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\w)\{", r"\\frac{\1}{", s)
    return re.sub(r"\\frac(\{[^{}]*\})(\w)", r"\\frac\1{\2}", s)


def to_number(s: str) -> float | None:
    """A normalised answer's value when it is a plain number or a numeric fraction."""
    if _PLAIN_NUMBER.fullmatch(s):
        return float(s)
    if m := _SIMPLE_FRACTION.fullmatch(s):
        sign, top, bottom = m.groups()
        if float(bottom) == 0:
            return None
        value = float(top) / float(bottom)
        return -value if sign else value
    return None


def _is_set_like(s: str) -> bool:
    """Intervals, tuples, sets and equations are compared as strings only."""
    return bool(re.match(r"^[(\[]|^\\\{", s) and "," in s) or any(
        token in s for token in ("\\cup", "\\cap", "=", "<", ">", "\\le", "\\ge", "\\pm")
    )


# --------------------------------------------------------------------------- LaTeX → sympy


def to_sympy_text(s: str) -> str | None:
    """A plain expression sympy's parser can read, or None when the LaTeX is beyond us.

    The parser evaluates what it reads, so only digits, operators, parentheses and
    known function names or one-letter variables get through.
    """
    s = _replace_command(s, "\\frac", 2, "(({0})/({1}))")
    s = re.sub(r"\\sqrt\[([^\[\]]*)\]\{", r"\\nthroot{\1}{", s)
    s = _replace_command(s, "\\nthroot", 2, "root({1},{0})")
    s = _replace_command(s, "\\sqrt", 1, "sqrt({0})")
    for latex, plain in (("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\infty", "oo")):
        s = s.replace(latex, plain)
    s = re.sub(r"\\(pi|ln|log|exp|sin|cos|tan)(?![A-Za-z])", r" \1 ", s)
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    if "\\" in s or not _SYMPY_SAFE.fullmatch(s):
        return None
    words = re.findall(r"[A-Za-z]+", s)
    if any(len(w) > 1 and w not in _SYMPY_FUNCTIONS for w in words):
        return None
    return s.replace("ln", "log")


def _replace_command(s: str, command: str, arity: int, template: str) -> str:
    """Rewrite ``\\cmd{a}{b}`` (nested braces allowed) with ``template.format(a, b)``."""
    while (start := s.find(command + "{")) >= 0:
        args: list[str] = []
        i = start + len(command)
        for _ in range(arity):
            end = _closing_brace(s, i)
            if end is None:
                return s
            args.append(s[i + 1 : end])
            i = end + 1
        s = s[:start] + template.format(*args) + s[i:]
    return s


def _closing_brace(s: str, opening: int) -> int | None:
    if opening >= len(s) or s[opening] != "{":
        return None
    depth = 0
    for i in range(opening, len(s)):
        depth += {"{": 1, "}": -1}.get(s[i], 0)
        if depth == 0:
            return i
    return None


def symbolic_equal(left: str, right: str) -> bool:
    """Runs in the helper process: parse both with sympy and simplify the difference."""
    from sympy import simplify  # type: ignore[import-untyped]
    from sympy.parsing.sympy_parser import (  # type: ignore[import-untyped]
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    transformations = (*standard_transformations, implicit_multiplication_application, convert_xor)
    a = parse_expr(left, transformations=transformations)
    b = parse_expr(right, transformations=transformations)
    return bool(simplify(a - b) == 0)


# --------------------------------------------------------------------------- time limit


class SympyWorker:
    """One spawned process that runs functions with a hard time limit, in any thread.

    A call that overruns is abandoned by killing the process; the next call starts a
    fresh one. Calls are serialised by a lock, and the time limit counts from when
    the call is handed over, not from when the process started and imported sympy.
    """

    def __init__(self, startup_timeout_s: float = 120.0) -> None:
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self._startup_timeout_s = startup_timeout_s

    def call(self, function: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
        """``function(*args)`` in the helper; TimeoutError when it overruns ``timeout_s``."""
        with self._lock:
            connection = self._started()
            connection.send((function, args))
            if not connection.poll(timeout_s):
                self._stop()
                raise TimeoutError(f"no answer within {timeout_s:g} s")
            try:
                ok, value = connection.recv()
            except EOFError:
                self._stop()
                raise RuntimeError("the sympy helper process died") from None
            if not ok:
                raise RuntimeError(value)
            return value

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self) -> Connection:
        if self._connection is not None and self._process and self._process.is_alive():
            return self._connection
        self._stop()
        context = multiprocessing.get_context("spawn")  # no fork: the parent has threads
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_serve, args=(child_end,), daemon=True)
        process.start()
        child_end.close()
        self._process, self._connection = process, parent_end
        if not parent_end.poll(self._startup_timeout_s):
            self._stop()
            raise RuntimeError("the sympy helper process did not start")
        parent_end.recv()  # "ready": sympy is imported
        return parent_end

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None


def _serve(connection: Connection) -> None:
    """The helper process: answer calls until the parent closes the pipe."""
    import sympy  # noqa: F401  (imported once, before the first timed call)

    connection.send("ready")
    while True:
        try:
            function, args = connection.recv()
        except EOFError:
            return
        try:
            connection.send((True, function(*args)))
        except Exception as exc:
            connection.send((False, f"{type(exc).__name__}: {exc}"))


class SympyWorkers:
    """A few :class:`SympyWorker` processes, one per core (at most ``size``): the
    pipeline scores several examples at once, and one helper would serialise their
    sympy checks. Each call takes a free helper, waiting for one when all are busy."""

    def __init__(self, size: int) -> None:
        self._free: queue.SimpleQueue[SympyWorker] = queue.SimpleQueue()
        self._all = [SympyWorker() for _ in range(max(1, size))]
        for worker in self._all:
            self._free.put(worker)

    def call(self, function: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
        worker = self._free.get()
        try:
            return worker.call(function, args, timeout_s)
        finally:
            self._free.put(worker)

    def close(self) -> None:
        for worker in self._all:
            worker.close()


# Helpers start on first use, so a run without symbolic checks starts no process.
_WORKER = SympyWorkers(min(2, os.cpu_count() or 1))


# --------------------------------------------------------------------------- the scorer


def equivalent(
    prediction: str, target: str, timeout_s: float, worker: SympyWorker | SympyWorkers
) -> Score:
    """Compare two final answers: normalised text, then numbers, then sympy."""
    left, right = normalize(prediction), normalize(target)
    if left == right:
        return Score(1.0)
    shown = f"{left!r} is not {right!r}"
    a, b = to_number(left), to_number(right)
    if a is not None and b is not None:
        return Score(1.0) if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) else Score(0.0, shown)
    if _is_set_like(left) or _is_set_like(right):
        return Score(0.0, shown)
    left_text, right_text = to_sympy_text(left), to_sympy_text(right)
    if left_text is None or right_text is None:
        return Score(0.0, shown)
    try:
        same = worker.call(symbolic_equal, (left_text, right_text), timeout_s)
    except TimeoutError:
        return Score(0.0, "timed out")
    except RuntimeError:
        return Score(0.0, f"{shown} (sympy could not read it)")
    return Score(1.0) if same else Score(0.0, shown)


@scorer("math_equiv")
def math_equiv(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    reader = OptionReader(options)
    target = reader.template("target")
    timeout_s = reader.number("timeout_s", 5.0, positive=True)
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        expected = render(target, example.fields)
        expected = last_boxed(expected) or expected
        answer = final_answer(completion.text)
        if answer is None:
            return Score(0.0, "no boxed answer and no number in the response")
        return equivalent(answer, expected, timeout_s, _WORKER)

    return score
