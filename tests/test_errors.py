"""One base class for the errors the plugin raises on purpose (errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import pytest_expertbench
from pytest_expertbench.baseline import BaselineError
from pytest_expertbench.config import ConfigError
from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.records import TargetError
from pytest_expertbench.scorers import OptionError, ScoringError
from pytest_expertbench.template import TemplateError

# private errors raised and caught inside one module (none at present)
PRIVATE: set[str] = set()


def exception_classes() -> list[type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(pytest_expertbench.__path__, "pytest_expertbench."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[cls.__qualname__] = cls
    return [cls for name, cls in sorted(found.items()) if name not in PRIVATE]


def test_every_error_class_of_the_package_is_an_expertbench_error() -> None:
    classes = exception_classes()
    assert {"ConfigError", "BaselineError", "CacheError", "ServerError"} <= {
        c.__name__ for c in classes
    }
    assert [c.__name__ for c in classes if not issubclass(c, ExpertBenchError)] == []


def test_the_message_names_the_path_and_the_key_when_there_are_some() -> None:
    assert str(ExpertBenchError("bad", path=Path("a/b.yaml"), key="scorers[0]")) == (
        "a/b.yaml: scorers[0]: bad"
    )
    assert str(ExpertBenchError("bad", key="k")) == "k: bad"
    assert str(ExpertBenchError("bad", path="x.json")) == "x.json: bad"
    assert str(ExpertBenchError("bad")) == "bad"


def test_the_subclasses_keep_their_constructors_and_messages() -> None:
    config = ConfigError("b.yaml", "metrics.acc", "no such scorer")
    assert (str(config), config.path, config.key) == (
        "b.yaml: metrics.acc: no such scorer",
        Path("b.yaml"),
        "metrics.acc",
    )
    assert str(ConfigError("b.yaml", "", "empty")) == "b.yaml: empty"
    baseline = BaselineError("m.json", "metrics.x.value", "not a number")
    assert (str(baseline), baseline.field, baseline.key) == (
        "m.json: metrics.x.value: not a number",
        "metrics.x.value",
        "metrics.x.value",
    )
    option = OptionError("rubric", "this key is required")
    assert (str(option), option.key, option.message) == (
        "this key is required",  # the ConfigError that reports it names the key
        "rubric",
        "this key is required",
    )
    target = TargetError("HTTP 503", retryable=True, status=503)
    assert (str(target), target.message, target.status) == ("HTTP 503", "HTTP 503", 503)
    assert str(ScoringError("example q1: no field 'x'")) == "example q1: no field 'x'"


def test_one_except_clause_catches_them_and_value_errors_stay_value_errors() -> None:
    with pytest.raises(ExpertBenchError):
        raise ConfigError("b.yaml", "k", "m")
    with pytest.raises(ValueError):
        raise TemplateError("malformed")
    with pytest.raises(ValueError):
        raise OptionError("k", "m")
