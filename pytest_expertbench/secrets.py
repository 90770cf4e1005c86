"""Secrets scrubbed at the boundary: a key never leaves the engine or a server's log.

A server may quote the credential it was sent (OpenAI's 401 says "Incorrect API key
provided: sk-…") or echo it in an answer; a managed server may print it in its log.
A :class:`Scrubber` knows the session's secret values and replaces each of them with
``***`` wherever it is applied: the engine's outcomes (answers and errors, before the
cache stores them), a managed server's log copy and the last lines shown on a failed
start. Everything downstream (items, results.jsonl, summary.md, the JUnit XML, a
replay recording, the terminal) is made from those, so it holds no secret either.

The secrets are the values of the environment variables named by a target's
``api_key_env`` (and any other ``*_env`` option whose name says key, token, secret or
password), the values of its secret-bearing ``headers`` (Authorization,
Proxy-Authorization, Cookie, X-Api-Key, anything whose name says key, token, secret,
auth or password), the credential after the scheme of such a header (``Bearer X``:
``X``; ``Basic X``: ``X``, the ``user:password`` it decodes to and the password),
secret-named entries of a managed server's ``env``, and whatever a plugin target's
optional ``secrets()`` returns. Values shorter than :data:`MIN_LENGTH` are ignored
(they are not credentials and would mangle ordinary text). Each value is also
scrubbed in its URL-encoded, base64 and JSON-escaped forms.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, TargetError, ToolCall

__all__ = ["MASK", "MIN_LENGTH", "Scrubber", "is_secret_name", "spec_secrets", "target_secrets"]

MASK = "***"
MIN_LENGTH = 6
_SECRET_NAME = re.compile(r"auth|cookie|key|token|secret|passw|credential", re.IGNORECASE)
_SCHEME = re.compile(r"(?i)^\s*(bearer|basic|token|apikey|api-key|key)\s+(\S+)\s*$")


def is_secret_name(name: str) -> bool:
    """Whether a header (or variable) of this name carries a credential."""
    return bool(_SECRET_NAME.search(name))


def spec_secrets(spec: TargetSpec, environ: Mapping[str, str] | None = None) -> set[str]:
    """The secret values a targets-file entry refers to, read from ``environ``."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for options in (spec.options, spec.written_options or {}):
        for key, value in options.items():
            if str(key).endswith("_env") and is_secret_name(str(key)) and isinstance(value, str):
                found.add(environ.get(value, ""))
        headers = options.get("headers")
        if isinstance(headers, Mapping):
            found |= header_secrets(headers)
    if spec.server is not None:
        found |= {value for name, value in spec.server.env.items() if is_secret_name(name)}
    return found


def header_secrets(headers: Mapping[Any, Any]) -> set[str]:
    """The values of the secret-bearing headers, and the credential inside each."""
    found: set[str] = set()
    for name, raw in headers.items():
        if not is_secret_name(str(name)) or raw is None:
            continue
        value = str(raw)
        found.add(value)
        scheme = _SCHEME.match(value)
        if scheme is None:
            continue
        credential = scheme.group(2)
        found.add(credential)
        if scheme.group(1).lower() == "basic":
            found |= _basic_parts(credential)
    return found


def target_secrets(target: object) -> set[str]:
    """What a built target says is secret (an optional ``secrets()`` method or attribute)."""
    secrets = getattr(target, "secrets", None)
    if callable(secrets):
        secrets = secrets()
    if isinstance(secrets, str):
        return {secrets}
    if isinstance(secrets, Iterable):
        return {str(value) for value in secrets if value}
    return set()


def _basic_parts(credential: str) -> set[str]:
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return set()
    _, _, password = decoded.partition(":")
    return {decoded, password}


def _forms(value: str) -> set[str]:
    """``value`` as it may appear in text: raw, URL-encoded, base64, JSON-escaped."""
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(value.encode()).decode(),
        json.dumps(value)[1:-1],
    }


class Scrubber:
    """Replaces every known secret (longest first) with ``***``; thread-safe.

    A scrubber without secrets returns what it is given, at no cost.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._text: re.Pattern[str] | None = None
        self._bytes: re.Pattern[bytes] | None = None
        self.longest = 0  # the length in bytes of the longest form scrubbed
        self.add(values)

    @classmethod
    def for_targets(
        cls, specs: Iterable[TargetSpec], environ: Mapping[str, str] | None = None
    ) -> Scrubber:
        """A scrubber of every secret the targets file refers to (all targets: a judge's
        key may turn up in the model's answers as well)."""
        values: set[str] = set()
        for spec in specs:
            values |= spec_secrets(spec, environ)
        return cls(values)

    def add(self, values: Iterable[str]) -> None:
        """Scrub these values too (from now on)."""
        with self._lock:
            new = {form for value in values if len(value) >= MIN_LENGTH for form in _forms(value)}
            if new <= self._values:
                return
            self._values |= new
            ordered = sorted(self._values, key=lambda v: (-len(v), v))
            self._text = re.compile("|".join(map(re.escape, ordered)))
            encoded = [v.encode() for v in ordered]
            self._bytes = re.compile(b"|".join(map(re.escape, encoded)))
            self.longest = max(map(len, encoded))

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        pattern = self._text
        return text if pattern is None else pattern.sub(MASK, text)

    def data(self, data: bytes) -> bytes:
        pattern = self._bytes
        return data if pattern is None else pattern.sub(MASK.encode(), data)

    def ready(self, data: bytes) -> int:
        """How many leading bytes of ``data``, a stream's unwritten output, can be scrubbed
        and written now: all but a tail that could be the start of a secret the next
        bytes complete (a secret that spans the cut is kept whole)."""
        pattern, hold = self._bytes, max(0, self.longest - 1)
        if pattern is None or len(data) <= hold:
            return len(data) if pattern is None else 0
        cut = len(data) - hold
        for match in pattern.finditer(data):
            if match.start() < cut < match.end():
                return match.end()
        return cut

    def completion(self, completion: Completion) -> Completion:
        if self._text is None:
            return completion
        calls = tuple(
            ToolCall(self.text(c.name), self.text(c.arguments)) for c in completion.tool_calls
        )
        fingerprint = completion.server_fingerprint
        scrubbed = replace(
            completion,
            text=self.text(completion.text),
            tool_calls=calls,
            server_fingerprint=None if fingerprint is None else self.text(fingerprint),
        )
        return completion if scrubbed == completion else scrubbed

    def error(self, error: TargetError) -> TargetError:
        """``error`` (of the same class, with the same flags) with its message scrubbed."""
        message = self.text(error.message)
        if message == error.message:
            return error
        scrubbed = copy.copy(error)
        scrubbed.message = message
        scrubbed.args = (message,)
        return scrubbed

    def outcome(self, outcome: Completion | TargetError) -> Completion | TargetError:
        if isinstance(outcome, TargetError):
            return self.error(outcome)
        return self.completion(outcome)
