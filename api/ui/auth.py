"""Login, logout, and the session every page of the delivery log runs under.

The login form takes an API key, the same keys as the API (a service key names the enterprise
it acts for). The key is checked exactly as the API checks `Authorization: Bearer` (api/deps.py,
with the failed-authentication limit of api/authguard.py), and the session cookie
(session.py) keeps only its hash. Each page authenticates that hash again and is scoped to the
session's enterprise, as an API request is by its key.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import principal_of_hash
from api.errors import ApiError
from api.ratelimit import RateLimiterDep, enforce_rate_limit
from api.ui.pages import error_page, read_form, redirect, render
from api.ui.session import (
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    SessionSigner,
)
from shared.apikeys import hash_api_key
from shared.errors import DomainError
from shared.settings import get_settings

HOME = "/ui/notifications"
LOGIN = "/ui/login"
# API keys are at most this long (api/deps.py refuses longer bearer tokens the same way).
MAX_KEY_CHARS = 256

router = APIRouter(prefix="/ui", include_in_schema=False)


@lru_cache(maxsize=1)
def _signer_from_settings() -> SessionSigner | None:
    settings = get_settings()
    if settings.ui_session_secret is None:
        return None
    return SessionSigner(settings.ui_session_secret, settings.ui_session_max_age_seconds)


def signer() -> SessionSigner:
    """The process's cookie signer; 503 when UI_SESSION_SECRET is not set."""
    found = _signer_from_settings()
    if found is None:
        raise ApiError(
            503, "ui_disabled", "the delivery log is off: set UI_SESSION_SECRET to turn it on"
        )
    return found


@dataclass(frozen=True, slots=True)
class UiSession:
    """A logged-in browser: the enterprise it sees and the token its forms carry."""

    enterprise_id: uuid.UUID
    key_id: int
    csrf: str

    def form_ok(self, form: dict[str, str]) -> bool:
        """Whether a submitted form carries this session's CSRF token."""
        return hmac.compare_digest(form.get("csrf", "").encode(), self.csrf.encode())


async def current_session(request: Request, limiter: RateLimiterDep) -> UiSession | None:
    """The request's session, or None (no cookie, a forged or expired one, a revoked key).
    A session's pages count against its key's rate limit as API requests do (429)."""
    sign = signer()
    claims = sign.verify(request.cookies.get(SESSION_COOKIE))
    if claims is None:
        return None
    try:
        principal = await principal_of_hash(request, claims.key_hash)
        enterprise_id = principal.acting_for(claims.enterprise_id)
    except ApiError as exc:
        if exc.status_code == 429:
            raise
        return None
    except DomainError:
        return None
    await enforce_rate_limit(limiter, principal.key_id)
    return UiSession(enterprise_id, principal.key_id, sign.csrf_token(claims.nonce))


UiSessionDep = Annotated[UiSession | None, Depends(current_session)]


def _secure(request: Request) -> bool:
    # Behind a trusted proxy uvicorn takes the scheme from X-Forwarded-Proto.
    return request.url.scheme == "https"


def _login_form(
    request: Request, sign: SessionSigner, *, error: str | None = None, status_code: int = 200
) -> Response:
    nonce = secrets.token_urlsafe(18)
    response = render(
        request,
        "login.html",
        {"csrf": sign.csrf_token(nonce), "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_FORM_SECONDS,
        path=LOGIN,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def ui_home() -> Response:
    """The delivery log starts at the list."""
    return redirect(HOME)


@router.get("/login")
def login_page(request: Request, ui: UiSessionDep) -> Response:
    """The login form (the list, when already logged in)."""
    if ui is not None:
        return redirect(HOME)
    return _login_form(request, signer())


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key as the API would and start a session; the form again on failure."""
    sign = signer()
    form = await read_form(request)
    if not sign.csrf_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return _login_form(
            request, sign, error="The form expired: please try again.", status_code=403
        )
    key = form.get("api_key", "").strip()
    if not key or len(key) > MAX_KEY_CHARS:
        return _login_form(request, sign, error="Enter an API key.", status_code=400)
    requested: uuid.UUID | None = None
    if form.get("enterprise_id", "").strip():
        try:
            requested = uuid.UUID(form["enterprise_id"].strip())
        except ValueError:
            return _login_form(
                request, sign, error="The enterprise id is not a UUID.", status_code=400
            )
    key_hash = hash_api_key(key)
    try:
        principal = await principal_of_hash(request, key_hash)
        enterprise_id = principal.acting_for(requested)
    except ApiError as exc:
        headers = exc.headers or {}
        message = "That API key is not valid."
        if exc.status_code == 429:
            message = "Too many failed logins: try again later."
        response = _login_form(request, sign, error=message, status_code=exc.status_code)
        response.headers.update(headers)
        return response
    except DomainError as exc:  # a service key without an enterprise, or another's
        return _login_form(request, sign, error=str(exc), status_code=400)
    cookie, _ = sign.issue(key_hash, enterprise_id)
    response = redirect(HOME)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=sign.max_age_seconds,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN)
    return response


@router.post("/logout")
async def logout(request: Request, ui: UiSessionDep) -> Response:
    """End the session in this browser (its CSRF token required)."""
    form = await read_form(request)
    if ui is not None and not ui.form_ok(form):
        return csrf_refused(request, ui)
    response = redirect(LOGIN)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


def csrf_refused(request: Request, ui: UiSession) -> Response:
    """403 for a form without its session's token (another site's, or a stale page's)."""
    return error_page(
        request,
        403,
        "Form refused",
        "The form did not carry this session's token: reload the page and try again.",
        ui=ui,
    )
