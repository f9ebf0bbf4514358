"""`POST /api/novu/webhooks`: Novu's message webhooks, verified (Standard Webhooks, as Svix signs
them), de-duplicated by svix-id, linked to the notification by transactionId only within the
enterprise's subscriber namespace, and summed up per channel on the notification."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select
from standardwebhooks.webhooks import Webhook

from shared.db.models import Notification, NotificationEvent, NovuDeliveryEvent
from shared.db.session import transaction
from shared.novu.delivery_events import MAX_BODY_BYTES, MAX_DEPTH
from shared.settings import get_settings, new_webhook_secret
from tests.conftest import Tenant
from tests.factories import api_error
from tests.rows import insert_notification

URL = "/api/novu/webhooks"
LATER = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)


def secret() -> str:
    return os.environ["NOVU_WEBHOOK_SECRET"]


def novu_event(
    event_type: str,
    transaction_id: str,
    subscriber_id: str,
    *,
    channel: str = "email",
    at: str = "2026-11-27T10:00:00.000Z",
    **message: Any,
) -> dict[str, Any]:
    """A body as Novu's SendWebhookMessage builds it (messageWebhookMapper's message)."""
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "type": event_type,
        "object": "message",
        "timestamp": at,
        "environmentId": "env-1",
        "data": {
            "object": {
                "_id": uuid.uuid4().hex[:24],
                "subscriberId": subscriber_id,
                "transactionId": transaction_id,
                "channel": channel,
                "stepId": f"{channel}-step",
                "workflowId": "user-signup",
                "templateIdentifier": "user-signup",
                "providerId": "sendgrid",
                "status": "sent",
                **message,
            }
        },
    }


def signed(
    body: dict[str, Any] | bytes,
    *,
    key: str | None = None,
    msg_id: str | None = None,
    at: dt.datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The raw body and Svix's headers for it, signed by standardwebhooks."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex[:27]}"
    at = at or dt.datetime.now(dt.UTC)
    signature = Webhook(key or secret()).sign(msg_id, at, raw.decode())
    return raw, {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


def post(client: Any, raw: bytes, headers: dict[str, str]) -> Any:
    return client.post(URL, content=raw, headers=headers)


def notification(tenant: Tenant) -> tuple[int, str]:
    """A PENDING row of the tenant, scheduled far away so no worker sends it meanwhile."""
    row = insert_notification(tenant.enterprise_id, recipients=["user-1"], scheduled_for=LATER)
    return row.notification_id, row.transaction_id


def subscriber(tenant: Tenant, user: str = "user-1") -> str:
    return f"{tenant.enterprise_id}_{user}"


def recorded(notification_id: int) -> list[NovuDeliveryEvent]:
    with transaction() as session:
        return list(
            session.scalars(
                select(NovuDeliveryEvent)
                .where(NovuDeliveryEvent.notification_id == notification_id)
                .order_by(NovuDeliveryEvent.id)
            )
        )


def timeline(notification_id: int) -> list[NotificationEvent]:
    with transaction() as session:
        return list(
            session.scalars(
                select(NotificationEvent)
                .where(
                    NotificationEvent.notification_id == notification_id,
                    NotificationEvent.kind.startswith("delivery."),
                )
                .order_by(NotificationEvent.id)
            )
        )


def test_a_verified_event_is_recorded_with_its_timeline_event(client, tenant):
    notification_id, transaction_id = notification(tenant)
    body = novu_event(
        "message.sent", transaction_id, subscriber(tenant), providerResponseId="prov-1"
    )
    raw, headers = signed(body)
    response = post(client, raw, headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "recorded"}

    [row] = recorded(notification_id)
    assert row.enterprise_id == tenant.enterprise_id
    assert row.svix_id == headers["svix-id"]
    assert (row.event_type, row.channel, row.step_id) == ("message.sent", "email", "email-step")
    # The caller's id, without the enterprise's namespace.
    assert row.subscriber_id == "user-1"
    assert row.provider_id == "sendgrid"
    assert row.novu_message_id == body["data"]["object"]["_id"]
    assert row.occurred_at == dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
    assert row.detail is not None and row.detail["providerResponseId"] == "prov-1"
    assert row.detail["workflowId"] == "user-signup"

    [event] = timeline(notification_id)
    assert event.kind == "delivery.message.sent"
    assert event.enterprise_id == tenant.enterprise_id
    assert event.detail is not None
    assert event.detail["channel"] == "email" and event.detail["subscriberId"] == "user-1"


def test_the_notification_shows_each_channels_latest_event(client, tenant):
    notification_id, transaction_id = notification(tenant)
    sub = subscriber(tenant)
    for event in (
        novu_event("message.sent", transaction_id, sub, at="2026-11-27T10:00:00Z"),
        novu_event("message.delivered", transaction_id, sub, at="2026-11-27T10:00:05Z"),
        # Svix does not keep order: a late `sent` does not hide the `delivered` after it.
        novu_event("message.sent", transaction_id, sub, at="2026-11-27T10:00:01Z"),
        novu_event("message.failed", transaction_id, sub, channel="sms", status="error"),
    ):
        assert post(client, *signed(event)).json() == {"status": "recorded"}

    read = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers).json()
    assert read["delivery"] == {
        "email": {
            "status": "delivered",
            "at": "2026-11-27T10:00:05Z",
            "events": 3,
            "byType": {"message.sent": 2, "message.delivered": 1},
        },
        "sms": {
            "status": "failed",
            "at": "2026-11-27T10:00:00Z",
            "events": 1,
            "byType": {"message.failed": 1},
        },
    }
    # Lists do not carry it (one query per page would be one per row).
    listed = client.get("/api/notifications", headers=tenant.headers).json()["items"]
    assert [item["delivery"] for item in listed if item["id"] == notification_id] == [None]


def test_a_notification_without_events_has_an_empty_summary(client, tenant):
    notification_id, _ = notification(tenant)
    read = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers).json()
    assert read["delivery"] == {}


def test_a_replayed_webhook_is_recorded_once(client, tenant):
    notification_id, transaction_id = notification(tenant)
    raw, headers = signed(novu_event("message.sent", transaction_id, subscriber(tenant)))
    assert post(client, raw, headers).json() == {"status": "recorded"}
    # Svix's retry (or a capture sent again within the tolerance): same id, same signature.
    again = post(client, raw, headers)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    # Re-signed at another time (Svix signs each attempt anew): still the same message.
    raw, later = signed(raw, msg_id=headers["svix-id"])
    assert post(client, raw, later).json() == {"status": "duplicate"}
    assert len(recorded(notification_id)) == 1
    assert len(timeline(notification_id)) == 1


def test_a_tampered_body_is_refused(client, tenant):
    notification_id, transaction_id = notification(tenant)
    other_id, other_transaction = notification(tenant)
    raw, headers = signed(novu_event("message.sent", transaction_id, subscriber(tenant)))
    tampered = raw.replace(transaction_id.encode(), other_transaction.encode())
    assert tampered != raw
    api_error(post(client, tampered, headers), 401, "signature_invalid")
    # A reused svix-id with a tampered body still fails the signature.
    api_error(post(client, tampered, headers), 401, "signature_invalid")
    assert recorded(notification_id) == [] and recorded(other_id) == []


@pytest.mark.parametrize("minutes", [-6, 6])
def test_a_timestamp_outside_five_minutes_is_refused(client, tenant, minutes):
    notification_id, transaction_id = notification(tenant)
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    raw, headers = signed(novu_event("message.sent", transaction_id, subscriber(tenant)), at=at)
    api_error(post(client, raw, headers), 401, "timestamp_out_of_tolerance")
    assert recorded(notification_id) == []


def test_signatures_that_are_missing_wrong_or_malformed_are_refused(client, tenant):
    notification_id, transaction_id = notification(tenant)
    raw, headers = signed(novu_event("message.sent", transaction_id, subscriber(tenant)))
    for name in ("svix-id", "svix-timestamp", "svix-signature"):
        missing = {k: v for k, v in headers.items() if k != name}
        api_error(post(client, raw, missing), 401, "signature_missing")
    _, wrong_key = signed(raw, key=new_webhook_secret(), msg_id=headers["svix-id"])
    api_error(post(client, raw, wrong_key), 401, "signature_invalid")
    for signature in ("v1", "v1,!!!not-base64", "garbage", "v1,a,b", "v2,abcd"):
        bad = {**headers, "svix-signature": signature}
        api_error(post(client, raw, bad), 401, "signature_invalid")
    for timestamp in ("soon", "nan", "1e400", ""):
        bad = {**headers, "svix-timestamp": timestamp}
        error = post(client, raw, bad)
        assert error.status_code == 401, error.text
    # Bytes that are not UTF-8 cannot carry a signature.
    api_error(post(client, b"\xff\xfe" + raw, headers), 401, "signature_invalid")
    # Standard Webhooks' own header names are taken too.
    standard = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    assert post(client, raw, standard).json() == {"status": "recorded"}
    assert len(recorded(notification_id)) == 1


def test_bodies_too_large_or_too_deep_are_refused(client, tenant):
    _, transaction_id = notification(tenant)
    body = novu_event("message.sent", transaction_id, subscriber(tenant))
    body["data"]["object"]["padding"] = "x" * MAX_BODY_BYTES
    api_error(post(client, *signed(body)), 413, "payload_too_large")

    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = {"a": deep}
    body = novu_event("message.sent", transaction_id, subscriber(tenant), extra=deep)
    api_error(post(client, *signed(body)), 400, "invalid_webhook")
    # Deeper than the JSON parser goes: still a 400, never a 500.
    raw = b'{"type":"message.sent","data":' + b"[" * 5000 + b"]" * 5000 + b"}"
    api_error(post(client, *signed(raw)), 400, "invalid_json")
    api_error(post(client, *signed(b"not json")), 400, "invalid_json")
    api_error(post(client, *signed(b'["a list"]')), 400, "invalid_webhook")
    api_error(post(client, *signed({"type": "message.sent"})), 400, "invalid_webhook")
    api_error(
        post(client, *signed({"type": "message.Bad Type", "data": {}})), 400, "invalid_webhook"
    )


def test_an_event_about_another_namespace_is_not_recorded(client, tenant):
    notification_id, transaction_id = notification(tenant)
    other = uuid.uuid4()
    for sub in (f"{other}_user-1", "user-1", f"{tenant.enterprise_id}user-1"):
        body = novu_event("message.sent", transaction_id, sub)
        response = post(client, *signed(body))
        assert response.status_code == 200
        assert response.json() == {"status": "foreign_subscriber"}
    body = novu_event("message.sent", transaction_id, subscriber(tenant))
    del body["data"]["object"]["subscriberId"]
    assert post(client, *signed(body)).json() == {"status": "foreign_subscriber"}
    assert recorded(notification_id) == [] and timeline(notification_id) == []


def test_events_we_do_not_know_are_answered_and_ignored(client, tenant):
    unknown = novu_event("message.sent", f"tx-{uuid.uuid4()}", subscriber(tenant))
    assert post(client, *signed(unknown)).json() == {"status": "unknown_transaction"}
    workflow = {"type": "workflow.updated", "object": "workflow", "data": {"object": {}}}
    assert post(client, *signed(workflow)).json() == {"status": "ignored"}
    no_transaction = novu_event("message.sent", "x", subscriber(tenant))
    del no_transaction["data"]["object"]["transactionId"]
    assert post(client, *signed(no_transaction)).json() == {"status": "ignored"}
    # A message event type Novu adds later is kept as it comes.
    notification_id, transaction_id = notification(tenant)
    snoozed = novu_event("message.snoozed", transaction_id, subscriber(tenant), channel="in_app")
    assert post(client, *signed(snoozed)).json() == {"status": "recorded"}
    assert [row.event_type for row in recorded(notification_id)] == ["message.snoozed"]


def test_without_a_secret_every_webhook_is_refused(client, tenant, monkeypatch):
    _, transaction_id = notification(tenant)
    raw, headers = signed(novu_event("message.sent", transaction_id, subscriber(tenant)))
    monkeypatch.setattr(get_settings(), "novu_webhook_secret", None)
    api_error(post(client, raw, headers), 403, "novu_webhooks_disabled")


def test_the_secret_setting_must_be_a_standard_webhooks_secret():
    from pydantic import ValidationError

    from shared.settings import Settings

    for bad in ("plain", "whsec_", "whsec_!!!", "whsec_" + "QUJD"):
        with pytest.raises(ValidationError):
            Settings.model_validate({"NOVU_WEBHOOK_SECRET": bad})
    assert Settings.model_validate({"NOVU_WEBHOOK_SECRET": ""}).novu_webhook_secret is None
    good = new_webhook_secret()
    read = Settings.model_validate({"NOVU_WEBHOOK_SECRET": good}).novu_webhook_secret
    assert read is not None and read.get_secret_value() == good


def test_another_enterprise_sees_none_of_the_events(client, tenant):
    from tests.conftest import make_tenant

    notification_id, transaction_id = notification(tenant)
    post(client, *signed(novu_event("message.sent", transaction_id, subscriber(tenant))))
    other = make_tenant()
    with transaction(other.enterprise_id) as session:
        seen = session.scalar(select(func.count()).select_from(NovuDeliveryEvent))
    assert seen == 0
    with transaction(tenant.enterprise_id) as session:
        mine = session.scalar(
            select(func.count())
            .select_from(NovuDeliveryEvent)
            .where(NovuDeliveryEvent.notification_id == notification_id)
        )
    assert mine == 1
    api_error(
        client.get(f"/api/notifications/{notification_id}", headers=other.headers),
        404,
        "not_found",
    )


def test_one_webhook_delivered_many_times_at_once_is_recorded_once(stack, bridge_process, tenant):
    notification_id, transaction_id = notification(tenant)
    raw, headers = signed(novu_event("message.sent", transaction_id, subscriber(tenant)))
    url = f"{bridge_process.url}{URL}"

    def deliver(_: int) -> str:
        answer = httpx.post(url, content=raw, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["status"])

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(deliver, range(8)))
    assert outcomes == ["duplicate"] * 7 + ["recorded"]
    assert len(recorded(notification_id)) == 1
    assert len(timeline(notification_id)) == 1


def test_the_events_go_with_their_notification(client, tenant):
    notification_id, transaction_id = notification(tenant)
    post(client, *signed(novu_event("message.sent", transaction_id, subscriber(tenant))))
    assert len(recorded(notification_id)) == 1
    # As retention removes a finished notification (the owner's rights; a foreign key cascade).
    with transaction() as session:
        session.execute(delete(Notification).where(Notification.id == notification_id))
    assert recorded(notification_id) == []
