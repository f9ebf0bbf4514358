"""Status webhook parts on their own: the address guard, the sender (signature, checked
address, bounded answer), the retry and disable rules, the trigger's event mapping, and the
webhook queue's consumers."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from standardwebhooks import Webhook

from shared.db.session import connection, enterprise_transaction
from shared.queue import QueueName
from shared.webhooks import outbox, sender
from shared.webhooks.addresses import UnsafeUrl, is_public, parse_url
from shared.webhooks.endpoints import new_secret
from shared.webhooks.events import EVENT_TYPES, RULE_EVENTS, TIMELINE_KINDS
from tests.conftest import REPO, Stack
from tests.webhook_receiver import Receiver, serve


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::1", False),  # 6to4 wrapping 127.0.0.1
        ("ff02::1", False),
    ],
)
def test_only_public_addresses_pass(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://",
        "http://user@example.com/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://example.com/\r\nX-Injected: 1",
        "https://example.com/#x",
        "http://" + "a" * 2050 + ".com/",
    ],
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(UnsafeUrl):
        parse_url(url)


def _delivery(url: str, *secrets: str) -> sender.Delivery:
    payload = {"type": "notification.sent", "timestamp": "2026-11-27T00:00:00Z", "data": {"x": 1}}
    return sender.Delivery(f"msg_{uuid.uuid4().hex}", payload, url, secrets or (new_secret(),))


def _send(delivery: sender.Delivery, *, allow_private: bool, timeout: float = 3) -> sender.Answer:
    async def go() -> sender.Answer:
        async with sender.client(1, timeout) as http:
            return await sender.send(http, delivery, allow_private=allow_private, timeout=timeout)

    return asyncio.run(go())


def test_delivery_refuses_a_private_address_without_connecting(receiver):
    answer = _send(_delivery(receiver.url), allow_private=False)
    assert answer.status_code is None and not answer.succeeded and answer.unreachable
    assert answer.error and answer.error.startswith("forbidden_address")
    assert receiver.events() == []


def test_delivery_connects_to_the_checked_address_with_the_urls_host(receiver):
    secret = new_secret()
    delivery = _delivery(receiver.url, secret)
    answer = _send(delivery, allow_private=True)
    assert answer.succeeded and answer.status_code == 200 and answer.excerpt == "ok"
    [got] = receiver.events()
    assert got.headers["host"] == receiver.url.split("/")[2]  # localhost:<port>
    assert got.headers["webhook-id"] == delivery.msg_id
    assert Webhook(secret).verify(got.body, got.headers) == delivery.payload


def test_during_a_rotation_either_secret_verifies(receiver):
    new, old = new_secret(), new_secret()
    _send(_delivery(receiver.url, new, old), allow_private=True)
    [got] = receiver.events()
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(got.body, got.headers)
    Webhook(old).verify(got.body, got.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(got.body, got.headers)


def test_a_slow_answer_is_cut_at_the_timeout(receiver):
    receiver.delay = 3
    answer = _send(_delivery(receiver.url), allow_private=True, timeout=0.5)
    assert answer.status_code is None and answer.error and answer.error.startswith("timeout")
    assert answer.duration_ms < 2500


def test_a_redirect_is_not_followed(receiver):
    receiver.answer = lambda: 307
    answer = _send(_delivery(receiver.url), allow_private=True)
    assert answer.status_code == 307 and not answer.succeeded
    assert len(receiver.events()) == 1


def test_the_triggers_kinds_are_the_event_modules():
    source = (REPO / "migrations/versions/0009_status_webhooks.py").read_text()
    pairs = dict(re.findall(r'\("([a-z.]+)", "([a-z.]+)"\),', source))
    assert pairs == TIMELINE_KINDS
    assert set(TIMELINE_KINDS.values()) | set(RULE_EVENTS) == set(EVENT_TYPES)


def test_every_queue_has_consumers_in_compose_and_make_run():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    commands = " ".join(
        " ".join(service.get("command") or []) for service in compose["services"].values()
    )
    from devtools.cli import _processes, _Shape
    from shared.settings import Settings

    processes = " ".join(_processes(Settings(), _Shape(worker_concurrency=2)).values())
    for queue in QueueName:
        assert queue.value in commands, queue
        assert queue.value in processes, queue


# -- the retry and disable rules, against the real database -----------------------------------

POLICY = outbox.Policy(
    retry_schedule=(5, 60), disable_after_seconds=3600, disable_after_failed_messages=2
)


def _endpoint_with_message(enterprise_id: uuid.UUID) -> tuple[int, outbox.Message, uuid.UUID]:
    """An endpoint and one claimed message, due far in the future (beat never takes it)."""
    claim = uuid.uuid4()
    with connection() as conn, enterprise_transaction(conn, enterprise_id):
        endpoint_id = conn.scalar(
            text(
                "INSERT INTO notify.webhook_endpoint (enterprise_id, url, event_types, secret)"
                " VALUES (:e, 'http://127.0.0.1:9/x', '{notification.sent}', :s) RETURNING id"
            ),
            {"e": enterprise_id, "s": new_secret()},
        )
        message_id = conn.scalar(
            text(
                "INSERT INTO notify.webhook_message (msg_id, enterprise_id, endpoint_id,"
                " event_type, payload, next_attempt_at, claim_id, locked_until)"
                " VALUES (:m, :e, :ep, 'notification.sent', '{}', now() + interval '1 day',"
                " :c, now() + interval '1 day') RETURNING id"
            ),
            {"m": f"msg_{uuid.uuid4().hex}", "e": enterprise_id, "ep": endpoint_id, "c": claim},
        )
    message = outbox.Message(message_id, "msg_x", None, "notification.sent", {}, 0)
    return endpoint_id, message, claim


def _answer(at: dt.datetime, status: int | None) -> sender.Answer:
    return sender.Answer(at, 5, status, None, None if status else "ConnectError: refused")


def _record(enterprise_id, endpoint_id, claim, message, answer) -> outbox.Recorded:
    with connection() as conn, enterprise_transaction(conn, enterprise_id):
        return outbox.record_attempt(
            conn, enterprise_id, endpoint_id, claim, message, answer, POLICY
        )


def _endpoint(enterprise_id: uuid.UUID, endpoint_id: int) -> Any:
    with connection() as conn, enterprise_transaction(conn, enterprise_id):
        return conn.execute(
            text("SELECT * FROM notify.webhook_endpoint WHERE id = :id"), {"id": endpoint_id}
        ).one()


def test_retries_follow_the_schedule_then_the_message_fails(stack: Stack):
    enterprise_id = uuid.uuid4()
    endpoint_id, message, claim = _endpoint_with_message(enterprise_id)
    at = dt.datetime.now(dt.UTC)
    first = _record(enterprise_id, endpoint_id, claim, message, _answer(at, 500))
    assert (first.status, first.attempt) == ("pending", 1)
    assert first.next_attempt_at == at + dt.timedelta(seconds=5)
    # The claim was released with the attempt: a task must hold a new one to record again.
    with connection() as conn, enterprise_transaction(conn, enterprise_id):
        conn.execute(
            text("UPDATE notify.webhook_message SET claim_id = :c WHERE id = :id"),
            {"c": claim, "id": message.id},
        )
    second_message = outbox.Message(message.id, "msg_x", None, "notification.sent", {}, 1)
    second = _record(enterprise_id, endpoint_id, claim, second_message, _answer(at, None))
    assert (second.status, second.next_attempt_at) == ("pending", at + dt.timedelta(seconds=60))
    third_message = outbox.Message(message.id, "msg_x", None, "notification.sent", {}, 2)
    third = _record(enterprise_id, endpoint_id, claim, third_message, _answer(at, 503))
    assert (third.status, third.attempt, third.next_attempt_at) == ("failed", 3, None)
    row = _endpoint(enterprise_id, endpoint_id)
    assert row.consecutive_failures == 1 and row.failing_since == at and row.enabled


def test_a_success_clears_the_failure_record(stack: Stack):
    enterprise_id = uuid.uuid4()
    endpoint_id, message, claim = _endpoint_with_message(enterprise_id)
    at = dt.datetime.now(dt.UTC)
    _record(enterprise_id, endpoint_id, claim, message, _answer(at, 500))
    assert _endpoint(enterprise_id, endpoint_id).failing_since == at
    later = outbox.Message(message.id, "msg_x", None, "notification.sent", {}, 1)
    _record(enterprise_id, endpoint_id, claim, later, _answer(at, 200))
    row = _endpoint(enterprise_id, endpoint_id)
    assert row.failing_since is None and row.consecutive_failures == 0


def test_an_endpoint_failing_for_longer_than_the_limit_is_disabled(stack: Stack):
    enterprise_id = uuid.uuid4()
    endpoint_id, message, claim = _endpoint_with_message(enterprise_id)
    start = dt.datetime.now(dt.UTC)
    assert (
        _record(enterprise_id, endpoint_id, claim, message, _answer(start, 500)).disabled_reason
        is None
    )
    later = outbox.Message(message.id, "msg_x", None, "notification.sent", {}, 1)
    recorded = _record(
        enterprise_id, endpoint_id, claim, later, _answer(start + dt.timedelta(hours=2), 500)
    )
    assert recorded.disabled_reason and "every attempt has failed since" in recorded.disabled_reason
    row = _endpoint(enterprise_id, endpoint_id)
    assert not row.enabled and row.disabled_reason == recorded.disabled_reason


def test_claims_respect_the_endpoint_and_enterprise_limits(stack: Stack):
    # All in one transaction that is rolled back: the test stack's beat, if running, sees none
    # of these rows, and claim_due takes the dispatch lock inside it.
    busy, calm = uuid.uuid4(), uuid.uuid4()
    with connection() as conn, conn.begin() as outer:
        endpoints: dict[int, uuid.UUID] = {}
        for enterprise_id, count in ((busy, 3), (calm, 1)):
            for _ in range(count):
                endpoint_id = conn.scalar(
                    text(
                        "INSERT INTO notify.webhook_endpoint"
                        " (enterprise_id, url, event_types, secret)"
                        " VALUES (:e, 'http://x', '{notification.sent}', 'whsec_x') RETURNING id"
                    ),
                    {"e": enterprise_id},
                )
                endpoints[endpoint_id] = enterprise_id
                conn.execute(
                    text(
                        "INSERT INTO notify.webhook_message (msg_id, enterprise_id, endpoint_id,"
                        " event_type, payload) SELECT 'msg_' || md5(random()::text), :e, :ep,"
                        " 'notification.sent', '{}' FROM generate_series(1, 5)"
                    ),
                    {"e": enterprise_id, "ep": endpoint_id},
                )

        def claim() -> list[outbox.Claim]:
            found = outbox.claim_due(
                conn, batch_size=2, max_in_flight=2, max_in_flight_enterprise=2, lease_seconds=60
            )
            return [c for c in found if c.endpoint_id in endpoints]

        first = claim()
        # The busy enterprise's three endpoints share two claims; the calm one gets its own.
        assert sorted(str(c.enterprise_id) for c in first) == sorted(
            [str(busy), str(busy), str(calm)]
        )
        # Busy is at its enterprise limit; calm's endpoint takes its second claim.
        [calm_endpoint] = [e for e, owner in endpoints.items() if owner == calm]
        assert [(c.enterprise_id, c.endpoint_id) for c in claim()] == [(calm, calm_endpoint)]
        assert claim() == []  # calm's endpoint is at its own limit, busy at the enterprise's
        held = conn.scalar(
            text(
                "SELECT count(*) FROM notify.webhook_message"
                " WHERE endpoint_id = ANY(:ids) AND claim_id IS NOT NULL"
            ),
            {"ids": list(endpoints)},
        )
        assert held == 4 * 2  # four claims of two messages each
        outer.rollback()


def test_row_level_security_hides_another_enterprises_webhooks(stack: Stack):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    endpoint_id, message, claim = _endpoint_with_message(theirs)
    _record(theirs, endpoint_id, claim, message, _answer(dt.datetime.now(dt.UTC), 500))
    with connection() as conn, enterprise_transaction(conn, mine):
        for table in ("webhook_endpoint", "webhook_message", "webhook_attempt"):
            assert conn.scalar(text(f"SELECT count(*) FROM notify.{table}")) == 0, table
    with connection() as conn, enterprise_transaction(conn, theirs):
        assert conn.scalar(text("SELECT count(*) FROM notify.webhook_attempt")) == 1
    with (
        pytest.raises(ProgrammingError, match="row-level security"),
        connection() as conn,
        enterprise_transaction(conn, mine),
    ):
        conn.execute(
            text(
                "INSERT INTO notify.webhook_endpoint (enterprise_id, url, event_types, secret)"
                " VALUES (:e, 'http://x', '{notification.sent}', 'whsec_x')"
            ),
            {"e": theirs},
        )
