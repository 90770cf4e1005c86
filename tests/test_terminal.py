"""What a person sees in a real terminal (a pty through util-linux ``script``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.helpers import Project, replay_rows

pytestmark = pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")

RED_BOLD = ("\x1b[31m\x1b[1m", "\x1b[1m\x1b[31m")


def in_a_terminal(project: Project, *args: str) -> str:
    command = shlex.join([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args])
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    for forced in ("NO_COLOR", "PY_COLORS", "FORCE_COLOR"):  # pytester sets PY_COLORS=0
        env.pop(forced, None)
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout


def test_a_regression_is_red_and_the_gate_says_so_first(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline")
    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2", "q4", "q5"]))
    screen = in_a_terminal(project, "--expert-bench=quick")
    for text in ("Gate failed: 1 regression in 1 benchmark.", "REGRESSION mini.accuracy: 1.0"):
        assert any(code + text in screen for code in RED_BOLD), text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)
    assert "FAILED benchmarks_suites/mini.yaml::mini::gate - mini (suite quick" in plain
    assert "1 failed, 6 passed" in plain


def test_an_unchanged_rerun_reads_no_regressions_in_plain_text(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline")
    screen = in_a_terminal(project, "--expert-bench=quick")
    line = next(line for line in screen.splitlines() if "No regressions" in line)
    assert "No regressions in 1 benchmark (1 metric ok)." in line
    assert "\x1b[31m" not in line
    assert "7 passed" in re.sub(r"\x1b\[[0-9;]*m", "", screen)
