"""Status webhooks: the caller's enterprise's endpoints and the attempts made to them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api.deps import EnterpriseDep, SessionDep
from api.errors import not_found
from api.routes.notifications import _decode_cursor, _encode_cursor
from api.schemas.webhooks import (
    WebhookAttemptPage,
    WebhookAttemptRead,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
)
from shared.settings import get_settings
from shared.webhooks.endpoints import EndpointChanges, WebhookEndpointService

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

EndpointId = Annotated[int, Path(ge=1, le=2**63 - 1)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such endpoint in the caller's enterprise"},
}
BAD_ENDPOINT: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid body, unknown event type, or a URL that may not be used"},
}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    409: {"description": "The enterprise has as many endpoints as it may"},
}


@router.post(
    "", status_code=201, response_model=WebhookEndpointRead, responses={**TOO_MANY, **BAD_ENDPOINT}
)
def create_endpoint(
    body: WebhookEndpointCreate, session: SessionDep, enterprise_id: EnterpriseDep
) -> WebhookEndpointRead:
    """Register an endpoint; the answer holds its signing secret, shown this once."""
    row = WebhookEndpointService(session).create(
        enterprise_id, url=body.url, event_types=body.eventTypes, description=body.description
    )
    session.commit()
    return WebhookEndpointRead.of(row, with_secret=True)


@router.get("", response_model=WebhookEndpointList, response_model_exclude_none=True)
def list_endpoints(session: SessionDep, enterprise_id: EnterpriseDep) -> WebhookEndpointList:
    """The enterprise's endpoints (without their secrets)."""
    rows = WebhookEndpointService(session).list_endpoints(enterprise_id)
    return WebhookEndpointList(items=[WebhookEndpointRead.of(row) for row in rows])


@router.get(
    "/{endpoint_id}",
    response_model=WebhookEndpointRead,
    response_model_exclude_none=True,
    responses=NOT_FOUND,
)
def get_endpoint(
    endpoint_id: EndpointId, session: SessionDep, enterprise_id: EnterpriseDep
) -> WebhookEndpointRead:
    """One endpoint; another enterprise's answers 404."""
    row = WebhookEndpointService(session).get(endpoint_id, enterprise_id)
    if row is None:
        raise not_found("webhook endpoint")
    return WebhookEndpointRead.of(row)


@router.patch(
    "/{endpoint_id}",
    response_model=WebhookEndpointRead,
    response_model_exclude_none=True,
    responses={**NOT_FOUND, **BAD_ENDPOINT},
)
def update_endpoint(
    endpoint_id: EndpointId,
    body: WebhookEndpointUpdate,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
) -> WebhookEndpointRead:
    """Change the URL, event types, description, or enable / disable it."""
    row = WebhookEndpointService(session).update(
        endpoint_id,
        enterprise_id,
        EndpointChanges(
            url=body.url,
            event_types=body.eventTypes,
            description=body.description,
            enabled=body.enabled,
        ),
    )
    if row is None:
        raise not_found("webhook endpoint")
    session.commit()
    return WebhookEndpointRead.of(row)


@router.post(
    "/{endpoint_id}/rotate-secret", response_model=WebhookEndpointRead, responses=NOT_FOUND
)
def rotate_secret(
    endpoint_id: EndpointId, session: SessionDep, enterprise_id: EnterpriseDep
) -> WebhookEndpointRead:
    """A new signing secret, shown this once; for 24 hours webhooks carry a signature with the
    old secret as well."""
    row = WebhookEndpointService(session).rotate_secret(endpoint_id, enterprise_id)
    if row is None:
        raise not_found("webhook endpoint")
    session.commit()
    return WebhookEndpointRead.of(row, with_secret=True)


@router.delete("/{endpoint_id}", status_code=204, responses=NOT_FOUND)
def delete_endpoint(
    endpoint_id: EndpointId, session: SessionDep, enterprise_id: EnterpriseDep
) -> Response:
    """Remove the endpoint, its undelivered messages and its attempts."""
    if not WebhookEndpointService(session).delete(endpoint_id, enterprise_id):
        raise not_found("webhook endpoint")
    session.commit()
    return Response(status_code=204)


@router.get(
    "/{endpoint_id}/attempts",
    response_model=WebhookAttemptPage,
    responses={**NOT_FOUND, 400: {"description": "A cursor this API did not issue"}},
)
def list_attempts(
    endpoint_id: EndpointId,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> WebhookAttemptPage:
    """The endpoint's attempts, newest first, in keyset pages (`nextCursor` as `cursor`)."""
    service = WebhookEndpointService(session)
    if service.get(endpoint_id, enterprise_id) is None:
        raise not_found("webhook endpoint")
    limit = min(limit, get_settings().max_page_size)
    rows = service.attempts(
        endpoint_id,
        enterprise_id,
        limit=limit + 1,
        before_id=_decode_cursor(cursor) if cursor else None,
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1][0].id) if len(rows) > limit else None
    return WebhookAttemptPage(
        items=[WebhookAttemptRead.of(attempt, message) for attempt, message in page],
        nextCursor=next_cursor,
    )
