"""The Novu emulator's own cost per executed step, against a bridge that costs next to nothing.

    python -m benchmarks.emulator_steps [--notifications N]

Starts a bare bridge (`app` below: a plain ASGI app on one uvicorn process that declares one
two-step workflow and answers every `execute` with the same JSON) and the emulator (its own
process, synced with that bridge, Enterprise token rate), bulk-triggers N notifications of the
size benchmarks/e2e_steps.py sends, and reports the emulator's CPU milliseconds per executed
step and steps/s. The emulator stands in for Novu on the same machine as everything it
measures (benchmarks/e2e_steps.py), so every millisecond it spends is one our stack cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.stack import wait_for
from devtools.devstack import free_port

PY = sys.executable
WORKFLOW = "bench-two-steps"
STEPS = [{"stepId": "in-app", "type": "in_app"}, {"stepId": "email", "type": "email"}]
_DISCOVER = json.dumps(
    {
        "workflows": [
            {
                "workflowId": WORKFLOW,
                "steps": [
                    {**step, "controls": {"schema": {}}, "outputs": {"schema": {}}}
                    for step in STEPS
                ],
                "payload": {"schema": {}},
                "controls": {"schema": {}},
                "tags": [],
            }
        ]
    }
).encode()
_EXECUTE = json.dumps(
    {
        "outputs": {"subject": "Fire alarm", "body": "<p>Leave the building now.</p>"},
        "providers": {},
        "options": {"skip": False},
        "metadata": {"status": "success", "error": False, "duration": 0.1},
    }
).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare bridge: `discover` on GET, the same answer to every POST."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):
            pass
    body = _DISCOVER if scope["method"] == "GET" else _EXECUTE
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def payload(index: int) -> dict[str, Any]:
    """A building-alert sized payload, rendered content included (as our worker sends it)."""
    return {
        "buildingName": f"Tower {index}",
        "severity": "critical",
        "_xnovu": {
            "notificationId": index,
            "rendered": {
                "in_app": {"subject": "Fire alarm", "body": "Leave the building now. " * 4},
                "email": {"subject": "Fire alarm", "body": "<p>Leave the building.</p>" * 8},
            },
        },
    }


def run(notifications: int) -> dict[str, Any]:
    """Start both processes, trigger, wait for every step; the emulator's figures."""
    bridge_port, emulator_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="xnovu-emulator-steps-") as tmp:
        logs = [open(Path(tmp) / name, "wb") for name in ("bridge.log", "emulator.log")]  # noqa: SIM115
        bridge = subprocess.Popen(
            [PY, "-m", "benchmarks.serve", "benchmarks.emulator_steps:app", "--port",
             str(bridge_port), "--workers", "1"],
            stdout=logs[0], stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        emulator = subprocess.Popen(
            [PY, "-m", "novu_emulator", "--port", str(emulator_port), "--events-rps", "1000000"],
            stdout=logs[1], stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            bridge_url = f"http://127.0.0.1:{bridge_port}/api/novu"
            emulator_url = f"http://127.0.0.1:{emulator_port}"
            wait_for(lambda: httpx.get(bridge_url).is_success, 30.0, "the bare bridge")
            wait_for(
                lambda: httpx.get(f"{emulator_url}/_emulator/stats").is_success,
                30.0,
                "the emulator",
            )
            return _measure(emulator, emulator_url, bridge_url, notifications)
        finally:
            for process in (emulator, bridge):
                process.terminate()
                process.wait(10)
            for log in logs:
                log.close()


def _measure(
    emulator: subprocess.Popen[bytes], emulator_url: str, bridge_url: str, notifications: int
) -> dict[str, Any]:
    from shared.settings import get_settings

    headers = {"Authorization": f"ApiKey {get_settings().effective_novu_secret_key}"}
    with httpx.Client(base_url=emulator_url, headers=headers, timeout=60.0) as client:
        client.post(
            "/v1/bridge/sync", params={"source": "bench"}, json={"bridgeUrl": bridge_url}
        ).raise_for_status()
        cpu = psutil.Process(emulator.pid)
        before, started = cpu.cpu_times(), time.perf_counter()
        for first in range(0, notifications, 100):
            events = [
                {"name": WORKFLOW, "to": f"subscriber-{i}", "payload": payload(i),
                 "transactionId": f"bench-{i}"}
                for i in range(first, min(first + 100, notifications))
            ]  # fmt: skip
            client.post("/v1/events/trigger/bulk", json={"events": events}).raise_for_status()
        expected = notifications * len(STEPS)
        while True:
            bridge = client.get("/_emulator/stats").json()["bridge"]
            if bridge["executed"] + bridge["failedSteps"] >= expected:
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        after = cpu.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return {
        "notifications": notifications,
        "steps": expected,
        "failed_steps": bridge["failedSteps"],
        "seconds": round(seconds, 3),
        "steps_per_second": round(expected / seconds),
        "emulator_cpu_seconds": round(used, 3),
        "emulator_cpu_ms_per_step": round(used * 1000 / expected, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=5000)
    args = parser.parse_args()
    print(json.dumps(run(args.notifications), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
