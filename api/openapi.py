"""The OpenAPI document as the API really answers.

FastAPI documents a route's errors only where the route lists them, and with its own
`{"detail": [...]}` validation shape, which this API never returns (api/errors.py: every error
is `{"error": {"code", "message", "details"?}}`). So, once the document is generated, every
operation gets:

- each error it can answer, with the `Error` schema: 401 and 429 (a key over its rate, or an
  address over its failed-authentication limit; api/ratelimit.py, api/authguard.py) and 503
  (the database, with Retry-After) for the API-key routes under `/api/`; 400 (malformed JSON),
  413 (body over MAX_BODY_BYTES) and 422 for a route with a body; 422 for one with parameters;
  404 for one with an id in its path;
- FastAPI's HTTPValidationError and ValidationError schemas removed;
- working request examples where a body is easy to get wrong (`EXAMPLES`).

The bridge (`/api/novu`, called by Novu) answers its errors in @novu/framework's shape,
`{message, code, data?}` (api/bridge/errors.py): documented as `BridgeError`, with the
statuses it answers and without FastAPI's 422 (its parameters are optional strings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "stable, machine-readable: e.g. `not_found`, "
                    "`validation_error`, `rate_limited`",
                },
                "message": {"type": "string", "description": "for people"},
                "details": {
                    "description": "more about it, when there is more: e.g. each invalid field "
                    "as `{field, message}`"
                },
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
BRIDGE_ERROR_SCHEMA: dict[str, Any] = {
    "title": "BridgeError",
    "type": "object",
    "required": ["message", "code"],
    "properties": {
        "message": {"type": "string"},
        "code": {"type": "string", "description": "@novu/framework's error code"},
        "data": {"description": "more about it, when there is more"},
    },
}
_BRIDGE_ERRORS = {
    "400": "Unknown action, workflow or step, or a payload or controls failing their schema",
    "401": "Missing, invalid, expired or mismatched `novu-signature`",
    "404": "No such workflow or step",
    "405": "Method not allowed for the action",
    "413": "The body is over MAX_BODY_BYTES",
    "503": "The database is unavailable",
}

_KEYED = {
    "401": "Missing or invalid API key",
    "429": "The key is over its rate, or this address over its failed-authentication limit "
    "(see Retry-After)",
    "503": "The database is unavailable; nothing was changed (see Retry-After)",
}
_WITH_BODY = {
    "400": "The body is not valid JSON",
    "413": "The body is over MAX_BODY_BYTES",
    "422": "The request is invalid (`details` names each field)",
}
_WITH_PARAMETERS = {"422": "The request is invalid (`details` names each field)"}
_WITH_ID = {"404": "No such thing in the caller's enterprise (another enterprise's id included)"}
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
_NOT_KEYED = ("/api/novu", "/api/operator/")

_SIGNUP = {"userId": "u-1", "email": "ada@example.com", "name": "Ada"}
_ALERT = {"buildingId": "building-789", "message": "HVAC system failure detected"}
EXAMPLES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("post", "/api/trigger"): {
        "user-signup": {
            "summary": "A static workflow; the subscriber comes from the payload",
            "value": {"workflowId": "user-signup", "payload": _SIGNUP},
        },
        "building-alert": {
            "summary": "A dynamic workflow, to two recipients",
            "value": {
                "workflowId": "building-alert",
                "recipients": ["tenant-42", "facility-manager-7"],
                "payload": {**_ALERT, "priority": "high"},
            },
        },
    },
    ("post", "/api/trigger/bulk"): {
        "two events": {
            "summary": "Two triggers in one request, each answered on its own",
            "value": {
                "events": [
                    {"workflowId": "user-signup", "payload": _SIGNUP},
                    {
                        "workflowId": "building-alert",
                        "recipients": ["tenant-42"],
                        "payload": {**_ALERT, "priority": "low"},
                    },
                ]
            },
        }
    },
}


def _document(
    operation: dict[str, Any], errors: dict[str, str], schema: dict[str, Any] = _ERROR_REF
) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in errors.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status[0] in "45":
            response["content"] = {"application/json": {"schema": schema}}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """The generated document with every operation's errors and the examples (see above)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    for path, operations in document.get("paths", {}).items():
        if path == "/api/novu":
            schemas["BridgeError"] = BRIDGE_ERROR_SCHEMA
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
                _document(operation, _BRIDGE_ERRORS, {"$ref": "#/components/schemas/BridgeError"})
            continue
        for method, operation in operations.items():
            errors: dict[str, str] = {}
            if path.startswith("/api/") and not path.startswith(_NOT_KEYED):
                errors |= _KEYED
            if operation.get("parameters"):
                errors |= _WITH_PARAMETERS
            if "{" in path:
                errors |= _WITH_ID
            if "requestBody" in operation:
                errors |= _WITH_BODY
                examples = EXAMPLES.get((method, path))
                if examples:
                    body = operation["requestBody"]["content"]["application/json"]
                    body["examples"] = examples
            _document(operation, errors)
    return document


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId: its function's name (FastAPI appends the method for a
    route of several)."""
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Generate the app's OpenAPI document once, completed (see the module)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
