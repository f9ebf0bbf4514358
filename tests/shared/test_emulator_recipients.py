"""The emulator checks recipients as Novu's trigger does, and keeps Novu's subscribers as
triggers create and update them (what subscriber isolation is tested against)."""

from __future__ import annotations

import uuid

from tests.shared.test_emulator import EmulatedNovu, make_event
from tests.shared.test_emulator import novu as novu  # the fixture

ENTERPRISE = uuid.UUID("6f1c2a9e-0d4b-4c51-9a38-2f7e5b1d8c40")


def test_recipients_outside_novus_subscriber_id_rule_are_dropped(novu: EmulatedNovu) -> None:
    to = [
        "ok-1",
        "has space",
        {"subscriberId": "slash/id", "email": "x@example.com"},
        {"type": "Topic", "topicKey": "team #1"},
        "  padded  ",
        {"subscriberId": "ada@example.com"},
    ]
    response = novu.trigger(make_event(to=to))

    assert response.status_code == 201
    assert response.json()["data"]["status"] == "processed"
    [recorded] = novu.events()
    # Novu trims an id before its check and keeps the trimmed one.
    assert recorded["to"] == ["ok-1", "padded", {"subscriberId": "ada@example.com"}]
    assert novu.stats()["recipientsDropped"] == 3


def test_a_trigger_left_without_a_valid_recipient_is_invalid_recipients(
    novu: EmulatedNovu,
) -> None:
    for to in ("has space", ["a/b", {"subscriberId": "c d"}], {"type": "Topic", "topicKey": "?"}):
        event = make_event(to=to)
        response = novu.trigger(event)
        assert response.status_code == 201
        assert response.json()["data"] == {
            "acknowledged": True,
            "status": "invalid_recipients",
            "transactionId": event["transactionId"],
        }
    assert novu.events() == []


def test_enterprise_namespaced_ids_pass_novus_rule(novu: EmulatedNovu) -> None:
    to = [
        f"{ENTERPRISE}_user-42",
        f"{ENTERPRISE}_ada.lovelace+news@example.com",
        {"subscriberId": f"{ENTERPRISE}_{ENTERPRISE}", "email": "ops@example.com"},
        {"type": "Topic", "topicKey": f"{ENTERPRISE}_building-7"},
    ]
    assert novu.trigger(make_event(to=to)).status_code == 201
    assert novu.events()[0]["to"] == to
    assert novu.stats()["recipientsDropped"] == 0


def test_a_trigger_creates_the_subscribers_it_names_and_updates_them_inline(
    novu: EmulatedNovu,
) -> None:
    novu.trigger(make_event(to=[{"subscriberId": "s-1", "email": "ada@example.com"}, "s-2"]))
    novu.trigger(make_event(to={"subscriberId": "s-1", "email": "eve@example.com"}))
    novu.trigger(make_event(to="s-1"))  # a bare id leaves the subscriber as it is

    subscribers = novu.http.get("/_emulator/subscribers").json()
    assert subscribers == [
        {"subscriberId": "s-1", "email": "eve@example.com"},
        {"subscriberId": "s-2"},
    ]
    one = novu.http.get("/_emulator/subscribers", params={"subscriberId": "s-2"}).json()
    assert one == [{"subscriberId": "s-2"}]
    assert novu.http.post("/_emulator/reset").status_code == 200
    assert novu.http.get("/_emulator/subscribers").json() == []
