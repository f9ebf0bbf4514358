"""A/B of POST /api/trigger: this checkout against another, on one stack, rounds alternating.

    python -m benchmarks.ab OTHER_CHECKOUT [--rounds 6]

Both checkouts serve the API from their own venv (`<checkout>/.venv`, as `make install` makes
it) against the same PostgreSQL and Redis, one after the other, the order swapped every round,
so that a slow spell of a shared machine hits both alike. Each turn: a warm-up, then the
measured load of (a) (32 connections); it prints the throughput and the CPU the API processes
spent per trigger, then the medians. Used to compare a change with its parent
(docs/performance.md, "Before and after the restructuring").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx
import psutil

from benchmarks.run import (
    ALERT,
    AUTH,
    Sizes,
    new_event_loop,
    purge_queue,
    request_throughput,
    truncate_notifications,
)
from benchmarks.stack import REPO, BenchStack, _listeners, bench_stack, free_port, wait_for


def _cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def _turn(
    tree: Path, stack: BenchStack, loop: asyncio.AbstractEventLoop, sizes: Sizes
) -> tuple[float, float]:
    """One checkout's API under (a)'s load: its throughput and API CPU µs per trigger."""
    body = {"workflowId": "building-alert", "payload": ALERT}
    port = free_port()
    api = subprocess.Popen(
        [str(tree / ".venv/bin/python"), "-m", "benchmarks.serve", "api.app:app",
         "--port", str(port), "--workers", "2"],
        cwd=tree, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, url)
        wait_for(lambda: _listeners(port) >= 2, 30, "two API processes")
        request_throughput(loop, f"{url}/api/trigger", body, sizes, AUTH)  # warm-up
        before = _cpu_seconds(api.pid)
        load = request_throughput(loop, f"{url}/api/trigger", body, sizes, AUTH)
        cpu = (_cpu_seconds(api.pid) - before) / (load.rate * sizes.load_seconds)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)
    return load.rate, cpu * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    trees = {"this": REPO, "other": args.other.resolve()}
    sizes = Sizes.of(False)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    loop = new_event_loop()
    with tempfile.TemporaryDirectory() as tmp, bench_stack(Path(tmp)) as stack:
        for number in range(args.rounds):
            order = list(trees.items()) if number % 2 == 0 else list(trees.items())[::-1]
            for name, tree in order:
                rate, cpu = _turn(tree, stack, loop, sizes)
                results[name].append((rate, cpu))
                print(f"round {number + 1} {name}: {rate:,.0f} req/s, {cpu:.0f} µs CPU")
                purge_queue(stack)
                truncate_notifications()
    for name, runs in results.items():
        rate = statistics.median(rate for rate, _ in runs)
        cpu = statistics.median(cpu for _, cpu in runs)
        print(f"{name} ({trees[name]}): median {rate:,.0f} req/s, {cpu:.0f} µs API CPU/trigger")


if __name__ == "__main__":
    main()
