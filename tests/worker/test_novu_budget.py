"""Novu's rate-limit budget (shared/novu/budget.py) against the suite's real Redis: tokens
taken and refilled at the rate, shared by two processes, emptied by a 429 until its
Retry-After, refunded, and failing open when Redis is gone; then end to end, the worker
sending 600 single triggers at 100 a second into the emulator's Free-tier token bucket."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shared.db.models import Notification
from shared.db.session import transaction
from shared.novu.budget import NovuBudget, get_novu_budget
from tests.conftest import Stack, Tenant, api_process, retract_leftover_rows, signup_payload

# 100 tokens a second and a window of 1 s: a budget of 100 that refills in a second.
RATE = 100.0
WINDOW = 1.0


def _budget(stack: Stack, key: str) -> NovuBudget:
    return NovuBudget(stack.redis_url, per_second=RATE, key=key, window_seconds=WINDOW)


@pytest.fixture()
def key() -> str:
    return f"xnovu:test:budget:{uuid.uuid4().hex}"


def test_a_full_budget_pays_at_once_then_paces_at_the_rate(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    assert budget.capacity == 100
    assert budget.available() == 100
    first = budget.reserve(100, max_wait=0)
    assert first.taken and first.wait == 0
    # Empty: one more token is one interval away, beyond a max_wait of 0, so nothing is taken.
    refused = budget.reserve(1, max_wait=0)
    assert not refused.taken
    assert 0.005 < refused.wait <= 0.011
    # Within max_wait the tokens are reserved: 50 more are half a second away.
    later = budget.reserve(50, max_wait=1.0)
    assert later.taken
    assert 0.45 < later.wait <= 0.51
    # A reservation is the caller's: the next one queues behind it.
    queued = budget.reserve(10, max_wait=1.0)
    assert queued.taken and 0.55 < queued.wait <= 0.61


def test_a_cost_above_the_capacity_waits_for_the_rest(stack: Stack, key: str) -> None:
    small = NovuBudget(stack.redis_url, per_second=10.0, key=key, window_seconds=5.0)
    assert small.capacity == 50  # a bulk call of 100 can never be paid at once
    bulk = small.reserve(100, max_wait=0)
    assert bulk.taken and 4.9 < bulk.wait <= 5.01


def test_the_budget_refills_at_its_rate_up_to_its_capacity(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    assert budget.reserve(100, max_wait=0).taken
    time.sleep(0.3)
    available = budget.available()
    assert available is not None and 25 <= available <= 35
    time.sleep(1.2)
    assert budget.available() == 100  # never more than one window


def test_take_sleeps_for_its_tokens(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    assert budget.take(100, max_wait=0)
    started = time.monotonic()
    assert budget.take(20, max_wait=1.0)
    assert 0.17 < time.monotonic() - started < 0.4
    started = time.monotonic()
    assert not budget.take(100, max_wait=0.5)  # a second away: not taken, no sleep
    assert time.monotonic() - started < 0.1


def _spend(redis_url: str, key: str, seconds: float, start: Any, queue: Any) -> None:
    """Take tokens one by one for `seconds` once both processes are ready (`start`)."""
    budget = NovuBudget(redis_url, per_second=RATE, key=key, window_seconds=WINDOW)
    budget.available()  # connected before the start
    start.wait(60)
    taken = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if budget.take(1, max_wait=max(0.0, end - time.monotonic())):
            taken += 1
    queue.put(taken)


def test_two_processes_share_one_budget(stack: Stack, key: str) -> None:
    # Each process alone could take 100 + 100/s; together they get that, not twice that.
    seconds = 1.5
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    start = spawn.Barrier(2)
    processes = [
        spawn.Process(target=_spend, args=(stack.redis_url, key, seconds, start, queue))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    counts = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    ceiling = 100 + RATE * seconds
    assert sum(counts) <= ceiling + 2  # the two clocks start a moment apart
    assert sum(counts) >= 0.8 * ceiling  # and both were served
    assert min(counts) > 0.2 * ceiling


def test_a_429_drains_the_budget_until_its_retry_after(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    other = _budget(stack, key)  # another process's handle on the same budget
    budget.drain(0.5)
    refused = other.reserve(1, max_wait=0.2)
    assert not refused.taken
    assert 0.45 < refused.wait <= 0.52
    time.sleep(0.55)
    assert other.reserve(1, max_wait=0.02).taken
    # Draining never gives tokens back: a shorter Retry-After leaves a longer drain alone.
    budget.drain(1.0)
    budget.drain(0.1)
    assert not other.reserve(1, max_wait=0.5).taken


def test_unspent_tokens_are_refunded(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    assert budget.reserve(100, max_wait=0).taken
    budget.refund(40)
    available = budget.available()
    assert available is not None and 40 <= available <= 42
    assert budget.reserve(40, max_wait=0).taken


def test_usage_counts_tokens_and_notifications_per_enterprise(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    first, second = uuid.uuid4(), uuid.uuid4()
    budget.record_usage(first, tokens=100, sent=100)
    budget.record_usage(first, tokens=3, sent=2)
    budget.record_usage(second, tokens=5, sent=5)
    mine = budget.usage(first)
    assert mine is not None and (mine.tokens, mine.sent) == (103, 102)
    everyone = budget.usage()
    assert everyone is not None and (everyone.tokens, everyone.sent) == (108, 107)
    assert everyone.tokens_per_notification == pytest.approx(108 / 107)
    unknown = budget.usage(uuid.uuid4())
    assert unknown is not None and unknown.tokens_per_notification is None


def test_the_wait_for_a_sync_runs_from_the_first_refusal(stack: Stack, key: str) -> None:
    budget = _budget(stack, key)
    transaction_id = f"xn-{uuid.uuid4()}"
    first = budget.unknown_since(transaction_id, keep=0.5)
    time.sleep(0.1)
    assert budget.unknown_since(transaction_id, keep=0.5) == first
    time.sleep(0.5)  # forgotten after `keep`: a new wait starts
    assert budget.unknown_since(transaction_id, keep=0.5) > first


def test_without_redis_the_budget_lets_calls_through() -> None:
    budget = NovuBudget(
        "redis://127.0.0.1:9/0", per_second=RATE, key="xnovu:test:gone", socket_timeout=0.2
    )
    assert budget.reserve(1_000, max_wait=0).taken
    assert budget.available() is None
    assert budget.usage() is None
    budget.drain(1.0)  # no error


# -- end to end: the worker against the emulator's token bucket -------------------------------


def _send_at(api_url: str, tenant: Tenant, count: int, per_second: float) -> list[int]:
    """`count` single triggers to a real API process, one every 1/`per_second` s whatever the
    answers take (callers do not wait for each other); their ids."""

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(base_url=api_url, headers=tenant.headers) as http:

            async def send(n: int) -> int:
                await asyncio.sleep(n / per_second)
                body = {"workflowId": "user-signup", "payload": signup_payload()}
                response = await http.post("/api/trigger", json=body, timeout=30)
                assert response.status_code == 202, response.text
                return int(response.json()["notificationId"])

            return list(await asyncio.gather(*(send(n) for n in range(count))))

    return asyncio.run(send_all())


def _statuses(ids: list[int]) -> Counter[tuple[str, int]]:
    with transaction() as session:
        rows = session.execute(
            select(Notification.notification_status, Notification.attempts).where(
                Notification.id.in_(ids)
            )
        ).all()
    return Counter((status.value, attempts) for status, attempts in rows)


def _transaction_ids(ids: list[int]) -> set[str]:
    with transaction() as session:
        return set(
            session.scalars(select(Notification.transaction_id).where(Notification.id.in_(ids)))
        )


def _trigger_tokens(stats: dict[str, Any]) -> int:
    """Tokens the emulator charged to triggers and bulk triggers (not to syncs, whose tokens
    come from Novu's global category)."""
    by_endpoint = stats["tokens"]["byEndpoint"]
    return sum(by_endpoint.get(name, {}).get("spent", 0) for name in ("trigger", "bulk-trigger"))


def _others(budget: NovuBudget, tenant: Tenant) -> int:
    """Tokens our workers counted for every enterprise but the tenant's."""
    everyone, mine = budget.usage(), budget.usage(tenant.enterprise_id)
    assert everyone is not None and mine is not None
    return everyone.tokens - mine.tokens


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "faults", [{}, {"latencyMs": 200}], ids=["no-latency", "200-ms-of-novu-latency"]
)
def test_600_single_triggers_at_100_a_second_are_all_sent_within_novus_rate_limit(
    stack: Stack,
    client: Any,
    tenant: Tenant,
    worker: Any,
    emulator: httpx.Client,
    operator: dict[str, str],
    faults: dict[str, Any],
) -> None:
    # Rows earlier tests left PENDING would share the budget with these (in the full suite one
    # of the 600 waited past the deadline behind them).
    retract_leftover_rows("tests/worker/test_novu_budget.py")
    # Novu's Free tier, a fresh bucket at the emulator (a new rate replaces it) and a full
    # budget here: what tests before this one spent does not count.
    assert emulator.post("/_emulator/faults", json={"rateLimitPerSecond": 60, **faults}).is_success
    budget = get_novu_budget()
    assert budget.per_second == 60
    budget._redis.delete(budget.key)
    before, others_before = emulator.get("/_emulator/stats").json(), _others(budget, tenant)
    with api_process(stack, "rate-limit-api") as api_url:
        ids = _send_at(api_url, tenant, 600, per_second=100)
    # Each trigger's message may carry it alone, and a lone notification's call is made on its
    # task's thread: with Novu answering in L seconds the test worker's processes send at most
    # concurrency / L a second (10 at 200 ms, against Novu's 60), so the 600 take up to a
    # minute after the last trigger; the deadline leaves that bound room under CI's load.
    latency = faults.get("latencyMs", 0) / 1000
    deadline = time.monotonic() + 60 + 2 * 600 * latency / worker.concurrency
    while time.monotonic() < deadline and _statuses(ids)[("SENT", 1)] < 600:
        time.sleep(0.25)
    time.sleep(1)  # the last tasks add their counts just after recording their rows
    after, others_after = emulator.get("/_emulator/stats").json(), _others(budget, tenant)
    # Every one sent on its first counted attempt; none failed, none waits.
    assert _statuses(ids) == Counter({("SENT", 1): 600})
    # What Novu charged meanwhile, less what earlier tests' retries still sending cost.
    spent = _trigger_tokens(after) - _trigger_tokens(before) - (others_after - others_before)
    refused = after["tokens"]["refusedRequests"] - before["tokens"]["refusedRequests"]
    assert spent <= 600  # at most one token a notification
    # Novu took each of ours exactly once (earlier tests' retries may be accepted meanwhile).
    ours = _transaction_ids(ids)
    received = Counter(
        event["transactionId"]
        for event in emulator.get("/_emulator/events").json()
        if event["transactionId"] in ours
    )
    assert received == Counter(dict.fromkeys(ours, 1))
    assert after["duplicates"] == before["duplicates"]
    # The shared budget keeps the workers inside Novu's bucket: Novu never had to refuse.
    assert refused == 0
    # The workers' own count, per enterprise, as GET /api/stats reports it.
    novu: dict[str, Any] = {}
    deadline = time.monotonic() + 5  # a task adds its counts just after recording its rows
    while time.monotonic() < deadline and novu.get("notificationsSent") != 600:
        novu = client.get("/api/stats", headers=tenant.headers).json()["novu"]
        time.sleep(0.1)
    assert novu == {
        "eventsTokensPerSecond": 60.0,
        "tokensSpent": 600,
        "notificationsSent": 600,
        "tokensPerNotification": 1.0,
    }
    metrics = client.get("/metrics", headers=operator).text
    assert "xnovu_novu_tokens_total " in metrics
    assert "xnovu_novu_tokens_per_notification " in metrics
