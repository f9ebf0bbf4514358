"""The operator's credential: figures about the whole process (every enterprise's counts,
cache keys, the trigger recorder, Novu usage of all) are for whoever runs XNovu, never for an
enterprise's key (docs/architecture.md, "Operator credential").

`Authorization: Bearer <XNOVU_OPERATOR_TOKEN>`, compared in constant time. With no token
configured every operator endpoint answers 403: there is no default credential to guess.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from api.errors import ApiError
from shared.settings import get_settings


def require_operator(request: Request) -> None:
    """Nothing when the request carries the operator token; 403 when none is configured or it
    carries another credential (an API key included), 401 when it carries none."""
    token = get_settings().operator_token
    if token is None:
        raise ApiError(
            403, "operator_disabled", "operator endpoints are off (XNOVU_OPERATOR_TOKEN is unset)"
        )
    authorization = request.headers.get("authorization")
    if not authorization:
        raise ApiError(
            401,
            "unauthorized",
            "missing Authorization header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, given = authorization.partition(" ")
    # Both sides as bytes: compare_digest refuses non-ASCII str, and a header may carry any.
    matches = hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())
    if scheme.lower() != "bearer" or not matches:
        raise ApiError(403, "operator_only", "this endpoint needs the operator credential")


OperatorDep = Annotated[None, Depends(require_operator)]
