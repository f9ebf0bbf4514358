"""Request dependencies: one session (one transaction) per request, the caller's principal,
and the enterprise the request acts for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.ratelimit import RateLimiterDep, enforce_rate_limit
from shared.apikeys import Principal, authenticate
from shared.db.enums import ApiKeyScope
from shared.db.session import scope_session, session_factory, unscope_session


def get_session() -> Iterator[Session]:
    """The request's session. Routes that write call commit(); anything else is rolled back."""
    session = session_factory()()
    # Until the request's enterprise is known, row-level security shows no enterprise's rows.
    scope_session(session, None)
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def get_principal(
    session: SessionDep,
    limiter: RateLimiterDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller, from `Authorization: Bearer <api key>`; 429 when the key is over its rate."""
    if not authorization:
        raise _unauthorized("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise _unauthorized("expected 'Authorization: Bearer <api key>'")
    # Keys are looked up before any enterprise is known: a system read, then back to no scope.
    unscope_session(session)
    try:
        principal = authenticate(session, token)
    finally:
        session.rollback()  # end the read-only auth transaction; the route opens its own
        scope_session(session, None)
    if principal is None:
        raise _unauthorized("invalid or revoked API key")
    enforce_rate_limit(limiter, principal.key_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def resolve_enterprise(principal: Principal, requested: uuid.UUID | None) -> uuid.UUID:
    """The enterprise a request acts for. An enterprise key acts for its own only (403 when a
    request names another); a service key acts for the enterprise the request names."""
    if principal.scope is ApiKeyScope.ENTERPRISE:
        assert principal.enterprise_id is not None
        if requested is not None and requested != principal.enterprise_id:
            raise ApiError(403, "forbidden", "this API key cannot act for that enterprise")
        return principal.enterprise_id
    if requested is None:
        raise ApiError(
            400,
            "enterprise_required",
            "a service key must name the enterprise (enterpriseId or X-Enterprise-Id)",
        )
    return requested


def get_enterprise_id(
    principal: PrincipalDep,
    session: SessionDep,
    x_enterprise_id: Annotated[uuid.UUID | None, Header()] = None,
) -> uuid.UUID:
    """The enterprise of a request whose body does not name one; the request's session is
    confined to it."""
    enterprise_id = resolve_enterprise(principal, x_enterprise_id)
    scope_session(session, enterprise_id)
    return enterprise_id


EnterpriseDep = Annotated[uuid.UUID, Depends(get_enterprise_id)]
