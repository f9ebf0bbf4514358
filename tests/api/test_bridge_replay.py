"""Replaying a signed bridge request (issue 12, item 9; docs/architecture.md, "The bridge").

Novu signs only the body (`t.body`), not the query that names the workflow and step, and a
signature is good for five minutes, as in @novu/framework. Novu computes the header once per
bridge request and its HTTP client retries 408, 429, 5xx, timeouts and dropped connections
with that same header and body, so a cache refusing a signature seen before would refuse
Novu's own retry after a lost answer. The decision: no replay cache. What a replay can do is
bounded instead, and these tests hold it there: Novu's repeats are answered alike; a captured
signature carries only its own body (its enterprise and payload); `execute` writes nothing;
and once its five minutes are over the same request is refused.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text

from api.bridge.protocol import SIGNATURE_TOLERANCE_MS
from api.bridge.signature import sign
from shared.db.session import transaction
from tests.api.test_novu_bridge import BRIDGE, assert_bridge_error, building, compact, event, secret
from tests.conftest import make_tenant

__all__ = ["building"]  # the fixture, used by name

TENANT_TABLES = (
    "ent_notification",
    "ent_notification_template",
    "ent_notification_workflow",
    "ent_notification_rule",
    "ent_api_key",
)


def _captured(building: dict[str, Any], **payload: Any) -> tuple[bytes, str]:
    """A signed execute body of the building's enterprise, as it travels from Novu."""
    tenant = building["tenant"]
    body = compact(
        event(
            {
                "buildingId": "b-1",
                "message": "Smoke",
                "_xnovu": {"enterpriseId": str(tenant.enterprise_id)},
                **payload,
            }
        )
    )
    return body, sign(secret(), body)


def _send(client: Any, body: bytes, header: str, workflow_id: str, step_id: str) -> Any:
    return client.post(
        BRIDGE,
        params={"action": "execute", "workflowId": workflow_id, "stepId": step_id},
        content=body,
        headers={"content-type": "application/json", "novu-signature": header},
    )


def test_novus_retries_of_one_signed_request_are_answered_alike(
    client: Any, building: dict[str, Any]
) -> None:
    body, header = _captured(building)
    # The first call and Novu's three retries (DEFAULT_RETRIES_LIMIT), same header and body.
    answers = [_send(client, body, header, building["key"], "email") for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4, answers[-1].text
    outputs = {(repr(a.json()["outputs"]), repr(a.json()["options"])) for a in answers}
    assert len(outputs) == 1


def test_a_captured_signature_carries_only_its_own_enterprise_and_payload(
    client: Any, building: dict[str, Any]
) -> None:
    body, header = _captured(building)
    other = make_tenant()
    elsewhere = body.replace(
        str(building["tenant"].enterprise_id).encode(), str(other.enterprise_id).encode()
    )
    assert elsewhere != body
    moved = _send(client, elsewhere, header, building["key"], "email")
    assert_bridge_error(moved, 401, "SignatureMismatchError")
    changed = _send(client, body.replace(b"Smoke", b"Fire!"), header, building["key"], "email")
    assert_bridge_error(changed, 401, "SignatureMismatchError")


def _tenant_rows(enterprise_id: uuid.UUID) -> dict[str, list[Any]]:
    with transaction() as session:
        return {
            table: sorted(
                repr(tuple(row))
                for row in session.execute(
                    text(f"SELECT * FROM notify.{table} WHERE enterprise_id = :e"),
                    {"e": enterprise_id},
                )
            )
            for table in TENANT_TABLES
        }


def test_a_replayed_execute_changes_nothing(client: Any, building: dict[str, Any]) -> None:
    """The query is not signed: a replay may name any step of the enterprise's workflows, and
    gets what Novu would have got for this payload; nothing is recorded or sent."""
    enterprise_id = building["tenant"].enterprise_id
    before = _tenant_rows(enterprise_id)
    body, header = _captured(building)
    for step_id in ("email", "in_app", "sms", "email"):
        _send(client, body, header, building["key"], step_id)
    _send(client, body, header, "user-signup", "email")
    assert _tenant_rows(enterprise_id) == before


def test_the_same_request_is_refused_once_its_five_minutes_are_over(
    client: Any, building: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body, header = _captured(building)
    assert _send(client, body, header, building["key"], "email").status_code == 200
    later = time.time() + SIGNATURE_TOLERANCE_MS / 1000 + 1
    # The bridge's clock only: the same header, five minutes and a second after it was signed.
    monkeypatch.setattr("api.bridge.signature.time", SimpleNamespace(time=lambda: later))
    replayed = _send(client, body, header, building["key"], "email")
    assert_bridge_error(replayed, 401, "SignatureExpiredError")
