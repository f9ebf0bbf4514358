"""The delivery log's session: a signed, expiring cookie, and the CSRF tokens bound to it.

The cookie holds the API key's SHA-256 hash (never the key), the enterprise the session acts
for, a random nonce and the expiry, signed with HMAC-SHA256 keyed by UI_SESSION_SECRET. Every
page authenticates that hash again as the API authenticates a key (api/deps.py), so a revoked
key ends its sessions within API_KEY_CACHE_SECONDS, and failures count against the client's
failed-authentication limit (api/authguard.py). No state is kept on the server: logout deletes
the cookie in the browser; a copy taken before stays valid until it expires
(UI_SESSION_MAX_AGE_SECONDS) or its key is revoked (docs/architecture.md, "Delivery log").

Forms carry a CSRF token, the HMAC of the session's nonce (the login form's: of a nonce in a
short-lived cookie of its own, a signed double submit); the cookies are also SameSite=Strict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from pydantic import SecretStr

SESSION_COOKIE = "xnovu_ui_session"
LOGIN_COOKIE = "xnovu_ui_login"
# Long enough to type a key, short enough that a login form left open does not stay usable.
LOGIN_FORM_SECONDS = 1800
# A cookie longer than this is not one we issued: refused before any decoding.
MAX_COOKIE_CHARS = 512


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a session cookie says: whose key, for which enterprise, until when."""

    key_hash: str
    enterprise_id: uuid.UUID | None
    nonce: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens with one server secret."""

    def __init__(self, secret: SecretStr, max_age_seconds: int) -> None:
        self._secret = secret.get_secret_value().encode()
        self.max_age_seconds = max_age_seconds

    def _mac(self, purpose: str, data: str) -> str:
        # One secret, several uses: the purpose keeps a CSRF token from passing as a signature.
        message = f"{purpose}|{data}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, key_hash: str, enterprise_id: uuid.UUID | None) -> tuple[str, SessionClaims]:
        """A new session's cookie value and its claims."""
        claims = SessionClaims(
            key_hash=key_hash,
            enterprise_id=enterprise_id,
            nonce=secrets.token_urlsafe(18),
            expires_at=int(time.time()) + self.max_age_seconds,
        )
        body = _b64(
            json.dumps(
                {
                    "k": claims.key_hash,
                    "e": str(enterprise_id) if enterprise_id else None,
                    "n": claims.nonce,
                    "x": claims.expires_at,
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{body}.{self._mac('session', body)}", claims

    def verify(self, cookie: str | None) -> SessionClaims | None:
        """The claims of a cookie this server signed and that has not expired; else None."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._mac("session", body).encode()):
            return None
        try:
            data = json.loads(_unb64(body))
            claims = SessionClaims(
                key_hash=str(data["k"]),
                enterprise_id=uuid.UUID(data["e"]) if data["e"] else None,
                nonce=str(data["n"]),
                expires_at=int(data["x"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if claims.expires_at <= time.time():
            return None
        return claims

    def csrf_token(self, nonce: str) -> str:
        """The token a form of the session (or login form) with this nonce must carry."""
        return self._mac("csrf", nonce)

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        """Whether a submitted token belongs to the nonce."""
        if not nonce or not token or len(token) > 100:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(nonce).encode())
