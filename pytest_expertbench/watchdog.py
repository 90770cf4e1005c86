"""Stop a managed server's process group when the pytest process that started it dies.

``ManagedServer`` stops its server itself at the end of the session, and an ``atexit``
hook does it when the session ends badly; neither runs when pytest is killed by
SIGKILL (the OOM killer, a CI runner's hard kill, ``kill -9``), which left the server
running, holding its port and its GPU. So next to each server the plugin starts
this small process::

    python watchdog.py <pytest pid> <server's process group> <grace seconds>

It checks twice a second whether its parent is still the pytest process (an orphan
gets a new parent); once it is not, it sends SIGTERM to the server's group, then
SIGKILL to what is left after the grace time. It exits by itself once the group is
gone, and the session kills it when it stops the server. It reads and writes nothing
of the server's output, which still goes through the session's scrubbing copy to the
log. Standard library only, and run by its path with ``python -I``: it must start
fast and without the session's environment.

POSIX only, as process groups are.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

POLL_S = 0.5
_STEP_S = 0.1


def group_alive(group: int) -> bool:
    """Whether a member of the group still runs; zombies do not count.

    Orphans of a server are reaped by PID 1, which in a container may never happen:
    ``killpg(group, 0)`` would then see the group alive forever, so Linux reads /proc.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
            return True
    return False


def stop_group(group: int, grace_s: float) -> None:
    """SIGTERM to the group, SIGKILL to what is left of it after ``grace_s``."""
    try:
        os.killpg(group, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(group):
        time.sleep(_STEP_S)
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return


def watch(parent: int, group: int, grace_s: float, poll_s: float = POLL_S) -> bool:
    """Wait while ``parent`` lives and the group runs; True when the group was stopped."""
    while group_alive(group):
        if os.getppid() != parent:  # the parent died: this process was reparented
            stop_group(group, grace_s)
            return True
        time.sleep(poll_s)
    return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: watchdog.py PARENT_PID GROUP GRACE_S", file=sys.stderr)
        return 2
    # A Ctrl-C in the terminal is pytest's to handle: it stops the server itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(args[0]), int(args[1]), float(args[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
