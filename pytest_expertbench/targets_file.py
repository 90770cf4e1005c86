"""The targets file (YAML) → a validated :class:`~pytest_expertbench.config.TargetsFile`.

The engine's keys (concurrency, timeouts, retries, rate limit), a managed ``server``,
a pinned ``revision`` and the ``price`` of its tokens are read here; the rest of a
target's keys are its kind's own options, checked when the target is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pytest_expertbench.config import (
    DEFAULT_MAX_CONCURRENCY,
    ConfigError,
    Price,
    ServerSpec,
    TargetsFile,
    TargetSpec,
)
from pytest_expertbench.yaml_reader import YamlReader, read_yaml


def load_targets(path: Path) -> TargetsFile:
    if not path.is_file():
        raise ConfigError(path, "", "the targets file does not exist")
    doc = read_yaml(path)
    reader = YamlReader(path, doc, "")
    targets: dict[str, TargetSpec] = {}
    for name in reader.mapping("targets"):
        targets[str(name)] = _target(reader.child("targets", str(name)), str(name))
    default = reader.text("default", default=None)
    reader.reject_unknown("default targets")
    if default is not None and default not in targets:
        raise ConfigError(path, "default", f"{default!r} is not one of the targets")
    return TargetsFile(path=path, default=default, targets=targets)


def _target(reader: YamlReader, name: str) -> TargetSpec:
    kind = reader.text("kind")
    common = "kind concurrency timeout_s max_retries max_retry_after_s requests_per_minute server"
    common += " revision price max_concurrency"
    options = {k: v for k, v in reader.doc.items() if k not in common.split()}
    for key in ("path",):
        if isinstance(options.get(key), str):
            options[key] = str((reader.path.parent / options[key]).resolve())
    concurrency = _concurrency(reader)
    max_concurrency = reader.whole("max_concurrency", default=DEFAULT_MAX_CONCURRENCY)
    if max_concurrency < 1:
        raise ConfigError(reader.path, reader.key("max_concurrency"), "expected 1 or more")
    return TargetSpec(
        name=name,
        kind=kind,
        options=options,
        source=reader.path,
        concurrency=concurrency,
        timeout_s=reader.number("timeout_s", default=120.0),
        max_retries=reader.whole("max_retries", default=4) or 0,
        requests_per_minute=reader.number("requests_per_minute", default=None),
        server=_server(reader.child("server")) if reader.has("server") else None,
        revision=reader.text("revision", default=None),
        max_retry_after_s=reader.number("max_retry_after_s", default=60.0),
        price=_price(reader.child("price")) if reader.has("price") else None,
        max_concurrency=max_concurrency,
    )


def _concurrency(reader: YamlReader) -> int | Literal["auto"] | None:
    """``concurrency``: a number of requests in flight (1 or more), or ``auto``."""
    if reader.doc.get("concurrency") == "auto":
        return "auto"
    number: int | None = reader.whole("concurrency", default=None)
    if number is not None and number < 1:
        raise ConfigError(reader.path, reader.key("concurrency"), "expected 1 or more, or auto")
    return number


def _price(reader: YamlReader) -> Price:
    reader.reject_unknown("input_per_mtok output_per_mtok")
    return Price(
        input_per_mtok=reader.number("input_per_mtok"),
        output_per_mtok=reader.number("output_per_mtok"),
    )


def _server(reader: YamlReader) -> ServerSpec:
    command = reader.text_list("command")
    if not command:
        raise ConfigError(reader.path, reader.key("command"), "expected a non-empty list")
    env = reader.mapping("env", default={})
    reader.reject_unknown("command env health_url startup_timeout_s")
    return ServerSpec(
        command=tuple(command),
        env={str(k): str(v) for k, v in env.items()},
        health_url=reader.text("health_url", default=None),
        startup_timeout_s=reader.number("startup_timeout_s", default=60.0),
    )
