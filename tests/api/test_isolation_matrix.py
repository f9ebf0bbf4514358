"""Who may do what: every endpoint, every kind of caller, with the status each cell expects.

The owner enterprise's rows (templates, workflows, notifications) are created fresh for each
cell by the factories, as the owner. The callers:

- `own`:       the owner's enterprise key
- `own>other`: the owner's key naming another enterprise (X-Enterprise-Id, or the trigger's
               body `enterpriseId`): 403, the key cannot act for it
- `other`:     another enterprise's key: the owner's ids are 404, lists are empty
- `svc>own`:   a service key naming the owner enterprise: as the owner
- `svc>other`: a service key naming another enterprise: as `other`
- `svc`:       a service key naming no enterprise: 400
- `none`, `revoked`, `malformed`: no Authorization, the owner's revoked key, a header that
               is not `Bearer <key>`: 401

Whenever a cell is refused, the owner's row is checked to be unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import update

from shared.apikeys import create_api_key, revoke_api_key
from shared.db.enums import ApiKeyScope, NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from tests.conftest import Tenant, make_tenant, signup_payload
from tests.factories import create_template, create_workflow

CALLERS = [
    "own",
    "own>other",
    "other",
    "svc>own",
    "svc>other",
    "svc",
    "none",
    "revoked",
    "malformed",
]

# fmt: off
MATRIX: list[tuple[str, int, int, int, int, int, int, int, int, int]] = [
    # endpoint                own  own>other other svc>own svc>other svc  none revoked malformed
    ("trigger",               202, 403,      404,  202,    404,      400, 401, 401,    401),
    ("notifications.list",    200, 403,      200,  200,    200,      400, 401, 401,    401),
    ("notifications.get",     200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("notifications.cancel",  200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("notifications.retry",   202, 403,      404,  202,    404,      400, 401, 401,    401),
    ("workflows.list",        200, 403,      200,  200,    200,      400, 401, 401,    401),
    ("workflows.get",         200, 403,      404,  200,    404,      400, 401, 401,    401),
    # another enterprise cannot use the owner's template in its own workflow
    ("workflows.create",      201, 403,      422,  201,    422,      400, 401, 401,    401),
    ("workflows.patch",       200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("workflows.publish",     200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("workflows.unpublish",   200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("workflows.deactivate",  200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("workflows.reload",      200, 403,      200,  200,    200,      400, 401, 401,    401),
    ("templates.list",        200, 403,      200,  200,    200,      400, 401, 401,    401),
    ("templates.get",         200, 403,      404,  200,    404,      400, 401, 401,    401),
    # the owner's template key again: taken in the owner's enterprise, free in another
    ("templates.create",      409, 403,      201,  409,    201,      400, 401, 401,    401),
    ("templates.patch",       200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("templates.publish",     200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("templates.preview",     200, 403,      404,  200,    404,      400, 401, 401,    401),
    ("stats",                 200, 403,      200,  200,    200,      400, 401, 401,    401),
]
# fmt: on


@dataclass(frozen=True)
class Keys:
    """The other callers' keys."""

    other: Tenant
    service: Tenant


@dataclass(frozen=True)
class World:
    """The owner enterprise and its rows, fresh for each cell."""

    owner: Tenant
    revoked_key: str
    template_id: int
    template_key: str
    workflow_id: int
    draft_workflow_id: int
    workflow_key: str
    pending_id: int
    failed_id: int


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: dict[str, Any] | None = None
    # The owner's row the request addresses: read back to prove a refused request left it alone.
    row: str | None = None
    # A list endpoint: the key of its items, empty for another enterprise.
    items: str | None = None


def _trigger_body(world: World) -> dict[str, Any]:
    return {"workflowId": world.workflow_key, "payload": {"message": "hello"}}


ENDPOINTS: dict[str, Callable[[World], Request]] = {
    "trigger": lambda w: Request("POST", "/api/trigger", _trigger_body(w)),
    "notifications.list": lambda w: Request("GET", "/api/notifications", items="items"),
    "notifications.get": lambda w: Request(
        "GET", f"/api/notifications/{w.pending_id}", row=f"/api/notifications/{w.pending_id}"
    ),
    "notifications.cancel": lambda w: Request(
        "POST",
        f"/api/notifications/{w.pending_id}/cancel",
        {"reason": "isolation"},
        row=f"/api/notifications/{w.pending_id}",
    ),
    "notifications.retry": lambda w: Request(
        "POST", f"/api/notifications/{w.failed_id}/retry", row=f"/api/notifications/{w.failed_id}"
    ),
    "workflows.list": lambda w: Request("GET", "/api/workflows", items="items"),
    "workflows.get": lambda w: Request(
        "GET", f"/api/workflows/{w.workflow_id}", row=f"/api/workflows/{w.workflow_id}"
    ),
    "workflows.create": lambda w: Request(
        "POST",
        "/api/workflows",
        {
            "workflow_key": f"iso-new-{uuid.uuid4().hex[:8]}",
            "name": "New",
            "default_channels": ["SMS"],
            "template_overrides": {"smsTemplateId": w.template_id},
        },
    ),
    "workflows.patch": lambda w: Request(
        "PATCH",
        f"/api/workflows/{w.workflow_id}",
        {"name": "renamed"},
        row=f"/api/workflows/{w.workflow_id}",
    ),
    "workflows.publish": lambda w: Request(
        "POST",
        f"/api/workflows/{w.draft_workflow_id}/publish",
        row=f"/api/workflows/{w.draft_workflow_id}",
    ),
    "workflows.unpublish": lambda w: Request(
        "POST", f"/api/workflows/{w.workflow_id}/unpublish", row=f"/api/workflows/{w.workflow_id}"
    ),
    "workflows.deactivate": lambda w: Request(
        "POST",
        f"/api/workflows/{w.workflow_id}/deactivate",
        row=f"/api/workflows/{w.workflow_id}",
    ),
    "workflows.reload": lambda w: Request("POST", "/api/workflows/reload"),
    "templates.list": lambda w: Request("GET", "/api/templates", items="items"),
    "templates.get": lambda w: Request(
        "GET", f"/api/templates/{w.template_id}", row=f"/api/templates/{w.template_id}"
    ),
    "templates.create": lambda w: Request(
        "POST",
        "/api/templates",
        {
            "template_key": w.template_key,
            "name": "Iso",
            "channel_type": "SMS",
            "body_template": "{{ message }}",
        },
    ),
    "templates.patch": lambda w: Request(
        "PATCH",
        f"/api/templates/{w.template_id}",
        {"body_template": "changed {{ message }}"},
        row=f"/api/templates/{w.template_id}",
    ),
    "templates.publish": lambda w: Request(
        "POST", f"/api/templates/{w.template_id}/publish", row=f"/api/templates/{w.template_id}"
    ),
    "templates.preview": lambda w: Request(
        "POST", f"/api/templates/{w.template_id}/preview", {"variables": {"message": "hi"}}
    ),
    "stats": lambda w: Request("GET", "/api/stats"),
}


@pytest.fixture()
def keys(stack: Any) -> Keys:
    return Keys(other=make_tenant(), service=make_tenant(service=True))


@pytest.fixture()
def world(client: Any) -> World:
    owner = make_tenant()
    with transaction() as session:
        revoked, revoked_key = create_api_key(
            session, enterprise_id=owner.enterprise_id, scope=ApiKeyScope.ENTERPRISE
        )
        revoke_api_key(session, key_id=revoked.id)
    sms = create_template(client, owner, "SMS", body="{{ message }}")
    key = f"iso-{uuid.uuid4().hex[:8]}"
    workflow = create_workflow(client, owner, key, publish=True, SMS=sms)
    draft = create_workflow(client, owner, f"{key}-draft", SMS=sms)
    later = "2999-01-01T00:00:00+00:00"
    ids = []
    for _ in range(2):
        response = client.post(
            "/api/trigger",
            json={"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": later},
            headers=owner.headers,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["notificationId"])
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == ids[1])
            .values(notification_status=NotificationStatus.FAILED)
        )
    return World(
        owner=owner,
        revoked_key=revoked_key,
        template_id=sms["id"],
        template_key=sms["template_key"],
        workflow_id=workflow["id"],
        draft_workflow_id=draft["id"],
        workflow_key=key,
        pending_id=ids[0],
        failed_id=ids[1],
    )


def _call_as(
    caller: str, request: Request, world: World, keys: Keys
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The headers and body of `request` sent by `caller`."""
    bearer = {"Authorization": f"Bearer {world.owner.api_key}"}
    service = {"Authorization": f"Bearer {keys.service.api_key}"}
    names = {
        "own>other": (bearer, keys.other.enterprise_id),
        "svc>own": (service, world.owner.enterprise_id),
        "svc>other": (service, keys.other.enterprise_id),
    }
    headers = {
        "own": bearer,
        "other": keys.other.headers,
        "svc": service,
        "none": {},
        "revoked": {"Authorization": f"Bearer {world.revoked_key}"},
        "malformed": {"Authorization": f"Token {world.owner.api_key}"},
    }.get(caller)
    body = dict(request.json) if request.json is not None else None
    if headers is not None:
        return dict(headers), body
    auth, enterprise = names[caller]
    if request.path == "/api/trigger":  # the trigger names its enterprise in the body
        assert body is not None
        return dict(auth), {**body, "enterpriseId": str(enterprise)}
    return {**auth, "X-Enterprise-Id": str(enterprise)}, body


CELLS = [
    pytest.param(endpoint, caller, status, id=f"{endpoint}-{caller}")
    for endpoint, *statuses in MATRIX
    for caller, status in zip(CALLERS, statuses, strict=True)
]


def test_the_matrix_covers_every_endpoint() -> None:
    assert [row[0] for row in MATRIX] == list(ENDPOINTS)


@pytest.mark.parametrize(("endpoint", "caller", "expected"), CELLS)
def test_isolation(
    client: Any, world: World, keys: Keys, endpoint: str, caller: str, expected: int
) -> None:
    request = ENDPOINTS[endpoint](world)
    before = client.get(request.row, headers=world.owner.headers).json() if request.row else None
    headers, body = _call_as(caller, request, world, keys)
    response = client.request(request.method, request.path, json=body, headers=headers)

    assert response.status_code == expected, f"{endpoint} as {caller}: {response.text}"
    answer = response.json()
    if expected >= 400:
        assert set(answer["error"]) >= {"code", "message"}, answer
        if request.row:
            after = client.get(request.row, headers=world.owner.headers).json()
            assert after == before, f"{endpoint} as {caller} changed the owner's row"
    if request.items and caller in ("other", "svc>other"):
        assert answer[request.items] == [], f"{endpoint} as {caller} sees the owner's rows"
    if request.items and caller in ("own", "svc>own"):
        assert answer[request.items], f"{endpoint} as {caller} does not see the owner's rows"
