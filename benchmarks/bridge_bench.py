"""Load test of the Novu bridge: signed `execute` calls at a fixed rate on one API process.

    python benchmarks/bridge_bench.py                      # embedded PostgreSQL + one uvicorn
    python benchmarks/bridge_bench.py --url http://127.0.0.1:8000 \
        [--workflow KEY --enterprise UUID] [--secret KEY]   # an API that is already running

Without --url it starts embedded PostgreSQL in a temporary directory, migrates it, starts one
`uvicorn api.app:app` process, and seeds an enterprise with a dynamic workflow (email and
in-app templates) through the API. Requests go out open-loop at --rate per second for
--duration seconds, as Novu's worker would send them: each step of a notification whose
content XNovu rendered into `payload._xnovu.rendered`, alternating the `email` step (no prior
state) and the `in_app` step (email in `state`), each body compact JSON signed with a fresh
timestamp. Against --url without --workflow, the static `user-signup` workflow is used.

Prints a table (achieved rate, p50/p90/p99/max latency, errors) and writes it as JSON
(--json, default .xnovu/bench/bridge_bench.json). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass
class Target:
    url: str
    workflow: str
    enterprise: str | None
    secret: str


@dataclass
class Report:
    target_rate: float
    duration_s: float
    sent: int
    ok: int
    errors: int
    achieved_rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    max_send_lag_ms: float
    statuses: dict[str, int]
    server_cpu_percent: float | None = None
    # The machine's 1-minute load average before and after: other work on it skews latencies.
    load_before: float = 0.0
    load_after: float = 0.0


def signature(secret: str, body: bytes) -> str:
    stamp = int(time.time() * 1000)
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def execute_body(target: Target, n: int) -> tuple[str, bytes]:
    """The step and compact JSON body of request `n`, as Novu's worker would send it."""
    step = "email" if n % 2 == 0 else "in_app"
    payload: dict[str, Any] = {
        "buildingId": f"B-{n}",
        "message": f"Alarm test {n}",
        "_xnovu": {
            "notificationId": n,
            "workflowType": "DYNAMIC" if target.enterprise else "STATIC",
            "channels": ["email", "in_app"],
            "rendered": {
                "email": {"subject": f"[LOW] B-{n}", "body": f"<p>Alarm test {n}</p>"},
                "in_app": {"subject": f"Building B-{n}", "body": f"Alarm test {n}"},
            },
        },
    }
    if target.enterprise:
        payload["_xnovu"]["enterpriseId"] = target.enterprise
    else:
        payload.update({"userId": f"u-{n}", "email": f"u{n}@example.com", "name": "Ada"})
    state = (
        []
        if step == "email"
        else [{"stepId": "email", "outputs": {}, "state": {"status": "completed"}}]
    )
    body = {
        "payload": payload,
        "controls": {},
        "state": state,
        "subscriber": {"subscriberId": f"sub-{n}"},
        "workflowId": target.workflow,
        "stepId": step,
        "action": "execute",
    }
    return step, json.dumps(body, separators=(",", ":")).encode()


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams.

    An httpx request costs the client about as much CPU as the bridge spends answering it, so
    on a small or busy machine the client, not the server, would set the latencies measured.
    Requests are written as prepared bytes and answers read by Content-Length (uvicorn always
    sends it for these JSON answers), over at most `limit` connections.
    """

    def __init__(self, url: str, limit: int = 128) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(limit)

    async def send(self, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        """Send one prepared request; its status and body. A kept-alive connection the server
        closed meanwhile (uvicorn drops idle ones after 5 s) is replaced once, as browsers do."""
        async with self._slots:
            if self._idle:
                connection = self._idle.pop()
                try:
                    return await self._exchange(connection, raw, timeout)
                except (OSError, asyncio.IncompleteReadError):
                    pass
            connection = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(connection, raw, timeout)

    async def _exchange(
        self,
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        raw: bytes,
        timeout: float,
    ) -> tuple[int, bytes]:
        reader, writer = connection
        try:
            writer.write(raw)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await asyncio.wait_for(reader.readexactly(length), timeout)
        except BaseException:
            writer.close()
            raise
        self._idle.append(connection)
        return status, body

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def prepared_request(target: Target, n: int) -> bytes:
    """Request `n` as the bytes sent: signed now, over exactly the body that follows."""
    step, body = execute_body(target, n)
    query = urlencode({"action": "execute", "workflowId": target.workflow, "stepId": step})
    head = (
        f"POST /api/novu?{query} HTTP/1.1\r\n"
        "Host: bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"novu-signature: {signature(target.secret, body)}\r\n\r\n"
    )
    return head.encode() + body


async def _one(client: RawClient, target: Target, n: int, results: list[tuple[float, int]]) -> None:
    raw = prepared_request(target, n)
    started = time.perf_counter()
    try:
        status, body = await client.send(raw)
        if status == 200 and json.loads(body)["options"]["skip"]:
            status = -2  # answered, but skipped: the seeded workflow is not what we expect
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        status = -1
    results.append(((time.perf_counter() - started) * 1000, status))


async def run_load(target: Target, rate: float, duration: float) -> Report:
    """Send `rate` requests per second for `duration` seconds (open loop) and measure them."""
    total = int(rate * duration)
    results: list[tuple[float, int]] = []
    client = RawClient(target.url)
    try:
        warm: list[tuple[float, int]] = []
        await asyncio.gather(*(_one(client, target, n, warm) for n in range(20)))
        bad = [status for _, status in warm if status != 200]
        if bad:
            raise SystemExit(f"warm-up failed with statuses {bad}: is the target seeded?")
        tasks = []
        lag = 0.0
        start = time.perf_counter()
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = max(lag, time.perf_counter() - due)
            tasks.append(asyncio.create_task(_one(client, target, n, results)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    finally:
        await client.close()
    latencies = sorted(ms for ms, status in results if status == 200)
    statuses: dict[str, int] = {}
    for _, status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    return Report(
        target_rate=rate,
        duration_s=round(elapsed, 2),
        sent=total,
        ok=len(latencies),
        errors=total - len(latencies),
        achieved_rate=round(len(latencies) / elapsed, 1),
        p50_ms=round(pct(50), 2),
        p90_ms=round(pct(90), 2),
        p99_ms=round(pct(99), 2),
        max_ms=round(latencies[-1], 2) if latencies else float("nan"),
        mean_ms=round(statistics.fmean(latencies), 2) if latencies else float("nan"),
        max_send_lag_ms=round(lag * 1000, 2),
        statuses=statuses,
    )


# -- the embedded stack ---------------------------------------------------------------------


@contextmanager
def embedded_api(workers: int) -> Iterator[tuple[str, dict[str, str], int]]:
    """Embedded PostgreSQL (migrated) and one uvicorn API process; yields its URL, env, pid."""
    from devtools.devstack import EmbeddedPostgres, free_port

    with tempfile.TemporaryDirectory(prefix="xnovu-bench-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg", free_port(), fast=True)
        database_url = postgres.start()
        env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
        env.pop("NOVU_SECRET_KEY", None)
        proc: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from shared.migrate import upgrade; upgrade({database_url!r})",
                ],
                cwd=REPO,
                env=env,
                check=True,
            )
            port = free_port()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.app:app",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=REPO,
                env=env,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the API did not start")
                time.sleep(0.2)
            yield url, env, proc.pid
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(15)
            postgres.stop()


def seed(url: str, env: dict[str, str]) -> tuple[str, str]:
    """An enterprise with a published dynamic workflow (email + in-app); (key, enterprise)."""
    os.environ.update({"DATABASE_URL": env["DATABASE_URL"]})
    from shared.apikeys import create_api_key
    from shared.db.enums import ApiKeyScope
    from shared.db.session import transaction
    from shared.settings import get_settings

    get_settings.cache_clear()

    enterprise = uuid.uuid4()
    with transaction() as session:
        _, key = create_api_key(session, enterprise_id=enterprise, scope=ApiKeyScope.ENTERPRISE)
    auth = {"Authorization": f"Bearer {key}"}
    templates = {}
    for channel, subject, body in (
        (
            "EMAIL",
            "[{{ priority | default('low') | upper }}] {{ buildingId }}",
            "<p>{{ message }}</p>",
        ),
        ("IN_APP", "Building {{ buildingId }}", "{{ message }}"),
    ):
        response = httpx.post(
            f"{url}/api/templates",
            json={
                "template_key": f"bench-{channel.lower()}",
                "name": channel,
                "channel_type": channel,
                "subject_template": subject,
                "body_template": body,
            },
            headers=auth,
        )
        response.raise_for_status()
        templates[channel] = response.json()["id"]
    workflow = httpx.post(
        f"{url}/api/workflows",
        json={
            "workflow_key": "bench-alert",
            "name": "Bench alert",
            "workflow_type": "DYNAMIC",
            "default_channels": ["EMAIL", "IN_APP"],
            "template_overrides": {
                "emailTemplateId": templates["EMAIL"],
                "inAppTemplateId": templates["IN_APP"],
            },
            "payload_schema": {
                "type": "object",
                "properties": {"buildingId": {"type": "string"}, "message": {"type": "string"}},
                "required": ["buildingId", "message"],
            },
        },
        headers=auth,
    )
    workflow.raise_for_status()
    httpx.post(
        f"{url}/api/workflows/{workflow.json()['id']}/publish", headers=auth
    ).raise_for_status()
    return "bench-alert", str(enterprise)


def print_table(report: Report, target: Target) -> None:
    rows = [
        ("target", f"{target.url}/api/novu  workflow={target.workflow}"),
        ("target rate", f"{report.target_rate:.0f} req/s for {report.duration_s:.1f} s"),
        (
            "achieved rate",
            f"{report.achieved_rate:.1f} req/s ({report.ok} ok / {report.sent} sent)",
        ),
        ("errors", f"{report.errors}  statuses {report.statuses}"),
        ("latency p50", f"{report.p50_ms:.2f} ms"),
        ("latency p90", f"{report.p90_ms:.2f} ms"),
        ("latency p99", f"{report.p99_ms:.2f} ms"),
        ("latency max", f"{report.max_ms:.2f} ms  (mean {report.mean_ms:.2f} ms)"),
        ("max send lag", f"{report.max_send_lag_ms:.2f} ms"),
    ]
    if report.server_cpu_percent is not None:
        rows.append(("API CPU", f"{report.server_cpu_percent:.1f} % of one core"))
    rows.append(
        (
            "load average",
            f"{report.load_before:.2f} before, {report.load_after:.2f} after "
            f"({os.cpu_count()} CPUs)",
        )
    )
    width = max(len(name) for name, _ in rows)
    print("-" * 72)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * 72)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an API already running (default: start one)")
    parser.add_argument("--workflow", help="workflow key to execute (with --url)")
    parser.add_argument("--enterprise", help="enterprise of --workflow (dynamic workflows)")
    parser.add_argument("--secret", help="Novu secret key (default: the configured one)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn processes (no --url)")
    parser.add_argument(
        "--json", type=Path, default=REPO / ".xnovu" / "bench" / "bridge_bench.json"
    )
    args = parser.parse_args()

    from shared.settings import get_settings

    secret = args.secret or get_settings().effective_novu_secret_key

    def bench(url: str, workflow: str, enterprise: str | None, pid: int | None = None) -> None:
        target = Target(url=url, workflow=workflow, enterprise=enterprise, secret=secret)
        server = _process_tree(pid) if pid is not None else None
        before = _cpu_seconds(server)
        load_before = os.getloadavg()[0]
        report = asyncio.run(run_load(target, args.rate, args.duration))
        report.load_before, report.load_after = load_before, os.getloadavg()[0]
        if server is not None:
            used = _cpu_seconds(server) - before
            report.server_cpu_percent = round(100 * used / report.duration_s, 1)
        print_table(report, target)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"target": asdict(target) | {"secret": "***"}, "workers": args.workers}
        args.json.write_text(json.dumps(document | asdict(report), indent=2) + "\n")
        print(f"written to {args.json}")

    if args.url:
        bench(args.url.rstrip("/"), args.workflow or "user-signup", args.enterprise)
        return
    with embedded_api(args.workers) as (url, env, pid):
        workflow, enterprise = seed(url, env)
        bench(url, workflow, enterprise, pid)


def _process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu_seconds(processes: list[psutil.Process] | None) -> float:
    """User + system CPU time of the API processes so far."""
    if not processes:
        return 0.0
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in processes))


if __name__ == "__main__":
    main()
