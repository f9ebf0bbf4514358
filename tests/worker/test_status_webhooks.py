"""Status webhooks end to end: trigger → worker → SENT → timeline → outbox (trigger) → beat's
dispatch → webhook worker → a receiver in the test, signed per Standard Webhooks."""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text, update
from standardwebhooks import Webhook

from devtools.devstack import free_port
from shared.db.models import NotificationRule, WebhookMessage
from shared.db.session import transaction
from shared.rules.scheduler import fire_rules
from tests.conftest import Tenant, make_tenant, signup_payload, wait_for_status
from tests.webhook_receiver import Received, Receiver, serve
from tests.worker import test_rules as rules

pytestmark = pytest.mark.integration


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


def _register(client, tenant: Tenant, url: str, types=("notification.sent",)) -> dict[str, Any]:
    response = client.post(
        "/api/webhooks", json={"url": url, "eventTypes": list(types)}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def _trigger(client, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), **extra},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    return response.json()


def _wait(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _attempts(client, tenant: Tenant, endpoint_id: int) -> list[dict[str, Any]]:
    page = client.get(f"/api/webhooks/{endpoint_id}/attempts", headers=tenant.headers)
    assert page.status_code == 200, page.text
    return list(reversed(page.json()["items"]))


def _for(receiver: Receiver, notification_id: int) -> list[Received]:
    return [
        r for r in receiver.events() if r.event["data"].get("notificationId") == notification_id
    ]


def test_sent_notification_is_posted_signed(client, tenant, worker, webhook_worker, receiver):
    endpoint = _register(client, tenant, receiver.url)
    accepted = _trigger(client, tenant)
    wait_for_status(client, tenant, accepted["notificationId"], {"SENT"})
    [got] = _wait(lambda: _for(receiver, accepted["notificationId"]), what="the webhook")

    verified = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert verified["type"] == "notification.sent"
    assert verified["data"] == {
        "notificationId": accepted["notificationId"],
        "transactionId": accepted["transactionId"],
        "workflowId": "user-signup",
        "enterpriseId": str(tenant.enterprise_id),
        "status": "SENT",
        "attempt": 1,
    }
    assert got.headers["webhook-id"].startswith("msg_")
    # Sent to the address that was checked, with the URL's own host name.
    assert got.headers["host"] == receiver.url.split("/")[2]
    with pytest.raises(Exception, match="signature"):
        Webhook(endpoint["secret"]).verify(got.body.replace(b"SENT", b"FAIL"), got.headers)

    [attempt] = _wait(lambda: _attempts(client, tenant, endpoint["id"]), what="the attempt")
    assert attempt["succeeded"] is True and attempt["statusCode"] == 200
    assert attempt["webhookId"] == got.headers["webhook-id"]
    assert attempt["notificationId"] == accepted["notificationId"]
    assert attempt["messageStatus"] == "delivered" and attempt["durationMs"] >= 0
    events = client.get(
        f"/api/notifications/{accepted['notificationId']}/events", headers=tenant.headers
    ).json()["items"]
    delivered = [e for e in events if e["kind"] == "webhook.delivered"]
    assert delivered and delivered[0]["detail"]["webhookId"] == got.headers["webhook-id"]


def test_a_receiver_down_for_a_while_gets_it_once_back(
    client, tenant, worker, webhook_worker, receiver
):
    answers = iter([503, 503])
    receiver.answer = lambda: next(answers, 200)
    endpoint = _register(client, tenant, receiver.url)
    accepted = _trigger(client, tenant)
    _wait(
        lambda: any(a["succeeded"] for a in _attempts(client, tenant, endpoint["id"])),
        what="a delivered attempt",
    )
    got = _for(receiver, accepted["notificationId"])
    assert len(got) == 3
    # One message: the same id and body on every attempt, each signed afresh.
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1
    for request in got:
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
    attempts = _attempts(client, tenant, endpoint["id"])
    assert [(a["attempt"], a["statusCode"], a["succeeded"]) for a in attempts] == [
        (1, 503, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert attempts[0]["messageStatus"] == "delivered"
    assert attempts[0]["responseExcerpt"] == "ok"


def test_a_closed_port_is_retried_until_it_listens(client, tenant, worker, webhook_worker):
    port = free_port()
    endpoint = _register(client, tenant, f"http://127.0.0.1:{port}/late")
    accepted = _trigger(client, tenant)
    _wait(lambda: _attempts(client, tenant, endpoint["id"]), what="a first attempt")
    first = _attempts(client, tenant, endpoint["id"])[0]
    assert first["statusCode"] is None and first["error"] and first["messageStatus"] == "pending"
    gen = serve(Receiver(), port)
    late = next(gen)
    try:
        [got] = _wait(lambda: _for(late, accepted["notificationId"]), what="the late webhook")
        Webhook(endpoint["secret"]).verify(got.body, got.headers)
    finally:
        gen.close()


def test_another_enterprise_never_sees_the_events(client, tenant, worker, webhook_worker, receiver):
    other = make_tenant()
    gen = serve(Receiver())
    theirs = next(gen)
    try:
        _register(client, tenant, receiver.url)
        _register(client, other, theirs.url)
        mine = _trigger(client, tenant)
        _wait(lambda: _for(receiver, mine["notificationId"]), what="my webhook")
        their_own = _trigger(client, other)
        _wait(lambda: _for(theirs, their_own["notificationId"]), what="their webhook")
        assert {r.event["data"]["enterpriseId"] for r in theirs.events()} == {
            str(other.enterprise_id)
        }
        assert {r.event["data"]["enterpriseId"] for r in receiver.events()} == {
            str(tenant.enterprise_id)
        }
    finally:
        gen.close()


def test_only_subscribed_event_types_are_sent(client, tenant, worker, webhook_worker, receiver):
    _register(client, tenant, receiver.url, types=("notification.failed",))
    other_receiver = serve(Receiver())
    sent_hooks = next(other_receiver)
    try:
        _register(client, tenant, sent_hooks.url, types=("notification.sent",))
        accepted = _trigger(client, tenant)
        _wait(lambda: _for(sent_hooks, accepted["notificationId"]), what="the sent webhook")
        assert _for(receiver, accepted["notificationId"]) == []
    finally:
        other_receiver.close()


def test_an_endpoint_failing_every_message_is_disabled(client, tenant, worker, webhook_worker):
    # WEBHOOK_DISABLE_AFTER_FAILED_MESSAGES is 3 and the retry schedule seconds in tests.
    endpoint = _register(client, tenant, f"http://127.0.0.1:{free_port()}/dead")
    for _ in range(3):
        _trigger(client, tenant)

    def disabled() -> dict[str, Any] | None:
        read = client.get(f"/api/webhooks/{endpoint['id']}", headers=tenant.headers).json()
        return read if not read["enabled"] else None

    read = _wait(disabled, timeout=40, what="the endpoint disabled")
    assert "3 messages in a row failed" in read["disabledReason"]
    assert read["disabledAt"] and read["failingSince"]
    attempts = _attempts(client, tenant, endpoint["id"])
    assert sum(a["messageStatus"] == "failed" for a in attempts if a["attempt"] == 5) == 3
    # Disabled: new events make no messages for it.
    with transaction() as session:
        before = session.scalar(
            text("SELECT count(*) FROM notify.webhook_message WHERE endpoint_id = :id"),
            {"id": endpoint["id"]},
        )
    accepted = _trigger(client, tenant)
    wait_for_status(client, tenant, accepted["notificationId"], {"SENT"})
    with transaction() as session:
        after = session.scalar(
            text("SELECT count(*) FROM notify.webhook_message WHERE endpoint_id = :id"),
            {"id": endpoint["id"]},
        )
    assert after == before


def _latency_to_webhook(client, tenant: Tenant, receiver: Receiver) -> tuple[float, float]:
    """Seconds from trigger to SENT, and from trigger to the webhook's arrival."""
    started = time.monotonic()
    accepted = _trigger(client, tenant)
    wait_for_status(client, tenant, accepted["notificationId"], {"SENT"}, timeout=30)
    sent = time.monotonic() - started
    _wait(lambda: _for(receiver, accepted["notificationId"]), timeout=30, what="the webhook")
    return sent, time.monotonic() - started


def test_a_slow_endpoint_delays_neither_delivery_nor_other_enterprises(
    client, tenant, worker, webhook_worker, receiver
):
    # Baseline: a fast enterprise's trigger → SENT and trigger → webhook.
    _register(client, tenant, receiver.url)
    baseline = [_latency_to_webhook(client, tenant, receiver) for _ in range(3)]
    slow_tenant = make_tenant()
    slow_gen = serve(Receiver())
    slow = next(slow_gen)
    slow.delay = 2.5  # under WEBHOOK_TIMEOUT_SECONDS (3 s in tests): slow, not failing
    try:
        _register(client, slow_tenant, slow.url)
        for _ in range(10):
            _trigger(client, slow_tenant)
        _wait(lambda: len(slow.events()) >= 2, what="the slow endpoint busy")
        loaded = [_latency_to_webhook(client, tenant, receiver) for _ in range(3)]
        still_slow = len(slow.events()) < 10
    finally:
        slow_gen.close()
    base_sent = statistics.median(s for s, _ in baseline)
    base_hook = statistics.median(h for _, h in baseline)
    load_sent = statistics.median(s for s, _ in loaded)
    load_hook = statistics.median(h for _, h in loaded)
    print(
        f"trigger->SENT {base_sent:.2f}s -> {load_sent:.2f}s; "
        f"trigger->webhook {base_hook:.2f}s -> {load_hook:.2f}s"
    )
    assert still_slow, "the slow endpoint's backlog drained before the measurement ended"
    # One slow message takes 2.5 s: had ours waited behind it, each would take that long.
    assert load_sent <= 3 * base_sent + 0.5
    assert load_hook <= 3 * base_hook + 0.5
    assert load_hook < 2.5


def test_no_message_is_made_for_an_enterprise_without_endpoints(client, tenant, worker):
    accepted = _trigger(client, tenant)
    wait_for_status(client, tenant, accepted["notificationId"], {"SENT"})
    with transaction() as session:
        count = session.scalar(
            text("SELECT count(*) FROM notify.webhook_message WHERE enterprise_id = :e"),
            {"e": tenant.enterprise_id},
        )
    assert count == 0
    assert uuid.UUID(str(tenant.enterprise_id))


def test_failed_and_retracted_notifications_are_posted(
    client, tenant, worker, webhook_worker, receiver, emulator
):
    endpoint = _register(
        client, tenant, receiver.url, types=("notification.failed", "notification.retracted")
    )
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    scheduled = _trigger(client, tenant, scheduledFor=later)
    cancel = client.post(
        f"/api/notifications/{scheduled['notificationId']}/cancel",
        json={"reason": "changed my mind"},
        headers=tenant.headers,
    )
    assert cancel.status_code == 200, cancel.text
    [retracted] = _wait(lambda: _for(receiver, scheduled["notificationId"]), what="retracted")
    event = Webhook(endpoint["secret"]).verify(retracted.body, retracted.headers)
    assert event["type"] == "notification.retracted"
    assert event["data"]["status"] == "RETRACTED"
    assert event["data"]["reason"] == "changed my mind"

    # Novu refusing the trigger for good (400) fails the notification at once.
    emulator.post("/_emulator/faults", json={"status": 400, "rate": 1.0})
    refused = _trigger(client, tenant)
    wait_for_status(client, tenant, refused["notificationId"], {"FAILED"})
    emulator.delete("/_emulator/faults")
    [failed] = _wait(lambda: _for(receiver, refused["notificationId"]), what="failed")
    event = Webhook(endpoint["secret"]).verify(failed.body, failed.headers)
    assert event["type"] == "notification.failed"
    assert event["data"]["status"] == "FAILED"
    assert event["data"]["error"]["code"]


def test_novus_message_events_are_posted_per_channel(
    client, tenant, worker, webhook_worker, receiver, emulator
):
    endpoint = _register(client, tenant, receiver.url, types=("message.sent", "message.failed"))
    emulator.post(
        "/_emulator/faults",
        json={"providerFailures": [{"channel": "email", "message": "mailbox unavailable"}]},
    )
    accepted = _trigger(client, tenant, payload=signup_payload("grace"))
    got = _wait(
        lambda: len(_for(receiver, accepted["notificationId"])) >= 2 or None,
        what="both channels' events",
    )
    assert got
    events = {
        (e["type"], e["data"]["channel"]): e
        for e in (
            Webhook(endpoint["secret"]).verify(r.body, r.headers)
            for r in _for(receiver, accepted["notificationId"])
        )
    }
    assert set(events) == {("message.failed", "email"), ("message.sent", "in_app")}
    failed = events[("message.failed", "email")]["data"]
    assert failed["errorText"] == "mailbox unavailable"
    assert failed["subscriberId"] == "grace"  # the caller's id, not Novu's namespaced one
    assert failed["transactionId"] == accepted["transactionId"]


def test_a_claim_whose_worker_died_is_sent_again_with_its_id(
    client, tenant, worker, webhook_worker, receiver
):
    endpoint = _register(client, tenant, receiver.url)
    msg_id = f"msg_{uuid.uuid4().hex}"
    # As a task that claimed the message and died would leave it: pending, its lease run out.
    with transaction(tenant.enterprise_id) as session:
        session.execute(
            text(
                "INSERT INTO notify.webhook_message (msg_id, enterprise_id, endpoint_id,"
                " event_type, payload, attempts, claim_id, locked_until)"
                " VALUES (:m, :e, :ep, 'notification.sent', :p, 1, :c,"
                " now() - interval '1 second')"
            ),
            {
                "m": msg_id,
                "e": tenant.enterprise_id,
                "ep": endpoint["id"],
                "p": '{"type": "notification.sent", "data": {"notificationId": 0}}',
                "c": uuid.uuid4(),
            },
        )
    [got] = _wait(lambda: receiver.events("notification.sent"), what="the message sent again")
    assert got.headers["webhook-id"] == msg_id
    Webhook(endpoint["secret"]).verify(got.body, got.headers)
    [attempt] = _wait(lambda: _attempts(client, tenant, endpoint["id"]), what="its attempt")
    assert attempt["attempt"] == 2 and attempt["messageStatus"] == "delivered"


def test_a_rule_fire_that_creates_nothing_is_posted_as_rule_failed(
    client, tenant, worker, webhook_worker, receiver
):
    subscribed = _register(client, tenant, receiver.url, types=("rule.failed",))
    # The same enterprise's endpoint of other types, and another enterprise's of this type.
    _register(client, tenant, receiver.url, types=("notification.failed",))
    other = make_tenant()
    theirs = _register(client, other, receiver.url, types=("rule.failed",))
    workflow = rules._workflow(client, tenant)
    good = rules._rule(client, tenant, workflow["id"], "* * * * *")
    stale = rules._rule(client, tenant, workflow["id"], "* * * * *")
    # The other enterprise's rule, written by SQL, naming this enterprise's workflow.
    foreign = rules._insert_rule(
        other.enterprise_id,
        workflow["id"],
        {"cron": "* * * * *"},
        {"recipients": ["x"], "payload": {"message": "hi"}},
    )
    now = rules._ahead()
    for rule_id in (good, stale, foreign):
        rules._activate(rule_id, next_fire_at=now)
    rules._make_stale(stale)

    result = fire_rules(now + dt.timedelta(seconds=1))
    assert (result.fired, result.failed) == (1, 2)

    # Made in the tick's transaction: one message for each failed fire, to the endpoint of its
    # rule's enterprise subscribed to rule.failed; another enterprise's workflow is not named.
    with transaction() as session:
        made = session.execute(
            select(WebhookMessage.endpoint_id, WebhookMessage.payload)
            .where(
                WebhookMessage.payload["data"]["ruleId"].as_integer().in_([good, stale, foreign])
            )
            .order_by(WebhookMessage.id)
        ).all()
    assert [(endpoint, p["type"], p["data"]["ruleId"]) for endpoint, p in made] == [
        (subscribed["id"], "rule.failed", stale),
        (theirs["id"], "rule.failed", foreign),
    ]
    foreign_data = made[1][1]["data"]
    assert "workflowId" not in foreign_data and foreign_data["error"]["code"] == (
        "workflow_not_found"
    )

    [got] = _wait(
        lambda: [r for r in receiver.events() if r.event["data"].get("ruleId") == stale],
        what="the rule.failed webhook",
    )
    verified = Webhook(subscribed["secret"]).verify(got.body, got.headers)
    error = verified["data"].pop("error")
    assert verified["data"] == {
        "ruleId": stale,
        "ruleName": "every * * * * *",
        "enterpriseId": str(tenant.enterprise_id),
        "workflowId": workflow["workflow_key"],
        "fireAt": now.isoformat(),
    }
    assert error["code"] == "invalid_payload" and error["details"][0]["field"] == "message"
    assert error == {k: v for k, v in rules._rule_row(stale).last_error.items() if k != "fireAt"}
    [attempt] = _wait(lambda: _attempts(client, tenant, subscribed["id"]), what="the attempt")
    assert attempt["succeeded"] is True and attempt["eventType"] == "rule.failed"
    assert attempt["notificationId"] is None
    with transaction() as session:  # they never fire in a later test
        session.execute(
            update(NotificationRule)
            .where(NotificationRule.id.in_([good, stale, foreign]))
            .values(deactivated=True)
        )
