"""Secrets scrubbed at the boundary: a key a server quotes or echoes never reaches a file."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.config import ServerSpec, TargetsFile, TargetSpec
from pytest_expertbench.engine import EngineSettings
from pytest_expertbench.judging import TargetPool
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall
from pytest_expertbench.secrets import MASK, Scrubber, spec_secrets
from pytest_expertbench.servers import _copy_scrubbed
from pytest_expertbench.targets import build_target
from tests.helpers import ANSWERS, LOCAL, Project, fake_server_block
from tests.support.fake_openai import FakeOpenAI

KEY = "sk-PLANTEDsecretKEYabcdefXYZ"  # no digit: the numeric scorer ignores it
HEADER_KEY = "hdr-PLANTEDheaderTOKENqrs"
VARIABLE = "EXPERTBENCH_TEST_PLANTED_KEY"


def spec(name: str = "live", **options: object) -> TargetSpec:
    return TargetSpec(name, "openai", options, Path("targets.yaml"))


# ---------------------------------------------------------------------- the scrubber


def test_every_form_of_a_secret_is_masked_and_the_longest_first() -> None:
    scrub = Scrubber([KEY, KEY + "-long", "abc"])  # "abc": too short to be a secret
    encoded = base64.b64encode(KEY.encode()).decode()
    text = f"{KEY} {KEY}-long {urllib.parse.quote(KEY + '/x', safe='')} {encoded} abc"
    assert scrub.text(text) == f"{MASK} {MASK} {MASK}%2Fx {MASK} abc"
    assert scrub.data(KEY.encode()) == MASK.encode()
    assert not Scrubber() and Scrubber().text(KEY) == KEY


def test_a_special_character_secret_is_masked_url_encoded_too() -> None:
    secret = "p@ss/word+with space"
    scrub = Scrubber([secret])
    for form in (urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)):
        assert scrub.text(f"url?k={form}&x=1") == f"url?k={MASK}&x=1"


def test_the_secrets_of_a_target_are_its_key_and_its_credential_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, KEY)
    basic = base64.b64encode(b"alice:wonderland-pass").decode()
    headers = {
        "Authorization": f"Bearer {HEADER_KEY}",
        "Proxy-Authorization": f"Basic {basic}",
        "X-Api-Key": "xapikey-value",
        "Cookie": "session=cookie-value",
        "X-Org": "not-a-secret-org",
    }
    server = ServerSpec(("serve",), env={"HF_TOKEN": "hf-token-value", "PORT": "8000"})
    found = spec_secrets(
        TargetSpec(
            "t", "http", {"api_key_env": VARIABLE, "headers": headers}, Path("x"), server=server
        )
    )
    assert {KEY, HEADER_KEY, "xapikey-value", "session=cookie-value", "hf-token-value"} <= found
    assert {"alice:wonderland-pass", "wonderland-pass", basic} <= found
    assert "not-a-secret-org" not in found and "8000" not in found


def test_answers_and_errors_are_scrubbed_keeping_their_kind_and_flags() -> None:
    scrub = Scrubber([KEY])
    answer = Completion(f"key {KEY}", (ToolCall("t", json.dumps({"k": KEY})),), latency_ms=5.0)
    assert scrub.completion(answer) == Completion(
        f"key {MASK}", (ToolCall("t", json.dumps({"k": MASK})),), latency_ms=5.0
    )
    error = scrub.error(TargetError(f"HTTP 429: {KEY}", retryable=True, status=429))
    assert (error.message, str(error), error.retryable, error.status) == (
        f"HTTP 429: {MASK}",
        f"HTTP 429: {MASK}",
        True,
        429,
    )


def test_a_log_copy_masks_a_secret_split_across_reads() -> None:
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    source, sink = os.fdopen(read_end, "rb", buffering=0), os.fdopen(out_write, "wb")
    copier = threading.Thread(target=_copy_scrubbed, args=(source, sink, Scrubber([KEY])))
    copier.start()
    half = len(KEY) // 2
    os.write(write_end, f"line one {KEY[:half]}".encode())
    os.write(write_end, f"{KEY[half:]} tail\nno newline {KEY}".encode())
    os.close(write_end)
    copier.join(timeout=10)
    with os.fdopen(out_read, "rb") as copied:
        assert copied.read().decode() == f"line one {MASK} tail\nno newline {MASK}"


# ---------------------------------------------------------------------- the engine


def test_a_quoted_key_and_an_echoed_key_leave_the_engine_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VARIABLE, KEY)
    with FakeOpenAI(answers=ANSWERS, echo_key=True) as fake:
        fake.script("2 + 3", ["401-key"])
        options = {"base_url": fake.base_url, "model": "m", "api_key_env": VARIABLE}
        targets = TargetsFile(
            tmp_path / "targets.yaml", "judge", {"judge": spec("judge", **options)}
        )
        cache = ResponseCache(tmp_path / "cache")
        settings = EngineSettings(max_retries=0)
        with TargetPool(targets, build_target, settings, lambda: cache) as pool:  # the judge path
            with pytest.raises(TargetError) as refused:
                pool.ask("judge", Request("b", "q0", "What is 2 + 3?"))
            answer = pool.ask("judge", Request("b", "q1", "What is 10 - 4?"))
        cache.close()
    assert refused.value.message.startswith("HTTP 401")
    assert KEY not in refused.value.message and MASK in refused.value.message
    assert answer.text == f"The answer is 6. (sent Authorization: Bearer {MASK})"
    stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert stored and KEY.encode() not in stored


# ---------------------------------------------------------------------- a whole run


def planted_files(root: Path, written: set[Path]) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p not in written
    }


def test_no_file_nor_terminal_of_a_run_holds_the_key_a_server_quoted_or_echoed(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, KEY)
    answers = project.root / "answers.json"
    answers.write_text(json.dumps(ANSWERS), encoding="utf-8")
    server = fake_server_block(
        "--echo-key", "--answers", str(answers), "--script", "2 + 3", "401-key"
    )
    target = {
        "kind": "openai",
        "base_url": LOCAL + "/v1",
        "model": "fake",
        "api_key_env": VARIABLE,
        "headers": {"X-Api-Key": HEADER_KEY},
        "max_retries": 0,
        "server": server,
    }
    project.targets({"live": target}, default="live")
    written = {project.bench_dir / "targets.yaml", answers}
    result = project.run(
        "--expert-bench=quick",
        "--expert-bench-report-dir=reports/out",
        "--expert-bench-record=recorded/answers.jsonl",
        "--junitxml=junit.xml",
        "-vv",
        subprocess=True,
    )
    result.assert_outcomes(passed=5, errors=1, failed=1)  # q0 refused: the gate, incomplete
    files = planted_files(project.root, written)
    for name in ("reports/out/results.jsonl", "reports/out/summary.md", "reports/out/live.log"):
        assert name in files
    assert "junit.xml" in files and "recorded/answers.jsonl" in files
    assert any(name.startswith(".expertbench/cache") for name in files)
    output = result.stdout.str() + result.stderr.str()
    for secret in (KEY, HEADER_KEY):
        leaks = [name for name, data in files.items() if secret.encode() in data]
        assert not leaks, f"{secret} in {leaks}"
        assert secret not in output
    assert MASK.encode() in files["reports/out/live.log"]
    assert MASK.encode() in files["reports/out/results.jsonl"]
    assert MASK.encode() in files["junit.xml"] and MASK.encode() in files["recorded/answers.jsonl"]
    assert f"Incorrect API key provided: {MASK}" in output


def test_a_failed_start_shows_its_log_with_the_key_masked(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, KEY)
    code = f"import os, sys; print('bad key', os.environ[{VARIABLE!r}]); sys.exit(3)"
    target = {
        "kind": "openai",
        "base_url": "http://127.0.0.1:{port}/v1",
        "model": "fake",
        "api_key_env": VARIABLE,
        "server": {"command": [sys.executable, "-c", code]},
    }
    project.targets({"live": target}, default="live")
    result = project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"bad key {MASK}" in err and KEY not in err
    assert (project.report_dir() / "live.log").read_text() == f"bad key {MASK}\n"
