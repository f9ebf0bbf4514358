"""`make bench`: XNovu's throughput and latency against baselines measured in the same run.

    python -m benchmarks.run            # the full run (about 4 minutes)
    QUICK=1 python -m benchmarks.run    # smaller sizes (under a minute)

Starts its own stack in a temporary directory (embedded PostgreSQL with fsync on, as `make
run` has it, embedded Redis, the Novu emulator, `uvicorn --workers 2`, a prefork Celery
worker of concurrency 2 and beat) and measures, each against its baseline:

(a) POST /api/trigger at 32 connections vs a bare FastAPI JSON POST served the same way;
(b) PENDING → SENT notifications/s for bulk-triggered notifications vs the drain rate of a
    Celery no-op task on the same broker and configuration;
(c) trigger → SENT latency at a steady 100 triggers/s (single triggers);
(d) (b) again with 200 ms of Novu latency;
(e) peak RSS of the API and worker processes;
(f) GET /api/notifications?status=FAILED, lookups (by transactionId, recipient, tag and
    created-at range) and cancel latency with 10,000 and 1,000,000 rows;
(g) the bridge's `execute` vs @novu/framework 2.13.2 serving the same step, one process each
    (benchmarks/bridge_bench.py; a bare Starlette route when Node is missing), on a stack of
    its own;
(h) 5,000 bulk-triggered notifications with Novu (the emulator) executing every step on our
    bridge, vs the Celery no-op drain rate (benchmarks/e2e_steps.py), on a stack of its own.
(i) the rules scheduler's tick with 10,000 active rules, 1,000 due at once, vs 100 rules
    (benchmarks/rules_bench.py).

Novu tokens per notification are reported for (b), (c) and (d) (target at most 1.0).

Prints a table and writes benchmarks/results.json. The load generator is benchmarks/loadgen.py
(its own ceiling is measured against a canned-response server first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import psutil

from benchmarks import report
from benchmarks.loadgen import (
    LoadResult,
    _connect,
    build_request,
    canned_server,
    closed_loop,
    new_event_loop,
    open_loop,
    percentile,
)
from benchmarks.stack import REPO, BenchStack, bench_stack, wait_for
from devtools.devstack import free_port
from shared.settings import DEV_API_KEY, DEV_ENTERPRISE_ID

T = TypeVar("T")
RESULTS = REPO / "benchmarks" / "results.json"
AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}
ALERT = {
    "buildingId": "building-789",
    "message": "HVAC system failure detected",
    "priority": "high",
}
API_WORKERS = 2
WORKER_CONCURRENCY = 2
CONNECTIONS = 32
# Bulk requests in flight while ingesting (b) and (d): two per API process.
INGEST_CONNECTIONS = 2 * API_WORKERS


@dataclass(frozen=True)
class Sizes:
    quick: bool
    load_seconds: float
    warmup_seconds: float
    noop_tasks: int
    e2e_notifications: int
    steady_seconds: float
    small_table: int
    large_table: int
    table_requests: int
    warmup_notifications: int
    # (a) runs in rounds, each a turn of the bare app and one of the trigger (see Run.a).
    a_rounds: int
    a_turn_seconds: float

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(True, 2.0, 0.5, 1500, 4000, 3.0, 10_000, 100_000, 60, 1000, 1, 2.0)
        return cls(False, 10.0, 2.0, 5000, 20_000, 10.0, 10_000, 1_000_000, 200, 2000, 5, 5.0)


def run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(coroutine)


# -- (a) request throughput ----------------------------------------------------------------


def generator_ceiling(loop: asyncio.AbstractEventLoop, sizes: Sizes) -> LoadResult:
    """The load generator against a server that answers without parsing: its own limit."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=canned_server, args=(port,))
    server.start()
    try:
        url = f"http://127.0.0.1:{port}/bare"
        wait_for(lambda: _port_open(port), 10, "the canned server")
        request = build_request(url, body={"workflowId": "building-alert", "payload": ALERT})
        return run(
            loop,
            closed_loop(
                url,
                request,
                connections=CONNECTIONS,
                duration=sizes.load_seconds,
                warmup=sizes.warmup_seconds,
            ),
        )
    finally:
        server.terminate()
        server.join(5)


def _port_open(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), 0.5):
        return True


def request_throughput(
    loop: asyncio.AbstractEventLoop,
    url: str,
    body: Any,
    sizes: Sizes,
    headers: dict[str, str],
    seconds: float | None = None,
) -> LoadResult:
    request = build_request(url, body=body, headers=headers)
    return run(
        loop,
        closed_loop(
            url,
            request,
            connections=CONNECTIONS,
            duration=sizes.load_seconds if seconds is None else seconds,
            warmup=sizes.warmup_seconds,
        ),
    )


# -- (b), (d) end to end ---------------------------------------------------------------------


def noop_drain_rate(stack: BenchStack, count: int) -> dict[str, Any]:
    """Fill the no-op queue with the worker stopped, start it, time the queue's drain."""
    import redis

    from benchmarks.noop_app import NOOP_QUEUE, NOOP_TASK
    from benchmarks.noop_app import app as noop_app

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    # The queue holds this drain's messages only. Once, in a full run, the second drain found
    # 5,001: a message left by the first (likely one its worker had taken from the list but
    # not yet recorded as unacked when the loop below saw both empty, given back at its stop).
    client.delete(NOOP_QUEUE)
    for _ in range(count):
        noop_app.send_task(NOOP_TASK, queue=NOOP_QUEUE)
    assert client.llen(NOOP_QUEUE) == count, client.llen(NOOP_QUEUE)
    worker = stack.start_worker(
        app="benchmarks.noop_app", queues=NOOP_QUEUE, concurrency=WORKER_CONCURRENCY, name="noop"
    )
    try:
        while client.llen(NOOP_QUEUE) >= count:
            time.sleep(0.002)
        started = time.perf_counter()
        while client.llen(NOOP_QUEUE) > 0 or client.hlen("unacked") > 0:
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = sum(_cpu_seconds(member) for member in _tree(worker.pid))
    finally:
        stack.stop_process(worker)
    # The first message was taken before `started`: count the rest.
    return {
        "tasks": count,
        "seconds": elapsed,
        "rate": (count - 1) / elapsed,
        "worker_cpu_seconds": round(cpu, 2),  # start-up included
    }


def trigger_tokens(stats: dict[str, Any]) -> int:
    """Novu Events tokens the emulator charged to triggers and bulk triggers, from its stats
    (a sync's tokens come from another category)."""
    by_endpoint = stats["tokens"]["byEndpoint"]
    return sum(by_endpoint.get(name, {}).get("spent", 0) for name in ("trigger", "bulk-trigger"))


def bulk_end_to_end(
    loop: asyncio.AbstractEventLoop, stack: BenchStack, api_url: str, total: int
) -> dict[str, Any]:
    """Bulk-trigger `total` notifications (1,000 a request, 4 requests at a time) and time
    them from the first request to the last one SENT (its processed_at)."""
    from sqlalchemy import text

    from shared.db.session import transaction

    stats_before = httpx.get(f"{stack.emulator_url}/_emulator/stats").json()
    per_request = 1000
    bodies = [
        {
            "events": [
                {"workflowId": "building-alert", "payload": {**ALERT, "buildingId": f"b-{n}-{i}"}}
                for i in range(per_request)
            ]
        }
        for n in range(total // per_request)
    ]
    url = f"{api_url}/api/trigger/bulk"
    requests = [build_request(url, body=body, headers=AUTH) for body in bodies]
    with transaction() as session:
        first_id = session.execute(
            text("SELECT coalesce(max(id), 0) + 1 FROM notify.ent_notification")
        ).scalar_one()
    started_wall = time.time()
    started = time.perf_counter()

    async def ingest() -> tuple[float, int]:
        queue = list(requests)
        accepted = 0

        async def sender() -> None:
            nonlocal accepted
            connection = await _connect("127.0.0.1", int(api_url.rsplit(":", 1)[1]))
            while queue:
                status, body = await connection.request(queue.pop())
                assert status == 202, (status, body[:500])
                accepted += json.loads(body)["accepted"]
            assert connection.transport is not None
            connection.transport.close()

        await asyncio.gather(*(sender() for _ in range(INGEST_CONNECTIONS)))
        return time.perf_counter() - started, accepted

    ingest_seconds, accepted = run(loop, ingest())
    assert accepted == total, accepted
    deadline = time.monotonic() + 600
    while True:
        # Only the unfinished rows, through the (enterprise, status, id) index: cheap to poll.
        with transaction() as session:
            unfinished = session.execute(
                text(
                    "SELECT count(*) FROM notify.ent_notification WHERE enterprise_id = :e"
                    " AND notification_status IN ('PENDING', 'PROCESSING') AND id >= :first"
                ),
                {"e": DEV_ENTERPRISE_ID, "first": first_id},
            ).scalar_one()
        if unfinished == 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{unfinished} of {total} notifications still unfinished")
        time.sleep(0.2)
    with transaction() as session:
        last = session.execute(
            text(
                "SELECT max(processed_at), max(attempts),"
                " count(*) FILTER (WHERE notification_status = 'SENT'),"
                " count(*) FILTER (WHERE notification_status = 'FAILED')"
                " FROM notify.ent_notification WHERE id >= :first"
            ),
            {"first": first_id},
        ).one()
    done, failed = last[2], last[3]
    elapsed = last[0].timestamp() - started_wall
    stats = httpx.get(f"{stack.emulator_url}/_emulator/stats").json()
    return {
        "notifications": total,
        "sent": done,
        "failed": failed,
        "max_attempts": last[1],
        "seconds": elapsed,
        "rate": total / elapsed,
        "ingest_seconds": ingest_seconds,
        "ingest_rate": total / ingest_seconds,
        "novu_accepted": stats["accepted"] - stats_before["accepted"],
        "novu_requests": stats["requests"] - stats_before["requests"],
        "novu_duplicates": stats["duplicates"] - stats_before["duplicates"],
        # What the notifications cost in Novu's rate limit (acceptance: at most 1 each).
        "novu_tokens_per_notification": (trigger_tokens(stats) - trigger_tokens(stats_before))
        / total,
    }


# -- (c) latency at a steady rate -----------------------------------------------------------


def steady_latency(
    loop: asyncio.AbstractEventLoop,
    api_url: str,
    emulator_url: str,
    seconds: float,
    rate: float = 100.0,
) -> dict[str, Any]:
    """Single triggers at `rate`/s; latency from sending to processed_at (SENT)."""
    from sqlalchemy import text

    from shared.db.session import transaction

    url = f"{api_url}/api/trigger"
    tokens_before = trigger_tokens(httpx.get(f"{emulator_url}/_emulator/stats").json())

    def request(n: int) -> bytes:
        body = {"workflowId": "building-alert", "payload": {**ALERT, "buildingId": f"s-{n}"}}
        return build_request(url, body=body, headers=AUTH)

    result: LoadResult = run(
        loop, open_loop(url, request, rate=rate, duration=seconds, keep_bodies=True)
    )
    sent_at = {json.loads(body)["notificationId"]: wall for wall, body in result.bodies}
    ids = list(sent_at)
    deadline = time.monotonic() + 60
    while True:
        with transaction() as session:
            rows = session.execute(
                text(
                    "SELECT id, notification_status, processed_at FROM notify.ent_notification"
                    " WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            ).all()
        if all(row.notification_status in ("SENT", "FAILED") for row in rows):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("steady-rate notifications did not all reach SENT")
        time.sleep(0.2)
    latencies = [row.processed_at.timestamp() - sent_at[row.id] for row in rows]
    tokens = trigger_tokens(httpx.get(f"{emulator_url}/_emulator/stats").json()) - tokens_before
    return {
        "rate": rate,
        "seconds": seconds,
        "triggers": len(ids),
        "http_errors": result.errors + sum(n for s, n in result.statuses.items() if s >= 300),
        "sent": sum(1 for row in rows if row.notification_status == "SENT"),
        "http_p50_ms": result.percentile(50) * 1000,
        "http_p99_ms": result.percentile(99) * 1000,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "novu_tokens_per_notification": tokens / len(ids),
    }


# -- (e) memory ------------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return []


def peak_rss_mb(pid: int) -> list[dict[str, Any]]:
    """Peak RSS (VmHWM on Linux, current RSS elsewhere) of a process and its children."""
    peaks = []
    for process in _tree(pid):
        try:
            name = " ".join(process.cmdline()[1:4]) or process.name()
            peak = _vm_hwm(process.pid)
            if peak is None:
                peak = process.memory_info().rss
            peaks.append({"pid": process.pid, "name": name, "peak_rss_mb": peak / 2**20})
        except psutil.Error:
            continue
    return peaks


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# -- CPU accounting --------------------------------------------------------------------------


def cpu_by_component(stack: BenchStack) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack (process trees)."""
    roots: dict[str, list[int]] = {}
    for process in stack.processes:
        roots.setdefault(process.name, []).append(process.pid)
    for name, server in (("postgres", stack.postgres), ("redis", stack.redis)):
        pid = _server_pid(server)
        if pid is not None:
            roots[name] = [pid]
    roots["bench"] = [os.getpid()]
    totals: dict[str, float] = {}
    machine = psutil.cpu_times()
    processes = machine.user + machine.system + getattr(machine, "nice", 0.0)
    for name, pids in roots.items():
        total = 0.0
        for pid in pids:
            members = _tree(pid) if name != "bench" else [psutil.Process(pid)]
            total += sum(_cpu_seconds(member) for member in members)
        totals[name] = total
    # Whatever else ran on the machine meanwhile (other users' jobs skew every figure), the
    # kernel's interrupt work (loopback networking), and time the hypervisor gave elsewhere.
    totals["other"] = processes - sum(totals.values())
    totals["irq"] = getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0)
    totals["steal"] = getattr(machine, "steal", 0.0)
    return totals


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of a live process and of the children it reaped (PostgreSQL backends and
    autovacuum workers that came and went), which would otherwise count as `other`."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


def _server_pid(server: Any) -> int | None:
    if server is None:
        return None
    for attribute in ("_postmaster", "_server"):
        getter = getattr(server, attribute, None)
        if getter is not None:
            process = getter()
            return int(process.pid) if process is not None else None
    return None


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-part CPU seconds between two snapshots. Approximate: a process that exited in
    between (a PostgreSQL backend) takes its time with it, so a part may show less than it
    used (never below zero here) and `other` more."""
    return {name: round(max(0.0, after[name] - before.get(name, 0.0)), 2) for name in after}


# -- (f) list and cancel with a large table --------------------------------------------------


# The fill's rows: row g was created FILL_START_SECONDS + g seconds after the run's base time,
# names one of LOOKUP_KEYS subscribers and carries one of as many tags, so that every lookup
# answers a full page at either table size and the created-at window holds the same rows.
LOOKUP_KEYS = 100
FILL_START_SECONDS = -14 * 86400  # two weeks ago: inside any retention, ordered by g
RANGE_WINDOW = (4000, 4600)  # rows g of the created-at lookup, at both sizes


def fill_notifications(database_url: str, upto: int, base: dt.datetime) -> None:
    """Grow ent_notification to `upto` rows of the demo enterprise: 95 % SENT, 1 % FAILED and
    4 % PENDING scheduled a month ahead (nothing for the worker to do)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        have = conn.execute("SELECT count(*) FROM notify.ent_notification").fetchone()
        start = int(have[0]) if have else 0
        step = 200_000
        for low in range(start, upto, step):
            high = min(upto, low + step) - 1
            conn.execute(
                """
                INSERT INTO notify.ent_notification (
                    enterprise_id, name, workflow_key, notification_status, payload,
                    recipients, transaction_id, scheduled_for, processed_at, attempts,
                    error_details, created_by, tags, created_at
                )
                SELECT %(e)s, 'building-alert', 'building-alert',
                    CAST(CASE WHEN g %% 100 = 0 THEN 'FAILED'
                              WHEN g %% 100 <= 4 THEN 'PENDING' ELSE 'SENT'
                         END AS notify.notification_status),
                    jsonb_build_object('buildingId', 'b-' || g, 'message',
                                       'HVAC system failure detected', 'priority', 'high'),
                    ARRAY['subscriber-' || (g %% %(keys)s)], 'xn-bench-' || g || '-' || %(salt)s,
                    CASE WHEN g %% 100 BETWEEN 1 AND 4 THEN now() + interval '30 days' END,
                    CASE WHEN g %% 100 NOT BETWEEN 1 AND 4 THEN now() END,
                    CASE WHEN g %% 100 BETWEEN 1 AND 4 THEN 0 ELSE 1 END,
                    CASE WHEN g %% 100 = 0 THEN
                        jsonb_build_object('code', 'novu_rejected', 'statusCode', 422) END,
                    'bench', ARRAY['zone-' || (g %% %(keys)s)],
                    %(start)s + g * interval '1 second'
                FROM generate_series(CAST(%(low)s AS bigint), CAST(%(high)s AS bigint)) AS g
                """,
                {
                    "e": DEV_ENTERPRISE_ID,
                    "low": low,
                    "high": high,
                    "salt": random.random(),
                    "keys": LOOKUP_KEYS,
                    "start": base + dt.timedelta(seconds=FILL_START_SECONDS),
                },
            )
        # The lookup keys too (migration 0010's triggers filled them): the planner needs their
        # statistics as much as the table's.
        conn.execute("VACUUM ANALYZE notify.ent_notification, notify.ent_notification_key")


def demo_values(database_url: str, column: str, condition: str) -> list[Any]:
    """One column of the demo enterprise's notifications that meet `condition` (SQL)."""
    import psycopg

    query = f"SELECT {column} FROM notify.ent_notification WHERE enterprise_id = %s AND "
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(query + condition.replace("%", "%%"), (DEV_ENTERPRISE_ID,))
        return [row[0] for row in rows.fetchall()]


def lookup_queries(
    database_url: str, count: int, base: dt.datetime
) -> dict[str, list[tuple[str, int]]]:
    """`count` queries of each lookup with the items each must answer: transactionIds of
    random rows (1), random subscribers and tags (a full page of 50), and one created-at
    window (the same 600 rows at both sizes; a full page)."""
    transactions = random.sample(demo_values(database_url, "transaction_id", "id % 7 = 0"), count)
    start = base + dt.timedelta(seconds=FILL_START_SECONDS)
    after, before = (start + dt.timedelta(seconds=second) for second in RANGE_WINDOW)
    window = urlencode({"createdAfter": after.isoformat(), "createdBefore": before.isoformat()})
    keys = [random.randrange(LOOKUP_KEYS) for _ in range(count)]
    return {
        "transactionId": [(f"transactionId={t}", 1) for t in transactions],
        "recipient": [(f"recipient=subscriber-{k}&limit=50", 50) for k in keys],
        "tag": [(f"tag=zone-{k}&limit=50", 50) for k in keys],
        "range": [(f"{window}&limit=50", 50)] * count,
    }


def table_latency(
    loop: asyncio.AbstractEventLoop,
    api_url: str,
    database_url: str,
    requests: int,
    base: dt.datetime,
) -> dict[str, Any]:
    """Sequential GET ?status=FAILED, lookups and cancels of distinct PENDING rows, one
    connection."""
    pending = demo_values(database_url, "id", "notification_status = 'PENDING'")
    picked = random.sample(pending, requests + 20)
    list_url = f"{api_url}/api/notifications?status=FAILED&limit=50"
    list_request = build_request(list_url, method="GET", headers=AUTH)
    lookups = lookup_queries(database_url, requests + 20, base)

    async def measure() -> tuple[list[float], list[float], dict[str, list[float]]]:
        connection = await _connect("127.0.0.1", int(api_url.rsplit(":", 1)[1]))
        listed: list[float] = []
        cancelled: list[float] = []
        looked_up: dict[str, list[float]] = {name: [] for name in lookups}
        for n in range(requests + 20):
            started = time.perf_counter()
            status, body = await connection.request(list_request)
            assert status == 200 and len(json.loads(body)["items"]) == 50, (status, body[:300])
            if n >= 20:
                listed.append(time.perf_counter() - started)
        for name, queries in lookups.items():
            for n, (query, items) in enumerate(queries):
                url = f"{api_url}/api/notifications?{query}"
                request = build_request(url, method="GET", headers=AUTH)
                started = time.perf_counter()
                status, body = await connection.request(request)
                found = len(json.loads(body)["items"]) if status == 200 else -1
                assert found == items, (name, query, status, body[:300])
                if n >= 20:
                    looked_up[name].append(time.perf_counter() - started)
        for n, notification_id in enumerate(picked):
            cancel = build_request(
                f"{api_url}/api/notifications/{notification_id}/cancel", headers=AUTH
            )
            started = time.perf_counter()
            status, body = await connection.request(cancel)
            assert status == 200, (status, body[:300])
            if n >= 20:
                cancelled.append(time.perf_counter() - started)
        assert connection.transport is not None
        connection.transport.close()
        return listed, cancelled, looked_up

    listed, cancelled, looked_up = run(loop, measure())
    figures = {
        "list_p50_ms": percentile(listed, 50) * 1000,
        "list_p99_ms": percentile(listed, 99) * 1000,
        "cancel_p50_ms": percentile(cancelled, 50) * 1000,
        "cancel_p99_ms": percentile(cancelled, 99) * 1000,
        "requests": requests,
    }
    for name, latencies in looked_up.items():
        figures[f"{name}_p50_ms"] = percentile(latencies, 50) * 1000
        figures[f"{name}_p99_ms"] = percentile(latencies, 99) * 1000
    return figures


# -- the run ---------------------------------------------------------------------------------


def truncate_notifications() -> None:
    from sqlalchemy import text

    from shared.db.session import transaction

    with transaction() as session:
        # TRUNCATE fires no DELETE trigger: the lookup keys (migration 0010) go explicitly, and
        # tables with a foreign key to the notifications (Novu's delivery events) by CASCADE.
        session.execute(
            text("TRUNCATE notify.ent_notification, notify.ent_notification_key CASCADE")
        )


def purge_queue(stack: BenchStack, queue: str = "xnovu.deliver") -> None:
    import redis

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    for key in client.scan_iter(match=f"{queue}*"):
        client.delete(key)


STAGES = ("a", "b", "c", "d", "e", "f", "g", "h", "i")
# Stages with a stack of their own, run after the shared one is stopped: (g) the bridge's
# execute against @novu/framework (benchmarks/bridge_bench.py), (h) end to end with Novu
# executing every step on the bridge (benchmarks/e2e_steps.py).
OWN_STACK_STAGES = ("g", "h")


class Run:
    """One benchmark run: the stack, the results so far, and each stage as a method."""

    def __init__(self, stack: BenchStack, sizes: Sizes, results: dict[str, Any]) -> None:
        self.stack = stack
        self.sizes = sizes
        self.results = results
        self.cpu: dict[str, dict[str, float]] = results.setdefault("cpu_seconds", {})
        self.loop = new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.step = report.Progress(time.perf_counter())
        self.api: tuple[Any, str] | None = None
        self.worker: Any = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Records the CPU seconds each part of the machine used while the stage ran (and its
        wall time, as `seconds`): `other` shows how much unrelated work competed with it."""
        before = cpu_by_component(self.stack)
        started = time.perf_counter()
        yield
        delta = cpu_delta(before, cpu_by_component(self.stack))
        delta["seconds"] = round(time.perf_counter() - started, 1)
        # A stage measured in turns (a's rounds) adds up over them.
        earlier = self.cpu.get(name, {})
        self.cpu[name] = {key: round(earlier.get(key, 0.0) + delta[key], 2) for key in delta}

    def api_url(self) -> str:
        if self.api is None:
            self.api = self.stack.start_api(workers=API_WORKERS)
        return self.api[1]

    def start_worker(self) -> None:
        """The worker and beat, warmed up (workflows, templates, connections) by a first small
        bulk run that is not measured, so that no stage pays for start-up."""
        if self.worker is None:
            # Novu runs only the workflows it knows. The demo's is registered as one made in
            # Novu's dashboard (no sync, no bridge to execute): these stages measure delivery
            # up to Novu's acceptance; benchmarks/e2e_steps.py measures step execution.
            httpx.put(
                f"{self.stack.emulator_url}/_emulator/workflows/building-alert", json={}
            ).raise_for_status()
            self.worker = self.stack.start_worker(concurrency=WORKER_CONCURRENCY)
            self.stack.start_beat()
            bulk_end_to_end(self.loop, self.stack, self.api_url(), self.sizes.warmup_notifications)
            self.step("worker warmed up")

    def a(self) -> None:
        """The trigger against bare FastAPI, in rounds that alternate which goes first: a slow
        spell of a shared machine then falls on both, and the ratio is the median round's."""
        ceiling = generator_ceiling(self.loop, self.sizes)
        self.results["generator_ceiling"] = {
            "rate": ceiling.rate,
            "p50_ms": ceiling.percentile(50) * 1000,
        }
        self.step(f"generator ceiling {ceiling.rate:,.0f} req/s")
        body = {"workflowId": "building-alert", "payload": ALERT}
        bare, bare_url = self.stack.start_api(
            "benchmarks.bare_app:app", workers=API_WORKERS, name="bare"
        )
        turns = {
            "a_bare": (f"{bare_url}/bare", {}),
            "a": (f"{self.api_url()}/api/trigger", AUTH),
        }
        rounds: list[dict[str, LoadResult]] = []
        for number in range(self.sizes.a_rounds):
            measured: dict[str, LoadResult] = {}
            order = list(turns) if number % 2 == 0 else list(reversed(turns))
            for name in order:
                url, headers = turns[name]
                with self.stage(name):
                    measured[name] = request_throughput(
                        self.loop, url, body, self.sizes, headers, self.sizes.a_turn_seconds
                    )
                if name == "a":
                    # The worker is not running yet: drop what the trigger queued and recorded,
                    # so that every round (and then (b)) starts from nothing.
                    purge_queue(self.stack)
                    truncate_notifications()
            rounds.append(measured)
            self.step(
                f"(a) round {number + 1}: bare FastAPI {measured['a_bare'].rate:,.0f} req/s,"
                f" POST /api/trigger {measured['a'].rate:,.0f} req/s"
            )
        self.stack.stop_process(bare)
        by_ratio = sorted(rounds, key=lambda r: r["a"].rate / r["a_bare"].rate)
        median = by_ratio[len(by_ratio) // 2]
        self.results["a"] = {
            "trigger": _load_summary(median["a"]),
            "bare": _load_summary(median["a_bare"]),
            "ratio": median["a"].rate / median["a_bare"].rate,
            "rounds": [
                {
                    "bare": r["a_bare"].rate,
                    "trigger": r["a"].rate,
                    "ratio": r["a"].rate / r["a_bare"].rate,
                    "trigger_p99_ms": r["a"].percentile(99) * 1000,
                }
                for r in rounds
            ],
        }

    def noop(self, name: str) -> None:
        """The Celery no-op drain rate; measured before (b) and again after (d), because other
        work on the machine can slow either, and the ratio uses the faster of the two."""
        with self.stage(name):
            measured = noop_drain_rate(self.stack, self.sizes.noop_tasks)
        # The no-op worker stopped (and was reaped by this process) before the stage's last
        # snapshot: show its time as its own, not as the benchmark's.
        worker_cpu = measured["worker_cpu_seconds"]
        self.cpu[name]["noop_worker"] = worker_cpu
        self.cpu[name]["bench"] = round(max(0.0, self.cpu[name]["bench"] - worker_cpu), 2)
        runs = self.results.setdefault("b_noop", {"runs": []})["runs"]
        runs.append(measured)
        best = max(runs, key=lambda run: run["rate"])
        self.results["b_noop"].update(tasks=best["tasks"], rate=best["rate"])
        self.step(f"Celery no-op drain {measured['rate']:,.0f} tasks/s")
        if "b" in self.results:
            self.results["b"]["ratio"] = self.results["b"]["rate"] / best["rate"]

    def b(self) -> None:
        self.noop("b_noop")
        api_url = self.api_url()
        self.start_worker()
        with self.stage("b"):
            b = bulk_end_to_end(self.loop, self.stack, api_url, self.sizes.e2e_notifications)
        b["ratio"] = b["rate"] / self.results["b_noop"]["rate"]
        self.results["b"] = b
        self.step(f"bulk end to end {b['rate']:,.0f} notifications/s")

    def c(self) -> None:
        api_url = self.api_url()
        self.start_worker()
        with self.stage("c"):
            self.results["c"] = steady_latency(
                self.loop, api_url, self.stack.emulator_url, self.sizes.steady_seconds
            )
        self.step(f"steady 100/s: p50 {self.results['c']['p50_ms']:.1f} ms")

    def d(self) -> None:
        api_url = self.api_url()
        self.start_worker()
        emulator = self.stack.emulator_url
        httpx.post(f"{emulator}/_emulator/faults", json={"latencyMs": 200}).raise_for_status()
        try:
            with self.stage("d"):
                d = bulk_end_to_end(self.loop, self.stack, api_url, self.sizes.e2e_notifications)
        finally:
            httpx.delete(f"{emulator}/_emulator/faults")
        d["latency_ms"] = 200
        if "b" in self.results:
            d["share_of_b"] = d["rate"] / self.results["b"]["rate"]
        self.results["d"] = d
        self.step(f"bulk end to end, 200 ms Novu {d['rate']:,.0f} notifications/s")
        if "b" in self.results and not self.sizes.quick:
            self.noop("b_noop_again")

    def e(self) -> None:
        self.results["e"] = {
            "api": peak_rss_mb(self.api[0].pid) if self.api else [],
            "worker": peak_rss_mb(self.worker.pid) if self.worker else [],
        }

    def f(self) -> None:
        api_url = self.api_url()
        if self.worker is not None:
            self.stack.stop_process(self.worker)
            self.worker = None
        truncate_notifications()
        database_url = self.stack.env["DATABASE_URL"]
        self.results["f"] = {}
        base = dt.datetime.now(dt.UTC)
        for size in (self.sizes.small_table, self.sizes.large_table):
            fill_notifications(database_url, size, base)
            self.step(f"table filled to {size:,} rows")
            with self.stage(f"f_{size}"):
                self.results["f"][str(size)] = table_latency(
                    self.loop, api_url, database_url, self.sizes.table_requests, base
                )
        self.step("table latencies measured")

    def i(self) -> None:
        from benchmarks import rules_bench

        with self.stage("i"):
            self.results["i"] = rules_bench.run(self.sizes.quick)
        large = self.results["i"]["large"]
        self.step(
            f"rules: {large['due']:,} due of {large['rules']:,} in {large['due_tick_ms']:.0f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="XNovu benchmarks (see benchmarks/run.py).")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (QUICK=1)")
    parser.add_argument("--only", default=",".join(STAGES), help="stages to run, e.g. b,d")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("QUICK", "").lower() in ("1", "true", "yes")
    stages = [name for name in STAGES if name in args.only.split(",")]
    sizes = Sizes.of(quick)
    began = time.perf_counter()
    results: dict[str, Any] = {
        "quick": quick,
        "stages": stages,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": os.getloadavg(),
        },
        "setup": {
            "api": f"{API_WORKERS} uvicorn processes (benchmarks/serve.py: uvloop, httptools,"
            " SO_REUSEPORT)",
            "worker": f"celery worker --concurrency {WORKER_CONCURRENCY} (prefork), beat",
            "connections": CONNECTIONS,
            "postgres": "embedded, fsync and synchronous_commit on",
        },
    }
    # BENCH_KEEP_DIR: the stack's directory (its processes' logs, PostgreSQL's data) is made
    # there and kept, to read after a run that looked wrong.
    keep = os.environ.get("BENCH_KEEP_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
    root = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="xnovu-bench-", dir=keep))
        if keep
        else tempfile.TemporaryDirectory(prefix="xnovu-bench-")
    )
    try:
        with root as tmp, bench_stack(Path(tmp)) as stack:
            if keep:
                print(f"stack directory (kept): {tmp}", flush=True)
            bench = Run(stack, sizes, results)
            bench.step("stack started")
            for name in stages:
                if name not in OWN_STACK_STAGES:
                    getattr(bench, name)()
        if "g" in stages:
            from benchmarks import bridge_bench

            results["g"] = bridge_bench.run(quick)
        if "h" in stages:
            results["h"] = e2e_steps_in_subprocess(quick)
    finally:
        results["elapsed_seconds"] = time.perf_counter() - began
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report.table(results))
    print(f"\nwrote {RESULTS.relative_to(REPO)} ({results['elapsed_seconds']:.0f} s)")
    return 0


def e2e_steps_in_subprocess(quick: bool) -> dict[str, Any]:
    """Stage (h) in a process of its own: Celery apps and clients of this process still point
    at the stack that (a)-(f) used, and stopped."""
    with tempfile.TemporaryDirectory(prefix="xnovu-e2e-steps-") as tmp:
        out = Path(tmp) / "e2e_steps.json"
        command = [sys.executable, "-m", "benchmarks.e2e_steps", "--json", str(out)]
        subprocess.run(command + (["--quick"] if quick else []), cwd=REPO, check=True)
        figures: dict[str, Any] = json.loads(out.read_text())["e2e_steps"]
        return figures


def _load_summary(result: LoadResult) -> dict[str, Any]:
    return {
        "rate": result.rate,
        "p50_ms": result.percentile(50) * 1000,
        "p99_ms": result.percentile(99) * 1000,
        "requests": result.ok,
        "non_2xx": sum(n for status, n in result.statuses.items() if not 200 <= status < 300),
        "errors": result.errors,
    }


if __name__ == "__main__":
    sys.exit(main())
