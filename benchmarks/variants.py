"""A/B of POST /api/trigger between variants of this checkout set by environment variables.

    python -m benchmarks.variants [--rounds 4] [--seconds 8] NAME:VAR=VALUE[,VAR=VALUE] ...

    python -m benchmarks.variants info:LOG_LEVEL=INFO warn:LOG_LEVEL=WARNING

Starts one stack (benchmarks/stack.py), serves the API once per variant (two processes each,
as `make bench` does, with the variant's variables added to the stack's environment), warms
each up, then runs (a)'s load (32 connections) on each in turn, the order swapped every round,
so that a slow spell of a shared machine hits every variant alike. Prints each turn's
throughput, the CPU the variant's API processes spent per trigger (in the kernel, too) and
their context switches per trigger, then the medians. benchmarks/ab.py compares two checkouts
the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass, field
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
from benchmarks.stack import (
    PY,
    REPO,
    BenchStack,
    Process,
    _listeners,
    bench_stack,
    free_port,
    wait_for,
)


@dataclass
class Variant:
    name: str
    env: dict[str, str]
    tree: Path = REPO  # the checkout serving it, with its own .venv (benchmarks/ab.py)
    url: str = ""
    process: Process | None = None
    turns: list[tuple[float, float, float, float]] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """NAME:VAR=VALUE,VAR=VALUE (no variables: the stack's own environment)."""
    name, _, assignments = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r}: a variant needs a name")
    env: dict[str, str] = {}
    for assignment in filter(None, assignments.split(",")):
        variable, equals, value = assignment.partition("=")
        if not equals or not variable:
            raise argparse.ArgumentTypeError(f"{assignment!r} is not VAR=VALUE")
        env[variable] = value
    return Variant(name, env)


def _serve(stack: BenchStack, variant: Variant) -> None:
    port = free_port()
    python = PY if variant.tree == REPO else str(variant.tree / ".venv/bin/python")
    command = [python, "-m", "benchmarks.serve", "api.app:app", "--port", str(port)]
    variant.process = stack.spawn(
        f"api-{variant.name}", [*command, "--workers", "2"], env=variant.env, cwd=variant.tree
    )
    variant.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{variant.url}/healthz").status_code == 200, 60, variant.url)
    wait_for(lambda: _listeners(port) >= 2, 30, f"two API processes of {variant.name}")


def _usage(processes: list[psutil.Process]) -> tuple[float, float, int]:
    """CPU seconds (user and system), system seconds, context switches."""
    cpu = system = 0.0
    switches = 0
    for process in processes:
        times = process.cpu_times()
        cpu += times.user + times.system
        system += times.system
        switches += sum(process.num_ctx_switches())
    return cpu, system, switches


def _turn(
    loop: asyncio.AbstractEventLoop, stack: BenchStack, variant: Variant, sizes: Sizes
) -> None:
    assert variant.process is not None
    children = psutil.Process(variant.process.pid).children(recursive=True)
    body = {"workflowId": "building-alert", "payload": ALERT}
    before = _usage(children)
    result = request_throughput(loop, f"{variant.url}/api/trigger", body, sizes, AUTH)
    after = _usage(children)
    triggers = max(result.ok, 1)
    cpu, system, switches = (
        (after[0] - before[0]) / triggers * 1e6,
        (after[1] - before[1]) / triggers * 1e6,
        (after[2] - before[2]) / triggers,
    )
    variant.turns.append((result.rate, cpu, system, switches))
    print(
        f"{variant.name}: {result.rate:,.0f} req/s, {cpu:.0f} µs CPU/trigger ({system:.0f} in "
        f"the kernel), {switches:.2f} context switches/trigger, p99 "
        f"{result.percentile(99) * 1000:.1f} ms",
        flush=True,
    )
    purge_queue(stack)  # no worker runs: drop what the turn queued and recorded
    truncate_notifications()


def compare(variants: list[Variant], *, rounds: int, seconds: float) -> None:
    """Serve every variant, warm each up, then run (a)'s load on each in turn for `rounds`
    rounds, the order swapped every round; print each turn and the medians."""
    full = Sizes.of(quick=False)
    sizes = Sizes(**{**vars(full), "load_seconds": seconds, "warmup_seconds": 1.0})
    warmup = Sizes(**{**vars(full), "load_seconds": 2.0, "warmup_seconds": 0.5})
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    with (
        tempfile.TemporaryDirectory(prefix="xnovu-variants-") as tmp,
        bench_stack(Path(tmp)) as stack,
    ):
        for variant in variants:
            _serve(stack, variant)
        for variant in variants:
            body = {"workflowId": "building-alert", "payload": ALERT}
            request_throughput(loop, f"{variant.url}/api/trigger", body, warmup, AUTH)
            purge_queue(stack)
        for number in range(rounds):
            print(f"round {number + 1}", flush=True)
            for variant in variants if number % 2 == 0 else variants[::-1]:
                _turn(loop, stack, variant, sizes)
    for variant in variants:
        rate, cpu, system, switches = (
            statistics.median(turn[i] for turn in variant.turns) for i in range(4)
        )
        where = variant.env or ("" if variant.tree == REPO else str(variant.tree))
        print(
            f"{variant.name} {where}: median {rate:,.0f} req/s, {cpu:.0f} µs API "
            f"CPU/trigger ({system:.0f} in the kernel), {switches:.2f} context switches/trigger"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", type=parse_variant)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    compare(args.variants, rounds=args.rounds, seconds=args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
