"""What reaches Novu for a notification, end to end (API → PostgreSQL → Redis → celery worker →
the Novu emulator): recipients as Novu's `to`, and an event within Novu's 512 KB whatever its
templates render (docs/architecture.md, "Recipients" and "Size")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from api.bridge.signature import sign
from shared.settings import get_settings
from tests.conftest import make_tenant, signup_payload, wait_for_status
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration
novu_models = pytest.importorskip("novu_py.models")
novu_utils = pytest.importorskip("novu_py.utils")

NOVU_EVENT_MAX_BYTES = 524_288


@contextmanager
def _known_to_novu(emulator: Any, workflow_id: str) -> Iterator[None]:
    """Novu knows the workflow while the test runs: synced already, or made known as one made
    in Novu's dashboard (and forgotten afterwards). These tests are about the event, not the
    sync (tests/worker/test_novu_sync.py)."""
    known = {w["workflowId"] for w in emulator.get("/_emulator/workflows").json()}
    if workflow_id in known:
        yield
        return
    steps = [{"stepId": "email", "type": "email"}, {"stepId": "in_app", "type": "in_app"}]
    response = emulator.put(f"/_emulator/workflows/{workflow_id}", json={"steps": steps})
    assert response.status_code in (200, 201), response.text
    try:
        yield
    finally:
        emulator.delete(f"/_emulator/workflows/{workflow_id}")


def _delivered(client: Any, tenant: Any, emulator: Any, body: dict[str, Any]) -> Any:
    """Trigger `body` and wait for SENT: its id, and the one event Novu received for it."""
    with _known_to_novu(emulator, body["workflowId"]):
        response = client.post("/api/trigger", json=body, headers=tenant.headers)
        assert response.status_code == 202, response.text
        accepted = response.json()
        row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"}, 60)
    assert row["notification_status"] == "SENT", row
    events = emulator.get(
        "/_emulator/events", params={"transactionId": accepted["transactionId"]}
    ).json()
    assert len(events) == 1, events
    return accepted["notificationId"], events[0]


def test_subscriber_objects_and_topics_reach_novu_in_the_enterprises_namespace(
    client, tenant, worker, emulator
):
    payload = signup_payload()
    grace = {
        "subscriberId": "grace-1906",
        "email": "grace@example.com",
        "firstName": "Grace",
        "locale": "en-US",
        "timezone": "America/New_York",
        "data": {"plan": "pro"},
    }
    topic = {"type": "Topic", "topicKey": "building-7", "exclude": ["plain-id"]}
    # A null field is "not given"; the payload's own user is sent as the subscriber object the
    # workflow derives from the payload.
    recipients = [
        grace,
        "plain-id",
        topic,
        {"subscriberId": "alan", "phone": None},
        payload["userId"],
    ]
    notification_id, event = _delivered(
        client,
        tenant,
        emulator,
        {"workflowId": "user-signup", "payload": payload, "recipients": recipients},
    )
    ours = f"{tenant.enterprise_id}_"
    assert event["to"] == [
        {**grace, "subscriberId": ours + "grace-1906"},
        ours + "plain-id",
        {"type": "Topic", "topicKey": ours + "building-7", "exclude": [ours + "plain-id"]},
        {"subscriberId": ours + "alan"},
        {
            "subscriberId": ours + payload["userId"],
            "email": payload["email"],
            "firstName": "Ada Lovelace",
        },
    ]
    # The caller's ids stay the caller's: stored and read back exactly as given.
    read = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers)
    assert read.json()["recipients"] == recipients
    # Novu's own SDK reads the body as a trigger and writes it back the same.
    sdk = novu_models.TriggerEventRequestDto
    body = event_body(event)
    assert json.loads(novu_utils.marshal_json(sdk.model_validate(body), sdk)) == body


# --- subscriber isolation: Novu's subscribers are global to its environment (issue 12) ---------


def _novu_subscriber(emulator: Any, subscriber_id: str) -> dict[str, Any] | None:
    """Novu's subscriber of that id as the triggers left it, or None when Novu has none."""
    found = emulator.get("/_emulator/subscribers", params={"subscriberId": subscriber_id}).json()
    return found[0] if found else None


def test_another_enterprise_naming_the_same_user_reaches_its_own_novu_subscriber(
    client, worker, emulator
):
    """Enterprise B triggers user-signup for A's user with its own address: Novu receives it
    for B's subscriber, and A's subscriber keeps A's address."""
    a, b = make_tenant(), make_tenant()
    user = f"u-{uuid.uuid4().hex[:8]}"
    _, from_a = _delivered(
        client,
        a,
        emulator,
        {
            "workflowId": "user-signup",
            "payload": {"userId": user, "email": "ada@example.com", "name": "Ada"},
        },
    )
    _, from_b = _delivered(
        client,
        b,
        emulator,
        {
            "workflowId": "user-signup",
            "payload": {"userId": user, "email": "attacker@example.com", "name": "Eve"},
        },
    )
    a_id, b_id = f"{a.enterprise_id}_{user}", f"{b.enterprise_id}_{user}"
    assert from_a["to"] == [{"subscriberId": a_id, "email": "ada@example.com", "firstName": "Ada"}]
    assert [r["subscriberId"] for r in from_b["to"]] == [b_id]
    assert _novu_subscriber(emulator, a_id) == {
        "subscriberId": a_id,
        "email": "ada@example.com",
        "firstName": "Ada",
    }
    assert (_novu_subscriber(emulator, b_id) or {}).get("email") == "attacker@example.com"
    assert _novu_subscriber(emulator, user) is None  # no bare id reaches Novu


def test_an_enterprise_id_named_by_another_enterprise_is_not_that_enterprises_subscriber(
    client, worker, emulator
):
    """The issue's attack: A's alerts go to A's own subscriber (the fallback recipient, its
    enterprise id); B triggers with `userId` = A's enterprise id and its own email. B's
    trigger reaches another subscriber, and A's is left as it was."""
    a, b = make_tenant(), make_tenant()
    key = f"alert-{uuid.uuid4().hex[:8]}"
    create_workflow(client, a, key, publish=True, IN_APP=create_template(client, a, "IN_APP"))
    _, alert = _delivered(
        client, a, emulator, {"workflowId": key, "payload": {"buildingId": "B-1", "message": "hi"}}
    )
    own = f"{a.enterprise_id}_{a.enterprise_id}"
    assert alert["to"] == [own]

    _, attack = _delivered(
        client,
        b,
        emulator,
        {
            "workflowId": "user-signup",
            "payload": {
                "userId": str(a.enterprise_id),
                "email": "attacker@example.com",
                "name": "Eve",
            },
        },
    )
    assert attack["to"] == [
        {
            "subscriberId": f"{b.enterprise_id}_{a.enterprise_id}",
            "email": "attacker@example.com",
            "firstName": "Eve",
        }
    ]
    assert _novu_subscriber(emulator, own) == {"subscriberId": own}
    assert _novu_subscriber(emulator, str(a.enterprise_id)) is None


def test_an_event_its_rendered_content_would_push_over_512_kb_is_sent_without_it(
    client, tenant, worker, emulator
):
    """Each channel repeats the payload's 50 KB six times: 600 KB rendered, which would make a
    Novu 413 of an event of 50 KB. The event goes without it, and the bridge renders each step
    from the payload when Novu executes it."""
    repeat = "{% for _ in range(6) %}{{ blob }}{% endfor %}"
    email = create_template(client, tenant, "EMAIL", subject="Big {{ size }}", body=repeat)
    in_app = create_template(client, tenant, "IN_APP", subject="Big", body=repeat)
    key = f"big-render-{uuid.uuid4().hex[:8]}"
    create_workflow(client, tenant, key, publish=True, EMAIL=email, IN_APP=in_app)
    blob = "b" * 50_000
    _, event = _delivered(
        client,
        tenant,
        emulator,
        {"workflowId": key, "payload": {"blob": blob, "size": "50k"}, "recipients": ["big-1"]},
    )
    size = len(json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=False).encode())
    assert 50_000 < size <= NOVU_EVENT_MAX_BYTES
    metadata = event["payload"]["_xnovu"]
    assert "rendered" not in metadata
    assert metadata["channels"] == ["email", "in_app"]

    # Novu executes the email step on our bridge with the payload it received.
    step = {
        "payload": event["payload"],
        "controls": {},
        "state": [],
        "subscriber": {"subscriberId": "big-1"},
        "workflowId": key,
        "stepId": "email",
        "action": "execute",
    }
    body = json.dumps(step, separators=(",", ":")).encode()
    secret = get_settings().effective_novu_secret_key
    executed = client.post(
        "/api/novu",
        params={"action": "execute", "workflowId": key, "stepId": "email"},
        content=body,
        headers={"content-type": "application/json", "novu-signature": sign(secret, body)},
    )
    assert executed.status_code == 200, executed.text[:500]
    assert executed.json()["outputs"] == {"subject": "Big 50k", "body": blob * 6}


def test_rendered_content_that_fits_still_rides_in_the_event(client, tenant, worker, emulator):
    body = {"workflowId": "user-signup", "payload": signup_payload()}
    rendered = _delivered(client, tenant, emulator, body)[1]["payload"]["_xnovu"]["rendered"]
    assert rendered["email"]["subject"] == "Welcome to XNovu, Ada Lovelace!"


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    """The trigger body Novu received, without the emulator's own bookkeeping."""
    return {
        key: event[key]
        for key in ("name", "to", "payload", "overrides", "transactionId")
        if event.get(key) is not None
    }
