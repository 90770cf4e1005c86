"""Per-question tools (``tools: {field: …}``): converted as BFCL's OpenAI handler does,
sent with each example's request, part of its cache key, and the called names mapped
back to the dataset's before scoring."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.config import ConfigError
from pytest_expertbench.datasets import ExampleDataError, load_examples
from pytest_expertbench.records import Completion, ToolCall
from pytest_expertbench.row_tools import named_back, request_tools, sent_name
from pytest_expertbench.run import make_request
from tests.helpers import Project, write_jsonl

FACTORIAL = {
    "name": "math.factorial",
    "description": "Factorial of a number.",
    "parameters": {
        "type": "dict",
        "properties": {
            "number": {"type": "integer", "description": "The number."},
            "scale": {"type": "float", "description": "A scale."},
            "points": {
                "type": "array",
                "items": {"type": "tuple", "items": {"type": "float"}},
                "description": "Points.",
            },
            "options": {
                "type": "dict",
                "properties": {"mode": {"type": "any", "description": "Mode."}},
                "description": "Options.",
            },
            "untyped": {"description": "No type."},
        },
        "required": ["number"],
    },
}
WEATHER = {  # a name with a character OpenAI refuses that is not a dot
    "name": "get weather!",
    "description": "Weather.",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string", "description": "City."}},
        "required": ["city"],
    },
}
ROWS = [
    {
        "id": "a",
        "question": "5!",
        "function": [FACTORIAL],
        "expected": [{"math.factorial": {"number": [5]}}],
    },
    {
        "id": "b",
        "question": "Oslo?",
        "function": [WEATHER],
        "expected": [{"get weather!": {"city": ["Oslo"]}}],
    },
]
BENCH = """\
name: row_tools
dataset: {file: data/rows.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
tools: {field: function}
scorers:
  - tool_selection: {expected_field: expected}
  - argument_match: {expected_field: expected}
metrics:
  selection: {of: tool_selection, direction: higher}
  arguments: {of: argument_match, direction: higher}
"""


def _bench(tmp_path: Path, text: str = BENCH, rows: list[dict[str, Any]] = ROWS) -> Any:
    write_jsonl(tmp_path / "data" / "rows.jsonl", rows)
    path = tmp_path / "row_tools.yaml"
    path.write_text(text, encoding="utf-8")
    return load_benchmark(path)


def test_a_bfcl_function_is_converted_as_bfcls_openai_handler_does(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    example = load_examples(bench, "quick").examples[0]
    (tool,) = request_tools(bench, example)
    assert tool["type"] == "function"
    function = tool["function"]
    assert function["name"] == "math_factorial"
    assert function["description"] == (
        "Factorial of a number. Note that the provided function is in Python 3 syntax."
    )
    parameters = function["parameters"]
    assert parameters["type"] == "object"
    properties = parameters["properties"]
    assert properties["number"] == {"type": "integer", "description": "The number."}
    assert properties["scale"] == {
        "type": "number",
        "format": "float",
        "description": "A scale. This is a float type value.",
    }
    assert properties["points"]["items"]["type"] == "array"
    assert properties["points"]["items"]["items"]["type"] == "number"
    assert properties["options"]["properties"]["mode"]["type"] == "string"
    assert properties["untyped"]["type"] == "string"
    assert parameters["required"] == ["number"]
    # the dataset's row is left as it was
    assert example.fields["function"][0]["parameters"]["type"] == "dict"


def test_names_are_made_valid_for_openai() -> None:
    assert sent_name("math.factorial") == "math_factorial"
    assert sent_name("get weather!") == "get_weather_"
    assert sent_name("ok_name-2") == "ok_name-2"


def test_the_request_carries_the_rows_tools_and_the_cache_keys_them(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    first, second = load_examples(bench, "quick").examples
    asked = make_request(bench, first)
    assert [t["function"]["name"] for t in asked.tools] == ["math_factorial"]
    assert make_request(bench, second).tools[0]["function"]["name"] == "get_weather_"
    # The engine empties the fields for targets that do not read them: the tools alone
    # must then tell two requests apart.
    cache = ResponseCache(tmp_path / "cache", "off")
    bare = replace(asked, fields={})
    assert cache.key({}, bare) == cache.key({}, replace(make_request(bench, first), fields={}))
    assert cache.key({}, bare) != cache.key(
        {}, replace(bare, tools=make_request(bench, second).tools)
    )


def test_called_names_are_mapped_back_before_scoring(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    example = load_examples(bench, "quick").examples[1]
    answer = Completion(text="", tool_calls=(ToolCall("get_weather_", '{"city": "Oslo"}'),))
    assert named_back(answer, bench, example).tool_calls[0].name == "get weather!"
    scores = {spec.name: spec.function(answer, example).value for spec in bench.scorers}
    assert scores == {"tool_selection": 1.0, "argument_match": 1.0}


def test_two_tools_sent_under_one_name_are_an_example_error(tmp_path: Path) -> None:
    clash = {**FACTORIAL, "name": "math_factorial"}
    rows = [{**ROWS[0], "function": [FACTORIAL, clash]}]
    bench = _bench(tmp_path, rows=rows)
    example = load_examples(bench, "quick").examples[0]
    with pytest.raises(ExampleDataError, match="both sent as 'math_factorial'"):
        make_request(bench, example)


def test_a_tools_field_the_dataset_lacks_names_the_key(tmp_path: Path) -> None:
    bench = _bench(tmp_path, BENCH.replace("field: function", "field: functions"))
    with pytest.raises(ConfigError) as error:
        load_examples(bench, "quick")
    assert error.value.key == "tools.field"
    assert "functions" in str(error.value)


def test_tools_mapping_rejects_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _bench(tmp_path, BENCH.replace("{field: function}", "{field: function, fmt: x}"))
    assert error.value.key == "tools.fmt"


EXPERT = """
import json, pathlib

def answer(prompt, request):
    with pathlib.Path("sent_tools.jsonl").open("a") as log:
        log.write(json.dumps({"id": request.example_id, "tools": list(request.tools)}) + "\\n")
    name = request.tools[0]["function"]["name"]
    arguments = {"number": 5} if prompt == "5!" else {"city": "Oslo"}
    return {"text": "", "tool_calls": [{"name": name, "arguments": arguments}]}
"""


def test_a_run_sends_each_example_its_tools_and_scores_the_original_names(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester)
    (project.bench_dir / "mini.yaml").unlink()
    write_jsonl(project.bench_dir / "data" / "rows.jsonl", ROWS)
    project.write("row_tools.yaml", BENCH)
    pytester.makepyfile(expert=EXPERT)
    pytester.makeini("[pytest]\npythonpath = .\n")
    project.targets({"local": {"kind": "python", "function": "expert:answer"}}, default="local")
    result = project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/out")
    result.assert_outcomes(passed=2, skipped=1)
    sent = {
        row["id"]: [t["function"]["name"] for t in row["tools"]]
        for row in map(json.loads, (pytester.path / "sent_tools.jsonl").read_text().splitlines())
    }
    assert sent == {"a": ["math_factorial"], "b": ["get_weather_"]}
    rows = project.results()
    assert project.metric(rows, "row_tools.selection")["value"] == 1.0
    assert project.metric(rows, "row_tools.arguments")["value"] == 1.0
