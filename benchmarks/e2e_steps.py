"""End to end as in production: bulk triggers through our API, Novu (the emulator) accepting
them, and every step of every notification executed on our bridge.

    python -m benchmarks.e2e_steps            # 5,000 notifications
    QUICK=1 python -m benchmarks.e2e_steps    # 2,000

Starts the stack `make bench` starts (benchmarks/stack.py and benchmarks/run.py: embedded
PostgreSQL with fsync on, Redis, the Novu emulator, `uvicorn --workers 2`, a prefork Celery
worker of concurrency 2 and beat), with Novu's Enterprise Events rate on both sides
(NOVU_EMULATOR_EVENTS_RPS and NOVU_EVENTS_RPS at 6,000) so that the tier is not what limits
the run. The emulator is synced with our API's `/api/novu` (`POST /v1/bridge/sync`, as `npx
novu sync` does), so it executes each step there as Novu's workers do (novu_emulator/bridge.py).
Measured in one run:

(a) the Celery no-op drain rate (benchmarks/run.py's baseline, before and after the run; the
    faster counts);
(b) notifications/s from the first bulk request until Novu accepted the last one (SENT);
(c) notifications/s from the first bulk request until the last of their steps was executed on
    the bridge (polled from `/_emulator/stats` every 50 ms);

and prints (c)/(a) and (b)/(a). `run(quick)` returns the figures, for benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.run import Run, Sizes, bulk_end_to_end
from benchmarks.stack import BenchStack, bench_stack

NOTIFICATIONS = 5000
QUICK_NOTIFICATIONS = 2000  # bulk_end_to_end sends whole requests of 1,000
WORKFLOW = "building-alert"
# Novu's Enterprise tier: 6,000 Events tokens a second, on Novu's side and in our budget.
ENTERPRISE_EVENTS_RPS = "6000"
TIER_ENV = {"NOVU_EMULATOR_EVENTS_RPS": ENTERPRISE_EVENTS_RPS, "NOVU_EVENTS_RPS": "6000"}
POLL_SECONDS = 0.05
# Give up waiting for steps when the emulator has executed none for this long.
STALL_SECONDS = 30.0


def sync_bridge(stack: BenchStack, api_url: str) -> list[dict[str, Any]]:
    """Sync the emulator with our bridge, as `npx novu sync` does; the workflows it stored."""
    from shared.settings import get_settings

    response = httpx.post(
        f"{stack.emulator_url}/v1/bridge/sync",
        params={"source": "e2e-steps"},
        json={"bridgeUrl": f"{api_url}/api/novu"},
        headers={"Authorization": f"ApiKey {get_settings().effective_novu_secret_key}"},
        timeout=30.0,
    )
    response.raise_for_status()
    return list(response.json()["data"])


def bridge_stats(stack: BenchStack) -> dict[str, Any]:
    """The emulator's bridge counters."""
    stats = httpx.get(f"{stack.emulator_url}/_emulator/stats", timeout=10.0).json()
    return dict(stats["bridge"])


def steps_done(stats: dict[str, Any]) -> int:
    """Steps finished either way: executed (skipped ones included) or failed for good."""
    return int(stats["executed"]) + int(stats["failedSteps"])


def wait_for_steps(stack: BenchStack, expected: int) -> tuple[float, dict[str, Any]]:
    """Poll until `expected` steps are done; the wall time it was seen, and the counters.
    Stops early when nothing moved for STALL_SECONDS (a failed step ends its run)."""
    last_done, moved_at = -1, time.monotonic()
    while True:
        stats = bridge_stats(stack)
        seen = time.time()
        done = steps_done(stats)
        if done >= expected:
            return seen, stats
        if done != last_done:
            last_done, moved_at = done, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            return seen, stats
        time.sleep(POLL_SECONDS)


def run(quick: bool) -> dict[str, Any]:
    """One run (its own stack); the figures (a), (b), (c) and their ratios."""
    total = QUICK_NOTIFICATIONS if quick else NOTIFICATIONS
    sizes = Sizes.of(quick)
    os.environ.update(TIER_ENV)  # read by every process the stack starts
    results: dict[str, Any] = {"quick": quick}
    with (
        tempfile.TemporaryDirectory(prefix="xnovu-e2e-steps-") as tmp,
        bench_stack(Path(tmp)) as stack,
    ):
        bench = Run(stack, sizes, results)
        bench.step("stack started")
        bench.noop("noop")
        api_url = bench.api_url()
        synced = {
            workflow["triggers"][0]["identifier"]: workflow
            for workflow in sync_bridge(stack, api_url)
        }
        if WORKFLOW not in synced:
            raise RuntimeError(f"the bridge did not declare {WORKFLOW!r}: {sorted(synced)}")
        steps = len(synced[WORKFLOW]["steps"])
        bench.step(f"emulator synced with {api_url}/api/novu: {WORKFLOW} has {steps} steps")
        # The warm-up bulk run of run.py; its steps are executed before the measured run starts.
        bench.start_worker()
        _, before = wait_for_steps(stack, sizes.warmup_notifications * steps)
        bench.step(f"warm-up steps done ({steps_done(before)})")
        with bench.stage("e2e_steps"):
            started = time.time()
            accepted = bulk_end_to_end(bench.loop, stack, api_url, total)
            finished, after = wait_for_steps(stack, steps_done(before) + total * steps)
        executed = steps_done(after) - steps_done(before)
        # As run.py does: the no-op again after the run, and the faster of the two, as other
        # work on the machine can slow either.
        bench.noop("noop_again")
        noop_rate = results["b_noop"]["rate"]
        executed_rate = total / (finished - started) if executed == total * steps else 0.0
        figures = {
            "notifications": total,
            "steps_per_notification": steps,
            "noop_rate": noop_rate,
            "accepted_rate": accepted["rate"],
            "executed_rate": executed_rate,
            "accepted_ratio": accepted["rate"] / noop_rate,
            "executed_ratio": executed_rate / noop_rate,
            "accepted": accepted,
            "executed_seconds": finished - started,
            "steps_executed": executed,
            "complete": executed == total * steps,
            "bridge": {
                name: after[name] - before[name]
                for name in ("calls", "failures", "retries", "executed", "skipped", "delivered")
            }
            | {"failedSteps": after["failedSteps"] - before["failedSteps"]},
            "last_error": after["lastError"],
            "step_concurrency": httpx.get(f"{stack.emulator_url}/_emulator/config").json()[
                "stepConcurrency"
            ],
        }
        results["e2e_steps"] = figures
        bench.step(
            f"accepted {accepted['rate']:,.0f}/s, steps executed {executed_rate:,.0f}"
            " notifications/s"
        )
    return results


def report(results: dict[str, Any]) -> str:
    """The figures and ratios as a short table."""
    figures = results["e2e_steps"]
    return "\n".join(
        [
            f"notifications {figures['notifications']:,}"
            f" x {figures['steps_per_notification']} steps",
            f"(a) Celery no-op drain        {figures['noop_rate']:>9,.0f} tasks/s",
            f"(b) accepted by Novu          {figures['accepted_rate']:>9,.0f} notifications/s"
            f"   (b)/(a) = {figures['accepted_ratio']:.2f}",
            f"(c) all steps executed        {figures['executed_rate']:>9,.0f} notifications/s"
            f"   (c)/(a) = {figures['executed_ratio']:.2f}",
            f"steps executed {figures['steps_executed']:,}, bridge {json.dumps(figures['bridge'])}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="End to end with every step on the bridge.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (QUICK=1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("QUICK", "").lower() in ("1", "true", "yes")
    results = run(quick)
    print(json.dumps(results, indent=2, default=str))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
