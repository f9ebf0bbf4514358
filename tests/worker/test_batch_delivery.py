"""Batched delivery: bulk trigger → deliver_batch → Novu bulk calls, with every guarantee.

End-to-end tests run the real worker against the emulator; the per-event classification and
the attempt fence are also checked in-process against the real database, with a Novu that
answers from a function.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications.delivery import deliver
from shared.notifications.repository import AttemptOutcome, claim_due, record_outcomes
from shared.novu.budget import NovuBudget
from shared.novu.client import NovuClient
from shared.queue import publish_deliver_batch
from shared.settings import get_settings
from tests.conftest import retract_leftover_rows, signup_payload
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration


def _later() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()


def _bulk(client, tenant, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = client.post("/api/trigger/bulk", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert all(r["result"] == "accepted" for r in results), results
    return list(results)


def _signups(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"workflowId": "user-signup", "payload": signup_payload(), **extra} for _ in range(count)
    ]


def _rows(ids: list[int]) -> list[Notification]:
    with transaction() as session:
        return list(
            session.scalars(
                select(Notification).where(Notification.id.in_(ids)).order_by(Notification.id)
            )
        )


def _wait_rows(
    ids: list[int], done, timeout: float = 30.0, what: str = "rows"
) -> list[Notification]:
    deadline = time.monotonic() + timeout
    rows = _rows(ids)
    while time.monotonic() < deadline:
        rows = _rows(ids)
        if all(done(row) for row in rows):
            return rows
        time.sleep(0.1)
    states = Counter((row.notification_status.value, row.attempts) for row in rows)
    raise AssertionError(f"timed out waiting for {what}: {states}")


def _final(row: Notification) -> bool:
    return row.notification_status in (S.SENT, S.FAILED)


def _accepted_counts(emulator, transaction_ids: list[str]) -> Counter[str]:
    wanted = set(transaction_ids)
    events = emulator.get("/_emulator/events").json()
    return Counter(e["transactionId"] for e in events if e["transactionId"] in wanted)


def _stats(emulator) -> dict[str, Any]:
    return dict(emulator.get("/_emulator/stats").json())


def _make_due(ids: list[int], **values: Any) -> None:
    """Scheduled rows become due now; enqueued_at keeps the reconciler away for a few seconds."""
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids))
            .values(**{"scheduled_for": None, "enqueued_at": dt.datetime.now(dt.UTC), **values})
        )


# -- end to end, through the real worker ------------------------------------------------------


def test_bulk_triggered_notifications_are_sent_once_each_in_bulk_calls(
    client, tenant, worker, emulator
):
    before = _stats(emulator)
    results = _bulk(client, tenant, _signups(250))
    ids = [r["notificationId"] for r in results]
    rows = _wait_rows(ids, _final)
    assert {row.notification_status for row in rows} == {S.SENT}
    assert all(row.attempts == 1 and row.processed_at is not None for row in rows)
    transaction_ids = [r["transactionId"] for r in results]
    ours = set(transaction_ids)
    assert _accepted_counts(emulator, transaction_ids) == Counter(transaction_ids)
    # 250 notifications, one deliver_batch message, three sub-batches, each recorded by one
    # statement (processed_at is its transaction's start time): two bulk calls of a hundred
    # (100 tokens each) and 50 single triggers (1 token each).
    assert sorted(Counter(row.processed_at for row in rows).values()) == [50, 100, 100]
    after = _stats(emulator)
    assert 52 <= after["requests"] - before["requests"] < 62  # leftovers may add a few
    assert 250 <= after["tokens"]["spent"] - before["tokens"]["spent"] < 260
    event = emulator.get("/_emulator/events", params={"transactionId": transaction_ids[0]}).json()[
        0
    ]
    assert event["payload"]["_xnovu"]["notificationId"] == ids[0]
    assert "Welcome, Ada Lovelace!" in event["payload"]["_xnovu"]["rendered"]["email"]["body"]
    # Events of a bulk call name their subscribers as single triggers do: in the enterprise's
    # namespace (docs/architecture.md, "Recipients").
    sent = [e for e in emulator.get("/_emulator/events").json() if e["transactionId"] in ours]
    assert len(sent) == 250
    for each in sent:
        user = each["payload"]["userId"]
        assert each["to"] == [
            {
                "subscriberId": f"{tenant.enterprise_id}_{user}",
                "email": each["payload"]["email"],
                "firstName": "Ada Lovelace",
            }
        ]


def test_whole_batch_is_retried_after_500s_and_sent_once(client, tenant, worker, emulator):
    # Retry-After: 3 keeps the attempts 3 s apart, so the faults are gone before any row can
    # use up its 4 attempts, however slowly the machine reaches "every row tried twice".
    emulator.post("/_emulator/faults", json={"status": 500, "rate": 1.0, "retryAfter": 3})
    results = _bulk(client, tenant, _signups(150))
    ids = [r["notificationId"] for r in results]
    _wait_rows(ids, lambda row: row.attempts >= 2, what="a second attempt of every row")
    emulator.delete("/_emulator/faults")
    rows = _wait_rows(ids, _final)
    assert {row.notification_status for row in rows} == {S.SENT}
    assert all(row.attempts >= 2 and row.error_details is None for row in rows)
    transaction_ids = [r["transactionId"] for r in results]
    assert _accepted_counts(emulator, transaction_ids) == Counter(transaction_ids)


def test_connection_lost_after_novu_accepted_a_bulk_call_does_not_send_twice(
    client, tenant, worker, emulator
):
    # Earlier tests' PENDING rows would take budget and attempts while every answer is dropped.
    retract_leftover_rows("tests/worker/test_batch_delivery.py")
    duplicates_before = _stats(emulator)["duplicates"]
    emulator.post("/_emulator/faults", json={"dropAfterAcceptRate": 1.0})
    results = _bulk(client, tenant, _signups(60))
    ids = [r["notificationId"] for r in results]
    transaction_ids = [r["transactionId"] for r in results]
    # Each row's first answer dropped (its outcome unknown): stop dropping now, so that rows
    # that raced ahead still have attempts left (waiting for every row's second attempt let
    # the first ones spend all four).
    _wait_rows(ids, lambda row: row.outcome_unknown_at is not None, what="a dropped answer")
    emulator.delete("/_emulator/faults")
    rows = _wait_rows(ids, _final)
    failed = [(r.attempts, r.error_details) for r in rows if r.notification_status != S.SENT]
    assert not failed, failed[:3]
    # Novu saw every transactionId again on the retry, and recorded each one once.
    assert _accepted_counts(emulator, transaction_ids) == Counter(transaction_ids)
    assert _stats(emulator)["duplicates"] - duplicates_before >= 60


def test_a_bulk_call_refused_as_a_whole_is_decided_event_by_event(client, tenant, worker, emulator):
    before = _stats(emulator)["requests"]
    emulator.post("/_emulator/faults", json={"status": 400, "rate": 1.0})
    results = _bulk(client, tenant, _signups(100))  # a full hundred: one bulk call
    rows = _wait_rows([r["notificationId"] for r in results], _final)
    assert {row.notification_status for row in rows} == {S.FAILED}
    for row in rows:
        assert row.attempts == 1
        assert row.error_details["code"] == "novu_rejected"
        assert row.error_details["statusCode"] == 400
    # One bulk call, then each event alone.
    assert _stats(emulator)["requests"] - before == 101
    assert not _accepted_counts(emulator, [r["transactionId"] for r in results])


def test_an_oversized_event_fails_alone_and_the_rest_are_sent(client, tenant, worker, emulator):
    results = _bulk(client, tenant, _signups(4, scheduledFor=_later()))
    ids = [r["notificationId"] for r in results]
    huge = {**signup_payload(), "blob": "x" * 600_000}  # over Novu's 512 KB per event
    with transaction() as session:
        session.execute(update(Notification).where(Notification.id == ids[1]).values(payload=huge))
    _make_due(ids)
    assert publish_deliver_batch(tenant.enterprise_id, ids) == []
    rows = _wait_rows(ids, _final)
    statuses = [row.notification_status for row in rows]
    assert statuses == [S.SENT, S.FAILED, S.SENT, S.SENT]
    # Recorded before intake sized events (written here past it): failed without a Novu call.
    assert rows[1].error_details["code"] == "event_too_large"
    transaction_ids = [r["transactionId"] for r in results]
    assert _accepted_counts(emulator, transaction_ids) == Counter(
        t for i, t in enumerate(transaction_ids) if i != 1
    )


def test_exhausted_attempts_fail_every_row_of_the_batch(client, tenant, worker, emulator):
    emulator.post("/_emulator/faults", json={"status": 503, "rate": 1.0})
    results = _bulk(client, tenant, _signups(3))
    rows = _wait_rows([r["notificationId"] for r in results], _final, timeout=40)
    for row in rows:
        assert row.notification_status is S.FAILED
        assert row.attempts == 4  # DELIVERY_MAX_ATTEMPTS in the test settings
        assert row.error_details["code"] == "attempts_exhausted"
        assert row.error_details["statusCode"] == 503


def test_a_render_failure_fails_only_that_row(client, tenant, worker, emulator):
    email = create_template(client, tenant, "EMAIL", subject="Hi", body="<p>{{ needed }}</p>")
    create_workflow(client, tenant, "needy", EMAIL=email, publish=True)
    events = [
        {"workflowId": "needy", "payload": {"needed": "yes"}},
        {"workflowId": "needy", "payload": {}},  # StrictUndefined: the render fails
        {"workflowId": "needy", "payload": {"needed": "also"}},
    ]
    results = _bulk(client, tenant, events)
    rows = _wait_rows([r["notificationId"] for r in results], _final)
    assert [row.notification_status for row in rows] == [S.SENT, S.FAILED, S.SENT]
    assert rows[1].error_details["code"] == "render_failed"
    assert _accepted_counts(emulator, [results[1]["transactionId"]]) == Counter()


def test_cancelled_rows_are_never_sent_and_duplicate_messages_are_harmless(
    client, tenant, worker, emulator
):
    results = _bulk(client, tenant, _signups(3, scheduledFor=_later()))
    ids = [r["notificationId"] for r in results]
    cancelled = client.post(f"/api/notifications/{ids[1]}/cancel", headers=tenant.headers)
    assert cancelled.json()["notification_status"] == "RETRACTED"
    _make_due(ids)
    for _ in range(3):  # a stale queue holding the same batch three times
        assert publish_deliver_batch(tenant.enterprise_id, ids) == []
    rows = _wait_rows([ids[0], ids[2]], _final)
    assert {row.notification_status for row in rows} == {S.SENT}
    time.sleep(0.5)
    assert _rows([ids[1]])[0].notification_status is S.RETRACTED
    transaction_ids = [r["transactionId"] for r in results]
    assert _accepted_counts(emulator, transaction_ids) == Counter(
        [transaction_ids[0], transaction_ids[2]]
    )


def test_a_batch_never_claims_another_enterprises_rows(client, tenant, worker, emulator):
    from tests.conftest import make_tenant

    other = make_tenant()
    theirs = _bulk(client, other, _signups(2, scheduledFor=_later()))
    their_ids = [r["notificationId"] for r in theirs]
    _make_due(their_ids, enqueued_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert publish_deliver_batch(tenant.enterprise_id, their_ids) == []
    control = _bulk(client, tenant, _signups(1))
    _wait_rows([control[0]["notificationId"]], _final)
    time.sleep(0.5)
    assert {row.notification_status for row in _rows(their_ids)} == {S.PENDING}


# -- in process, against the real database ----------------------------------------------------


def _pending_rows(client, tenant, count: int) -> tuple[list[int], list[str]]:
    results = _bulk(client, tenant, _signups(count, scheduledFor=_later()))
    ids = [r["notificationId"] for r in results]
    _make_due(ids)
    return ids, [r["transactionId"] for r in results]


def _fake_novu(answer, paths: list[str] | None = None) -> NovuClient:
    """A Novu whose trigger endpoints answer each event with `answer(event)` (and note the
    path of every call in `paths`)."""

    def single(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(201, json={"data": answer(body)})

    return _novu_answering(single, answer, paths)


def test_an_event_novu_did_not_process_fails_only_its_row(client, tenant, stack):
    ids, transaction_ids = _pending_rows(client, tenant, 5)
    rejected = transaction_ids[3]

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        if event["transactionId"] == rejected:
            return {"acknowledged": True, "status": "invalid_recipients", "error": ["nobody"]}
        return {
            "acknowledged": True,
            "status": "processed",
            "transactionId": event["transactionId"],
        }

    with ThreadPoolExecutor(2) as pool:
        report = deliver(
            tenant.enterprise_id,
            ids,
            novu=_fake_novu(answer),
            settings=get_settings(),
            executor=pool,
        )
    # Fewer than a hundred: a single trigger each, one token each.
    assert (report.claimed, report.sent, report.failed, report.novu_calls) == (5, 4, 1, 5)
    assert report.novu_tokens == 5
    rows = _rows(ids)
    assert [row.notification_status for row in rows] == [S.SENT, S.SENT, S.SENT, S.FAILED, S.SENT]
    assert rows[3].error_details["code"] == "novu_rejected"
    assert "invalid_recipients" in rows[3].error_details["message"]
    assert all(row.locked_until is None for row in rows)


class _NoThreads(Executor):
    """An executor that must not be used."""

    def submit(self, fn, /, *args, **kwargs):
        raise AssertionError("a lone notification must be sent on the task thread")


def _deliver_without_threads(
    tenant: Any, ids: list[int], threads: list[str], paths: list[str]
) -> Any:
    """Deliver with a Novu that accepts everything, noting the thread of each call."""

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {
            "acknowledged": True,
            "status": "processed",
            "transactionId": event["transactionId"],
        }

    return deliver(
        tenant.enterprise_id,
        ids,
        novu=_fake_novu(answer, paths),
        settings=get_settings(),
        executor=_NoThreads(),
    )


def test_a_lone_notification_is_one_single_trigger_sent_on_the_task_thread(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 1)
    threads: list[str] = []
    paths: list[str] = []
    report = _deliver_without_threads(tenant, ids, threads, paths)
    assert (report.claimed, report.sent, report.novu_calls, report.novu_tokens) == (1, 1, 1, 1)
    assert paths == ["/v1/events/trigger"]
    assert set(threads) == {threading.current_thread().name}
    [row] = _rows(ids)
    assert row.notification_status is S.SENT and row.attempts == 1
    assert row.locked_until is None and row.processed_at is not None


def test_a_full_hundred_is_one_bulk_call_sent_on_the_task_thread(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 100)
    threads: list[str] = []
    paths: list[str] = []
    report = _deliver_without_threads(tenant, ids, threads, paths)
    assert (report.claimed, report.sent, report.novu_calls, report.novu_tokens) == (
        100,
        100,
        1,
        100,
    )
    assert paths == ["/v1/events/trigger/bulk"]
    assert set(threads) == {threading.current_thread().name}
    rows = _rows(ids)
    assert {row.notification_status for row in rows} == {S.SENT}
    assert all(row.locked_until is None and row.processed_at is not None for row in rows)


def test_sub_batches_of_a_large_batch_are_claimed_and_sent_a_hundred_at_a_time(
    client, tenant, stack
):
    ids, _ = _pending_rows(client, tenant, 230)
    sizes: list[int] = []

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "acknowledged": True,
            "status": "processed",
            "transactionId": event["transactionId"],
        }

    novu = _fake_novu(answer)
    original = novu.trigger_bulk

    def counting(events, **kwargs):
        sizes.append(len(events))
        return original(events, **kwargs)

    novu.trigger_bulk = counting  # type: ignore[method-assign]
    with ThreadPoolExecutor(4) as pool:
        report = deliver(
            tenant.enterprise_id, ids, novu=novu, settings=get_settings(), executor=pool
        )
    # Two bulk calls of a hundred; the last 30 go as single triggers (30 tokens, not 100).
    assert sorted(sizes) == [100, 100]
    assert (report.claimed, report.sent, report.novu_calls, report.novu_tokens) == (
        230,
        230,
        32,
        230,
    )
    # A second message for the same ids finds nothing left to claim.
    with ThreadPoolExecutor(1) as pool:
        again = deliver(
            tenant.enterprise_id, ids, novu=novu, settings=get_settings(), executor=pool
        )
    assert (again.claimed, again.skipped, again.novu_calls) == (0, 230, 0)


def test_an_outcome_of_an_attempt_that_lost_its_row_is_not_recorded(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 2)
    with transaction(tenant.enterprise_id) as session:
        claimed, _ = claim_due(
            session, enterprise_id=tenant.enterprise_id, notification_ids=ids, lease_seconds=60
        )
    assert [row.attempts for row in claimed] == [1, 1]
    # The lease ran out and another worker claimed the first row again (attempt 2).
    with transaction() as session:
        session.execute(update(Notification).where(Notification.id == ids[0]).values(attempts=2))
    outcomes = [AttemptOutcome(row.id, 1, S.SENT) for row in claimed]
    with transaction(tenant.enterprise_id) as session:
        moved = record_outcomes(session, enterprise_id=tenant.enterprise_id, outcomes=outcomes)
    assert moved == {ids[1]}
    first, second = _rows(ids)
    assert (first.notification_status, second.notification_status) == (S.PROCESSING, S.SENT)


def test_a_claim_is_scoped_to_its_enterprise(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 2)
    with transaction(uuid.uuid4()) as session:
        claimed, _ = claim_due(
            session, enterprise_id=tenant.enterprise_id, notification_ids=ids, lease_seconds=60
        )
    assert claimed == []  # row-level security: another enterprise's transaction sees nothing
    assert {row.notification_status for row in _rows(ids)} == {S.PENDING}


def test_a_batch_failing_half_way_still_records_the_calls_already_answered(
    client, tenant, stack, monkeypatch
):
    import shared.notifications.delivery as delivery

    ids, _ = _pending_rows(client, tenant, 150)
    real_build = delivery.build_trigger_event

    def build(row):
        if row.id == ids[120]:  # in the second sub-batch, after the first call went out
            # The database went away (a row's own failure would fail that row alone).
            raise OperationalError("SELECT 1", {}, ConnectionError("the server closed"))
        return real_build(row)

    monkeypatch.setattr(delivery, "build_trigger_event", build)

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "acknowledged": True,
            "status": "processed",
            "transactionId": event["transactionId"],
        }

    with ThreadPoolExecutor(2) as pool, pytest.raises(OperationalError):
        deliver(
            tenant.enterprise_id,
            ids,
            novu=_fake_novu(answer),
            settings=get_settings(),
            executor=pool,
        )
    rows = _rows(ids)
    assert {row.notification_status for row in rows[:100]} == {S.SENT}
    # Claimed, never sent: the reconciler returns them to PENDING when their lease runs out.
    assert {row.notification_status for row in rows[100:]} == {S.PROCESSING}
    assert all(row.locked_until is not None for row in rows[100:])


# -- Novu's rate limit and workflows it does not know, in process -----------------------------


def _processed(event: dict[str, Any]) -> dict[str, Any]:
    return {"acknowledged": True, "status": "processed", "transactionId": event["transactionId"]}


def _novu_answering(single, bulk_event=_processed, calls: list[str] | None = None) -> NovuClient:
    """A Novu whose single trigger answers `single(body)` (a response) and whose bulk trigger
    answers each event with `bulk_event(event)`."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if calls is not None:
            calls.append(request.url.path)
        if request.url.path.endswith("/bulk"):
            return httpx.Response(201, json={"data": [bulk_event(e) for e in body["events"]]})
        return single(body)

    return NovuClient("http://novu.test", "key", transport=httpx.MockTransport(handler))


def _test_budget(stack, per_second: float = 1000.0) -> NovuBudget:
    return NovuBudget(stack.redis_url, per_second=per_second, key=f"xnovu:test:{uuid.uuid4()}")


def _deliver_metered(tenant, ids, novu: NovuClient, budget: NovuBudget, settings=None):
    """One delivery of `ids` on a send pool of two, metered by `budget`."""
    with ThreadPoolExecutor(2) as pool:
        return deliver(
            tenant.enterprise_id,
            ids,
            novu=novu,
            settings=settings or get_settings(),
            executor=pool,
            budget=budget,
        )


def test_a_429_puts_rows_back_without_using_an_attempt_and_empties_the_shared_budget(
    client, tenant, stack
):
    ids, _ = _pending_rows(client, tenant, 3)
    budget = _test_budget(stack)

    def throttled(body: dict[str, Any]) -> httpx.Response:
        body = {"statusCode": 429, "message": "API rate limit exceeded"}
        return httpx.Response(429, json=body, headers={"Retry-After": "2"})

    report = _deliver_metered(tenant, ids, _novu_answering(throttled), budget)
    assert (report.claimed, report.throttled, report.retried, report.failed) == (3, 3, 3, 0)
    assert (report.novu_calls, report.novu_tokens) == (3, 0)  # a 429 costs nothing
    # Every process's budget is empty until Novu's Retry-After.
    refused = budget.reserve(1, max_wait=1.0)
    assert not refused.taken and 1.9 < refused.wait <= 2.01
    now = dt.datetime.now(dt.UTC)
    for row in _rows(ids):
        assert row.notification_status is S.PENDING
        assert row.attempts == 0  # the attempt was given back
        assert row.error_details["code"] == "novu_rate_limited"
        assert row.error_details["statusCode"] == 429
        assert now + dt.timedelta(seconds=1.5) < row.next_attempt_at
        assert row.next_attempt_at < now + dt.timedelta(seconds=3)
    assert sorted(i for _, retry in report.retries for i in retry) == sorted(ids)


def test_a_429_on_the_last_attempt_does_not_fail_the_notification(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 1)
    last = get_settings().delivery_max_attempts
    _make_due(ids, attempts=last - 1)  # the claim makes it the last attempt

    def throttled(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(429, json={"message": "API rate limit exceeded"})

    report = deliver(
        tenant.enterprise_id,
        ids,
        novu=_novu_answering(throttled),
        settings=get_settings(),
        executor=_NoThreads(),
        budget=_test_budget(stack),
    )
    assert (report.throttled, report.failed) == (1, 0)
    [row] = _rows(ids)
    assert (row.notification_status, row.attempts) == (S.PENDING, last - 1)


def test_a_workflow_novu_does_not_know_waits_for_a_sync_then_fails_past_the_bound(
    client, tenant, stack, monkeypatch
):
    import shared.novu.sync as sync

    requested: list[str] = []
    monkeypatch.setattr(sync, "request_sync", requested.append)
    singles, _ = _pending_rows(client, tenant, 2)
    hundred, _ = _pending_rows(client, tenant, 100)
    budget = _test_budget(stack)

    def unknown(body: dict[str, Any]) -> httpx.Response:
        # Novu's ParseEventRequest: UnprocessableEntityException('workflow_not_found').
        answer = {"statusCode": 422, "message": "workflow_not_found", "error": "Unprocessable"}
        return httpx.Response(422, json=answer)

    def unknown_event(event: dict[str, Any]) -> dict[str, Any]:
        return {"acknowledged": True, "status": "error", "error": ["workflow_not_found"]}

    novu = _novu_answering(unknown, unknown_event)
    for ids in (singles, hundred):
        report = _deliver_metered(tenant, ids, novu, budget)
        assert (report.awaiting_sync, report.failed) == (len(ids), 0)
    assert requested == ["Novu does not know workflow 'user-signup'"] * 2  # once per task
    for row in _rows(singles + hundred):
        assert (row.notification_status, row.attempts) == (S.PENDING, 0)
        assert row.error_details["code"] == "novu_workflow_not_synced"
        assert "workflow_not_found" in json.dumps(row.error_details["novu"])

    # Past NOVU_SYNC_WAIT_SECONDS since Novu first refused them, they fail, saying why.
    _make_due(singles + hundred, next_attempt_at=None)
    impatient = get_settings().model_copy(update={"novu_sync_wait_seconds": 0.0})
    for ids in (singles, hundred):
        report = _deliver_metered(tenant, ids, novu, budget, impatient)
        assert (report.awaiting_sync, report.failed) == (0, len(ids))
    for row in _rows(singles + hundred):
        assert (row.notification_status, row.attempts) == (S.FAILED, 1)
        assert row.error_details["code"] == "novu_workflow_not_found"
        assert "NOVU_SYNC_WAIT_SECONDS" in row.error_details["message"]


def test_rows_whose_tokens_are_far_away_are_deferred_unclaimed(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 150)
    budget = _test_budget(stack, per_second=100.0)
    budget.drain(20.0)  # nothing for 20 s: far beyond what a task sleeps

    def never(body: dict[str, Any]) -> httpx.Response:
        raise AssertionError("no Novu call without tokens")

    report = _deliver_metered(tenant, ids, _novu_answering(never, never), budget)
    assert (report.claimed, report.deferred, report.novu_calls) == (0, 150, 0)
    [(delay, deferred)] = report.retries
    assert sorted(deferred) == sorted(ids)
    # The wait (20 s drained, then 150 tokens at 100/s) times the jitter factor of 1 to 1.5.
    assert 20.0 <= delay <= (20.0 + 150 / 100.0) * 1.5
    now = dt.datetime.now(dt.UTC)
    for row in _rows(ids):
        assert (row.notification_status, row.attempts) == (S.PENDING, 0)
        assert row.next_attempt_at > now + dt.timedelta(seconds=19)
        # A countdown message carries them: the reconciler leaves them alone until then.
        assert row.enqueued_at == row.next_attempt_at


def test_a_short_wait_for_tokens_is_slept_and_unspent_tokens_are_refunded(client, tenant, stack):
    ids, _ = _pending_rows(client, tenant, 30)
    budget = _test_budget(stack, per_second=100.0)  # holds 500
    assert budget.reserve(500 + 30, max_wait=1.0).taken  # empty, and 30 more 0.3 s away
    with transaction() as session:  # two of the rows are not due: paid for, then refunded
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids[:2]))
            .values(scheduled_for=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        )
    report = _deliver_metered(tenant, ids, _fake_novu(_processed), budget)
    assert (report.claimed, report.sent, report.novu_tokens, report.deferred) == (28, 28, 28, 0)
    assert 500 <= report.token_wait_ms <= 1500  # its 30 tokens queued behind the 30 reserved
    available = budget.available()
    assert available is not None and available >= 2  # the two unclaimed rows' tokens
