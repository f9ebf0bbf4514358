"""POST /api/trigger is served by TriggerRoute, which does directly what FastAPI's generic
handler does with the endpoint's signature, and reached through TriggerHotPath, which skips
FastAPI's router and exception middleware. The same endpoint, served by FastAPI's own APIRoute
through the whole stack at another path, must answer every request alike: status, error code
and details."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes import trigger
from api.schemas.notifications import TriggerResponse
from tests.conftest import Stack, Tenant, make_tenant, signup_payload

GENERIC = "/test/generic-trigger"


@pytest.fixture(scope="module")
def both(stack: Stack) -> Iterator[TestClient]:
    app = create_app()
    app.router.add_api_route(
        GENERIC,
        trigger.trigger,
        methods=["POST"],
        status_code=202,
        response_model=TriggerResponse,
        route_class_override=APIRoute,
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Tenant:
    return make_tenant()


def _good(**extra: Any) -> bytes:
    return json.dumps({"workflowId": "user-signup", "payload": signup_payload(), **extra}).encode()


JSON = {"content-type": "application/json"}
CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "valid": (_good(), JSON),
    "json with a charset": (_good(), {"content-type": "application/json; charset=utf-8"}),
    "a +json media type": (_good(), {"content-type": "application/vnd.api+json"}),
    "no content type": (_good(), {}),
    "text/plain": (_good(), {"content-type": "text/plain"}),
    "empty body": (b"", JSON),
    "malformed JSON": (b'{"workflowId": ', JSON),
    "not UTF-8": (b'{"workflowId": "\xff"}', JSON),
    "a JSON array": (b"[1, 2]", JSON),
    "JSON null": (b"null", JSON),
    "wrong types": (json.dumps({"workflowId": 5, "payload": []}).encode(), JSON),
    "unknown field": (_good(zzz=1), JSON),
    "missing workflowId": (json.dumps({"payload": {}}).encode(), JSON),
    "bad enterpriseId": (_good(enterpriseId="not-a-uuid"), JSON),
    "unknown workflow": (json.dumps({"workflowId": "nope", "payload": {}}).encode(), JSON),
    "payload failing the schema": (
        json.dumps({"workflowId": "user-signup", "payload": {}}).encode(),
        JSON,
    ),
    "Idempotency-Key too long": (_good(), {**JSON, "idempotency-key": "k" * 256}),
    "body over the limit": (_good(padding="x" * 1_100_000), JSON),
}


def _answer(response: Any) -> tuple[int, str | None, Any]:
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if error is None:
        return response.status_code, None, sorted(body)
    return response.status_code, error["code"], error.get("details")


@pytest.mark.parametrize("auth", ["valid key", "no key", "bad key"])
@pytest.mark.parametrize("case", list(CASES))
def test_trigger_route_answers_as_fastapis_generic_handler(
    both: TestClient, owner: Tenant, case: str, auth: str
) -> None:
    body, headers = CASES[case]
    if auth == "valid key":
        headers = {**headers, **owner.headers}
    elif auth == "bad key":
        headers = {**headers, "authorization": "Bearer xnk_nope"}
    lean = both.post("/api/trigger", content=body, headers=headers)
    generic = both.post(GENERIC, content=body, headers=headers)
    assert _answer(lean) == _answer(generic)
    assert lean.headers.get("content-type") == generic.headers.get("content-type")


def test_a_bug_behind_the_trigger_route_is_a_json_500_either_way(
    stack: Stack, owner: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an error the app has a handler for: the JSON 500 Starlette's ServerErrorMiddleware
    sends for any route, and the error raised on to the server (TestClient re-raises it)."""
    from shared.notifications import intake

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(intake, "accept", broken)
    app = create_app()
    assert app.trigger_path is not None  # the trigger is served ahead of the stack
    app.router.add_api_route(
        GENERIC, trigger.trigger, methods=["POST"], status_code=202, route_class_override=APIRoute
    )
    headers = {**JSON, **owner.headers}
    with TestClient(app, raise_server_exceptions=False) as client:
        lean = client.post("/api/trigger", content=_good(), headers=headers)
        generic = client.post(GENERIC, content=_good(), headers=headers)
    assert _answer(lean) == _answer(generic) == (500, "internal_error", None)
    with TestClient(app) as client, pytest.raises(RuntimeError, match="a bug"):
        client.post("/api/trigger", content=_good(), headers=headers)
