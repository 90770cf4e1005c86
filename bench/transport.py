"""CPU per request of the engine's HTTP layer (clients.ClientPool), without pytest.

The engine borrows one client per request in flight from a ClientPool and asks it for
JSON; this script does the same for N chat requests, ``--concurrency`` at a time,
against tests/support/fake_openai.py in a subprocess at latency 0 (its CPU is not
counted), and prints the CPU this process spent (user + system) per request. A run
at a few thousand requests spends most of the engine's own CPU here.

    python bench/transport.py                       # 4000 requests, 32 in flight, median of 3
    python bench/transport.py --n 10000 --repeat 5

Run from anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throughput import fake_server, prompt_of

from pytest_expertbench.clients import ClientPool


async def ask_all(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Ask N requests through one ClientPool; (CPU seconds, wall seconds) spent."""
    pool = ClientPool(concurrency)
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            slot, client = pool.acquire()
            try:
                payload = {
                    "model": "bench",
                    "messages": [{"role": "user", "content": prompt_of(i)}],
                    "max_tokens": 16,
                }
                answer = await client.request_json(url, payload)
                assert answer["choices"][0]["message"]["content"] == f"ANSWER: question {i}"
            finally:
                pool.release(slot)

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm: connections open
    queue = iter(range(n))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await pool.aclose()
    return cpu, wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=4000, help="requests per run [4000]")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight [32]")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is shown [3]")
    args = parser.parse_args(argv)
    runs = []
    with fake_server(0.0, max(64, args.concurrency)) as server:
        url = f"{server.base_url}/chat/completions"
        for _ in range(args.repeat):
            runs.append(asyncio.run(ask_all(url, args.n, args.concurrency)))
    cpu_ms = [cpu * 1000 / args.n for cpu, _ in runs]
    wall_ms = [wall * 1000 / args.n for _, wall in runs]
    print(f"N={args.n} concurrency={args.concurrency} latency=0, {args.repeat} runs")
    print(f"  CPU per request   {statistics.median(cpu_ms):.3f} ms  ({_runs(cpu_ms)})")
    print(f"  wall per request  {statistics.median(wall_ms):.3f} ms  ({_runs(wall_ms)})")


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main(sys.argv[1:])
