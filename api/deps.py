"""Request dependencies: one session (one transaction) per request, the caller's principal,
and the enterprise the request acts for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.authguard import auth_failure_guard, client_address, too_many_failures
from api.errors import ApiError
from api.ratelimit import RateLimiterDep, enforce_rate_limit
from shared.apikeys import Principal, PrincipalCache, authenticate_hash, hash_api_key
from shared.db.session import scope_session, session_factory, transaction
from shared.settings import get_settings


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


@lru_cache(maxsize=1)
def principal_cache() -> PrincipalCache:
    """The process's cache of looked-up keys (API_KEY_CACHE_SECONDS)."""
    return PrincipalCache(get_settings().api_key_cache_seconds)


def _look_up(key_hash: str) -> Principal | None:
    # Keys are looked up before any enterprise is known: a system transaction of its own.
    with transaction() as session:
        principal = authenticate_hash(session, key_hash)
    if principal is not None:
        principal_cache().put(key_hash, principal)
    return principal


# Declares the API key in OpenAPI (a bearer security scheme); get_principal reads the header
# itself, to answer every malformed one with its own 401.
bearer_scheme = HTTPBearer(auto_error=False, description="An XNovu API key (`xnovu keys create`)")


async def get_principal(
    request: Request,
    limiter: RateLimiterDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    """The caller, from `Authorization: Bearer <api key>`; 429 when the key is over its rate
    or its client address over its failed-authentication limit.
    A key seen in the last API_KEY_CACHE_SECONDS costs no database round trip; otherwise it is
    looked up from a worker thread, off the event loop. (The header is read from the request
    rather than declared as a header parameter: FastAPI's per-parameter validation was a
    measurable share of a trigger's cost.)"""
    authorization = request.headers.get("authorization")
    if not authorization:
        raise _unauthorized("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise _unauthorized("expected 'Authorization: Bearer <api key>'")
    key_hash = hash_api_key(token)
    principal = principal_cache().get(key_hash)
    if principal is None:
        principal = await _authenticate(request, key_hash)
    await enforce_rate_limit(limiter, principal.key_id)
    return principal


async def _authenticate(request: Request, key_hash: str) -> Principal:
    """A key the process has not cached: looked up, unless its client address is over its
    failed-authentication limit or the key failed a moment ago (api/authguard.py); a failure
    is 401, or 429 once the address is over the limit."""
    guard = auth_failure_guard(request)
    address = client_address(request)
    refusal = guard.refusal(address, key_hash)
    if refusal is not None:
        raise too_many_failures(refusal, guard)
    principal = None
    if not guard.known_to_fail(key_hash):
        principal = await run_in_threadpool(_look_up, key_hash)
    if principal is not None:
        guard.succeeded(key_hash)
        return principal
    decision = await run_in_threadpool(guard.failed, address, key_hash)
    if not decision.allowed:
        raise too_many_failures(decision, guard)
    raise _unauthorized("invalid or revoked API key")


async def principal_of_hash(request: Request, key_hash: str) -> Principal:
    """The principal of a key given by its hash (the delivery log's session cookie holds it),
    authenticated as get_principal authenticates a key: ApiError 401 or 429 when it fails."""
    return principal_cache().get(key_hash) or await _authenticate(request, key_hash)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_enterprise_id(
    principal: PrincipalDep,
    session: SessionDep,
    x_enterprise_id: Annotated[uuid.UUID | None, Header()] = None,
) -> uuid.UUID:
    """The enterprise of a request whose body does not name one; the request's session is
    confined to it."""
    enterprise_id = principal.acting_for(x_enterprise_id)
    scope_session(session, enterprise_id)
    return enterprise_id


EnterpriseDep = Annotated[uuid.UUID, Depends(get_enterprise_id)]
