"""What a person sees in a real terminal (a pty through util-linux ``script``)."""

from __future__ import annotations

import os
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
    env.pop("NO_COLOR", None)
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
    lines = screen.splitlines()
    headline = next(i for i, line in enumerate(lines) if "Gate failed" in line)
    assert any(
        code + "Gate failed: 1 regression in 1 benchmark." in lines[headline] for code in RED_BOLD
    )
    regression = next(line for line in lines if "REGRESSION mini.accuracy" in line)
    assert any(
        code + "REGRESSION mini.accuracy: 1.0000 → 0.1667" in regression for code in RED_BOLD
    )
    assert any("mini.yaml::mini::gate" in line and "FAILED" in line for line in lines)
    assert "1 failed, 6 passed" in screen


def test_an_unchanged_rerun_reads_no_regressions_in_plain_text(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline")
    screen = in_a_terminal(project, "--expert-bench=quick")
    line = next(line for line in screen.splitlines() if "No regressions" in line)
    assert "No regressions in 1 benchmark (1 metric ok)." in line
    assert "\x1b[31m" not in line
    assert "7 passed" in screen
