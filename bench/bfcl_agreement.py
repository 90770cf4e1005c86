"""How often ``argument_match`` gives BFCL's verdict, on answers built from the BFCL data.

The answers are those of tests/test_bfcl_fidelity.py: per question the first accepted
value of every argument, and each mutation its data allows (wrong name, missing or extra
argument, wrong value, wrong type, no call, two calls; for irrelevance questions a plain
answer, a call with unparsable arguments, a call). The reference is the verdict encoded
per mutation kind there; with ``--bfcl-checker`` it is also BFCL's own checker, run from
a gorilla checkout (its ``ast_checker.py``; its package imports are stubbed, as only
the Python category is run). Each call's arguments are decoded as BFCL's OpenAI
function-calling handler does (``json.loads`` per call; a failure means "no call").

    python bench/bfcl_agreement.py
    python bench/bfcl_agreement.py --bfcl-checker \\
        GORILLA/berkeley-function-call-leaderboard/bfcl_eval/eval_checker/ast_eval/ast_checker.py

Scorers are built per question with the question's tools as the benchmark's ``tools:``,
so the same script measures an older checkout (``PYTHONPATH=old/ python bench/…``).
"""

from __future__ import annotations

import argparse
import enum
import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # the tests package; PYTHONPATH still picks the scorers

from pytest_expertbench.scorers import ScorerContext, get_scorer  # noqa: E402
from tests.helpers import SHARED_DATASETS  # noqa: E402
from tests.test_bfcl_fidelity import CATEGORIES, Case, bfcl_cases, call, first_choice  # noqa: E402


class _Language(enum.Enum):
    PYTHON = "python"
    JAVA = "java"
    JAVASCRIPT = "javascript"


class _ModelConfig:
    underscore_to_dot = False


def load_bfcl_checker(path: Path) -> Any:
    """BFCL's ast_checker module, with the few names it imports from its package stubbed."""
    stubs: dict[str, dict[str, Any]] = {
        "bfcl_eval.constants.enums": {"Language": _Language},
        "bfcl_eval.constants.model_config": {
            "MODEL_CONFIG_MAPPING": _Configs(),
        },
        "bfcl_eval.constants.type_mappings": {
            "JAVA_TYPE_CONVERSION": {},
            "JS_TYPE_CONVERSION": {},
        },
        "bfcl_eval.eval_checker.ast_eval.type_convertor.java_type_converter": {
            "java_type_converter": None
        },
        "bfcl_eval.eval_checker.ast_eval.type_convertor.js_type_converter": {
            "js_type_converter": None
        },
    }
    for name, attributes in stubs.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        for key, value in attributes.items():
            setattr(sys.modules[name], key, value)
    spec = importlib.util.spec_from_file_location("bfcl_ast_checker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Configs(dict[str, _ModelConfig]):
    def __missing__(self, key: str) -> _ModelConfig:
        return _ModelConfig()


def bfcl_verdict(checker: Any, case: Case) -> float:
    try:
        decoded = [{call.name: json.loads(call.arguments)} for call in case.completion.tool_calls]
    except json.JSONDecodeError:
        decoded = None
    if case.category == "irrelevance":
        has_call = (
            bool(decoded)
            and decoded is not None
            and all(isinstance(next(iter(item.values())), dict) for item in decoded)
        )
        return 0.0 if has_call else 1.0
    if not decoded:
        return 0.0  # BFCL's AST categories: nothing decodes, the answer is wrong
    result = checker.ast_checker(
        case.example.fields["tools"],
        decoded,
        case.example.fields["expected"],
        _Language.PYTHON,
        case.category,
        "model",
    )
    return 1.0 if result["valid"] else 0.0


def _substitutes(value: Any) -> list[Any]:
    """Values put in an argument's place: every JSON type, and near misses of ``value``."""
    out: list[Any] = [1, 2.0, 2.5, "x", True, False, None, "", [], [1], [1.0], ["a"], {}, {"a": 1}]
    if isinstance(value, str):
        out += [value.upper(), value + " ", f"'{value}'", value.replace(" ", "_")]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out += [int(value), float(value), str(value), -value]
    elif isinstance(value, list):
        out += [value[::-1], value[:1], [str(v) for v in value]]
        out += [[float(v) if type(v) is int else int(v) if type(v) is float else v for v in value]]
        out += [[v.upper() if isinstance(v, str) else v for v in value]]
    elif isinstance(value, dict):
        out += [{k: v.upper() if isinstance(v, str) else v for k, v in value.items()}]
        out += [dict(list(value.items())[:1])]
    return out


def perturbed(cases: list[Case]) -> list[Case]:
    """Per accepted answer: each argument set to each of its accepted values (or left out
    for ""), and to each substitute value."""
    out = []
    for case in cases:
        if case.kind != "accepted":
            continue
        ((name, accepted),) = case.example.fields["expected"][0].items()
        base = first_choice(accepted)
        variants = []
        for param, options in accepted.items():
            rest = {k: v for k, v in base.items() if k != param}
            variants += [rest if o == "" else {**rest, param: first_choice(o)} for o in options]
            variants += [{**base, param: v} for v in _substitutes(base.get(param))]
        out += [
            Case(case.category, case.id, "perturbed", call(name, v), case.example) for v in variants
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bfcl-checker", type=Path, help="BFCL's ast_checker.py")
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--show", type=int, default=5, help="disagreements shown per category")
    args = parser.parse_args(argv)
    checker = load_bfcl_checker(args.bfcl_checker) if args.bfcl_checker else None
    factory = get_scorer("argument_match")
    assert factory is not None
    scorers: dict[str, Any] = {}

    def verdict(case: Case) -> Any:
        if case.id not in scorers:
            tools = tuple(case.example.fields["tools"])
            context = ScorerContext(benchmark_path=Path("bfcl.yaml"), tools=tools)
            scorers[case.id] = factory({"expected_field": "expected"}, context)
        return scorers[case.id](case.completion, case.example)

    cases = bfcl_cases(args.shared)
    print("Mutations (tests/test_bfcl_fidelity.py), argument_match's agreement")
    header = f"{'category':<14} {'answers':>7}  {'with the oracle':>15}"
    print(header + (f"  {'with BFCL':>9}  {'oracle vs BFCL':>14}" if checker else ""))
    for category in CATEGORIES:
        rows = [c for c in cases if c.category == category]
        same_oracle = same_bfcl = oracle_bfcl = 0
        missed: Counter[str] = Counter()
        for case in rows:
            score = verdict(case)
            same_oracle += score.value == case.verdict
            if score.value != case.verdict:
                missed[case.kind] += 1
            if checker is not None:
                reference = bfcl_verdict(checker, case)
                same_bfcl += score.value == reference
                oracle_bfcl += case.verdict == reference
        line = f"{category:<14} {len(rows):>7}  {same_oracle / len(rows):>15.1%}"
        if checker is not None:
            line += f"  {same_bfcl / len(rows):>9.1%}  {oracle_bfcl / len(rows):>14.1%}"
        print(line)
        if missed:
            print("    disagreeing with the oracle:", dict(missed.most_common()))
    if checker is None:
        return 0
    print("\nPerturbed answers, argument_match's agreement with BFCL's checker")
    print(f"{'category':<14} {'answers':>7}  {'with BFCL':>9}  {'BFCL accepts':>12}")
    perturbations = perturbed(cases)
    for category in CATEGORIES:
        rows = [c for c in perturbations if c.category == category]
        if not rows:
            continue
        same = accepted = shown = 0
        for case in rows:
            score, reference = verdict(case), bfcl_verdict(checker, case)
            same += score.value == reference
            accepted += reference == 1.0
            if score.value != reference and shown < args.show:
                shown += 1
                arguments = case.completion.tool_calls[0].arguments
                print(f"  {case.id} {arguments}: BFCL {reference}, ours {score}")
        share, accepts = same / len(rows), accepted / len(rows)
        print(f"{category:<14} {len(rows):>7}  {share:>9.1%}  {accepts:>12.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
