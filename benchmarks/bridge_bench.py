"""The Novu bridge against @novu/framework: signed `execute` of `user-signup`'s email step.

    python benchmarks/bridge_bench.py [--quick] [--rounds N] [--json PATH]

One run starts the stack (embedded PostgreSQL and Redis, benchmarks/stack.py), XNovu's API on
one uvicorn process, and the reference bridge on one process: @novu/framework 2.13.2 on
express (benchmarks/framework_ref, installed with `npm ci` when its node_modules is missing)
serving the same workflow (the same payload schema, read from shared/workflows/static) and the
same email step output. Without Node and npm the reference is a bare Starlette route answering
the same JSON (benchmarks/bare_bridge.py), and the output says so.

Both get the same requests from the same load generator (benchmarks/loadgen.py): compact JSON
bodies as Novu's worker sends them, the content XNovu rendered in `payload._xnovu.rendered`,
each signed (`novu-signature`) with the same secret when the round starts. Each round measures
both, one after the other, the order alternating between rounds, so that a slow spell of the
machine hits both:

- throughput: 16 connections back to back (wrk's model, as issue 11 measured): req/s, p99;
- latency: 1,000 requests a second, open loop: p50, p99.

Prints each round and the medians with the ratio XNovu / reference, and writes them as JSON
(default .xnovu/bench/bridge_bench.json). `run(quick)` is the same for benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import LoadResult, closed_loop, new_event_loop, open_loop  # noqa: E402
from benchmarks.stack import BenchStack, Process, bench_stack, wait_for  # noqa: E402
from devtools.devstack import free_port  # noqa: E402

REFERENCE_DIR = REPO / "benchmarks" / "framework_ref"
WORKFLOW = "user-signup"
STEP = "email"
CONNECTIONS = 16
LATENCY_RATE = 1000.0
# Distinct signed requests per round, sent in turn: distinct payloads like Novu's, signed once
# per round so that the generator spends no HMAC per request (a signature lives 5 minutes).
DISTINCT_REQUESTS = 2000


def execute_body(n: int) -> bytes:
    """Request `n`'s body as Novu's worker sends it: compact JSON of the execute event."""
    payload: dict[str, Any] = {
        "userId": f"u-{n}",
        "email": f"user{n}@example.com",
        "name": f"Ada {n}",
        "_xnovu": {
            "notificationId": n,
            "workflowType": "STATIC",
            "channels": ["email", "in_app"],
            "rendered": {
                "email": {
                    "subject": f"Welcome to XNovu, Ada {n}!",
                    "body": f"<h1>Welcome, Ada {n}!</h1><p>Your account is ready.</p>",
                },
                "in_app": {"subject": "Welcome!", "body": f"Hi Ada {n}"},
            },
        },
    }
    event = {
        "payload": payload,
        "controls": {},
        "state": [],
        "subscriber": {"subscriberId": f"u-{n}"},
        "workflowId": WORKFLOW,
        "stepId": STEP,
        "action": "execute",
    }
    return json.dumps(event, separators=(",", ":")).encode()


def signed_request(port: int, secret: str, body: bytes) -> bytes:
    """The bytes of one signed execute request."""
    stamp = int(time.time() * 1000)
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    head = (
        f"POST /api/novu?action=execute&workflowId={WORKFLOW}&stepId={STEP} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Connection: keep-alive\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"novu-signature: t={stamp},v1={digest}\r\n\r\n"
    )
    return head.encode() + body


def requests_for(url: str, secret: str) -> Callable[[int], bytes]:
    """Request n of a round (signed now), cycling over DISTINCT_REQUESTS bodies."""
    port = int(url.rsplit(":", 1)[1])
    prepared = [signed_request(port, secret, execute_body(n)) for n in range(DISTINCT_REQUESTS)]
    return lambda n: prepared[n % DISTINCT_REQUESTS]


def check_answer(url: str, secret: str) -> dict[str, Any]:
    """One execute through httpx: it must be 200 with the email content, not skipped."""
    raw = requests_for(url, secret)(7)
    head, body = raw.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
    response = httpx.post(
        f"{url}/api/novu",
        params={"action": "execute", "workflowId": WORKFLOW, "stepId": STEP},
        content=body,
        headers={k: headers[k] for k in ("Content-Type", "novu-signature")},
    )
    answer: dict[str, Any] = response.json()
    if response.status_code != 200 or answer.get("options", {}).get("skip"):
        raise SystemExit(f"{url} answered {response.status_code}: {response.text}")
    if answer["outputs"]["subject"] != "Welcome to XNovu, Ada 7!":
        raise SystemExit(f"{url} answered other outputs: {answer['outputs']}")
    return answer


# -- the reference ---------------------------------------------------------------------------


def node_available() -> bool:
    """Node and npm on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install_reference() -> None:
    """`npm ci` in benchmarks/framework_ref unless its node_modules is already there."""
    if not (REFERENCE_DIR / "node_modules" / "@novu" / "framework").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=REFERENCE_DIR, check=True)


def start_reference(stack: BenchStack, secret: str) -> tuple[Process, str, str]:
    """The reference bridge on one process: (process, URL, what it is)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if node_available():
        install_reference()
        schema = stack.root / "user-signup.schema.json"
        schema.write_text(json.dumps(user_signup_schema()))
        process = stack.spawn(
            "framework_ref",
            ["node", str(REFERENCE_DIR / "server.js")],
            env={
                "PORT": str(port),
                "NOVU_SECRET_KEY": secret,
                "NODE_ENV": "production",
                "USER_SIGNUP_SCHEMA": str(schema),
            },
        )
        version = json.loads((REFERENCE_DIR / "package-lock.json").read_text())["packages"][
            "node_modules/@novu/framework"
        ]["version"]
        kind = f"@novu/framework {version} on express, node {_node_version()}"
    else:
        process = stack.spawn(
            "bare_bridge",
            [sys.executable, "-m", "benchmarks.serve", "benchmarks.bare_bridge:app",
             "--port", str(port), "--workers", "1"],
        )  # fmt: skip
        kind = "FALLBACK: no node/npm here, a bare Starlette route answering the same JSON"
    wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, f"reference at {url}")
    return process, url, kind


def user_signup_schema() -> dict[str, Any]:
    """The payload schema XNovu's bridge declares for user-signup (discover)."""
    from api.bridge.catalog import load_catalog

    for workflow in load_catalog().discover()["workflows"]:
        if workflow["workflowId"] == WORKFLOW:
            schema: dict[str, Any] = workflow["payload"]["schema"]
            return schema
    raise SystemExit(f"{WORKFLOW} is not declared by the bridge")


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


# -- measuring -------------------------------------------------------------------------------


def measure(
    loop: asyncio.AbstractEventLoop, url: str, secret: str, seconds: float
) -> dict[str, Any]:
    """Throughput (16 connections back to back) and latency at 1,000 req/s of one bridge."""
    endpoint = f"{url}/api/novu"
    throughput = loop.run_until_complete(
        closed_loop(
            endpoint,
            requests_for(url, secret),
            connections=CONNECTIONS,
            duration=seconds,
            warmup=min(1.0, seconds / 4),
        )
    )
    latency = loop.run_until_complete(
        open_loop(endpoint, requests_for(url, secret), rate=LATENCY_RATE, duration=seconds)
    )
    return {
        "rate": round(throughput.rate, 1),
        "p99_ms": _ms(throughput, 99),
        "at_1000": {
            "rate": round(latency.rate, 1),
            "p50_ms": _ms(latency, 50),
            "p99_ms": _ms(latency, 99),
        },
        "failed": _failed(throughput) + _failed(latency),
    }


def _ms(result: LoadResult, q: float) -> float:
    return round(result.percentile(q) * 1000, 2)


def _failed(result: LoadResult) -> int:
    return result.errors + sum(n for s, n in result.statuses.items() if not 200 <= s < 300)


def run(quick: bool, rounds: int | None = None) -> dict[str, Any]:
    """Measure XNovu's bridge and the reference in alternating rounds; the figures as a dict."""
    seconds = 3.0 if quick else 8.0
    rounds = rounds or (2 if quick else 4)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    with (
        tempfile.TemporaryDirectory(prefix="xnovu-bridge-bench-") as tmp,
        bench_stack(Path(tmp), durable=False) as stack,
    ):
        from shared.settings import get_settings

        secret = get_settings().effective_novu_secret_key
        _, xnovu_url = stack.start_api(workers=1)
        _, reference_url, reference_kind = start_reference(stack, secret)
        targets = {"xnovu": xnovu_url, "reference": reference_url}
        for url in targets.values():
            check_answer(url, secret)
            measure(loop, url, secret, 1.0)  # warm-up: caches, JIT, connections
        measured: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for number in range(rounds):
            order = list(targets) if number % 2 == 0 else list(reversed(targets))
            for name in order:
                result = measure(loop, targets[name], secret, seconds)
                measured[name].append(result)
                print(f"round {number + 1} {name:<9} {_line(result)}", flush=True)
    summary = {name: _median(results) for name, results in measured.items()}
    return {
        "workflow": WORKFLOW,
        "step": STEP,
        "reference": reference_kind,
        "connections": CONNECTIONS,
        "seconds_per_measure": seconds,
        "rounds": measured,
        "median": summary,
        "ratio_rate": round(summary["xnovu"]["rate"] / summary["reference"]["rate"], 3),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rate": statistics.median(r["rate"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "at_1000": {
            key: statistics.median(r["at_1000"][key] for r in results)
            for key in ("rate", "p50_ms", "p99_ms")
        },
        "failed": sum(r["failed"] for r in results),
    }


def _line(result: dict[str, Any]) -> str:
    at = result["at_1000"]
    return (
        f"{result['rate']:>8,.0f} req/s  p99 {result['p99_ms']:6.2f} ms  |  at 1,000/s: "
        f"p50 {at['p50_ms']:5.2f} ms  p99 {at['p99_ms']:6.2f} ms  |  failed {result['failed']}"
    )


def print_summary(results: dict[str, Any]) -> None:
    """The medians of both bridges and their ratio."""
    print("-" * 96)
    print(f"execute {results['workflow']}/{results['step']}, one process each, "
          f"{results['connections']} connections, {len(results['rounds']['xnovu'])} rounds "
          f"({results['cpus']} CPUs)")  # fmt: skip
    print(f"reference: {results['reference']}")
    for name in ("xnovu", "reference"):
        print(f"median {name:<9} {_line(results['median'][name])}")
    print(f"XNovu / reference req/s: {results['ratio_rate']:.2f}x")
    print("-" * 96)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds, fewer of them")
    parser.add_argument("--rounds", type=int, help="rounds (each measures both bridges)")
    parser.add_argument(
        "--json", type=Path, default=REPO / ".xnovu" / "bench" / "bridge_bench.json"
    )
    args = parser.parse_args()
    results = run(args.quick, args.rounds)
    print_summary(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
