"""Wall time of a benchmark run under each ``--dist`` mode of pytest-xdist.

Runs the same N examples against a fake server with ``--latency`` under ``-n W`` with
each mode given, and prints each time, its ratio to the first mode's, and the
requests the server saw (each example must be asked exactly once).

    python bench/dist_modes.py --n 400 --latency 0.2 --concurrency 16
    python bench/dist_modes.py --modes load worksteal loadfile --repeat 3

Run from anywhere; it starts its server with this checkout's Python.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (
    REPO,
    compile_package,
    expertbench_command,
    fake_server,
    server_arguments,
    timed,
    write_benchmark,
)


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(__doc__)
    parser.set_defaults(n=400, concurrency=16)
    parser.add_argument("--workers", type=int, default=2, help="xdist workers [2]")
    parser.add_argument("--modes", nargs="+", default=["load", "worksteal"], help="--dist modes")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mode; medians [1]")
    args = parser.parse_args(argv)
    compile_package()
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, fake_server(args.latency, args.capacity) as server:
        folder = Path(tmp)
        suite = write_benchmark(folder, args.n, server.base_url, args.concurrency)
        (folder / "baselines").mkdir()
        for mode in args.modes:
            command = expertbench_command(folder, suite, args.concurrency)
            command += ["-n", str(args.workers), "--dist", mode]
            runs = []
            for _ in range(args.repeat):
                server.reset()
                runs.append(timed(command, REPO))
                asked = server.total()
            times[mode] = statistics.median(runs)
            first = times[args.modes[0]]
            print(
                f"--dist {mode:<10} {times[mode]:6.2f} s  x{times[mode] / first:.2f} of "
                f"{args.modes[0]}  asked {asked} of {args.n}  runs: "
                + " ".join(f"{s:.2f}" for s in runs),
                flush=True,
            )


if __name__ == "__main__":
    main()
