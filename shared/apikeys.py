"""API keys: generated once, stored as SHA-256 hashes, resolved to a principal per request."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.enums import ApiKeyScope
from shared.db.models import ApiKey
from shared.errors import MissingInput, NotAllowed

KEY_PREFIX = "xnk_"
DISPLAY_PREFIX_LENGTH = 12


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an enterprise key (bound) or a service key (acts for a named enterprise)."""

    key_id: int
    scope: ApiKeyScope
    enterprise_id: uuid.UUID | None

    @property
    def actor(self) -> str:
        """What rows this caller creates record as their `created_by`."""
        return f"api-key:{self.key_id}"

    def acting_for(self, requested: uuid.UUID | None) -> uuid.UUID:
        """The enterprise a request acts for. An enterprise key acts for its own only
        (NotAllowed when a request names another); a service key acts for the enterprise the
        request names (MissingInput when it names none)."""
        if self.scope is ApiKeyScope.ENTERPRISE:
            assert self.enterprise_id is not None
            if requested is not None and requested != self.enterprise_id:
                raise NotAllowed("forbidden", "this API key cannot act for that enterprise")
            return self.enterprise_id
        if requested is None:
            raise MissingInput(
                "enterprise_required",
                "a service key must name the enterprise (enterpriseId or X-Enterprise-Id)",
            )
        return requested


def hash_api_key(plaintext: str) -> str:
    """Keys carry 256 bits of randomness, so a plain SHA-256 is a safe, fast lookup hash."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_api_key() -> str:
    """A new random key in its printable form."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_api_key(
    session: Session,
    *,
    enterprise_id: uuid.UUID | None,
    scope: ApiKeyScope,
    name: str | None = None,
    plaintext: str | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key (hashed) and return the row and the key, which is never stored."""
    if scope is ApiKeyScope.ENTERPRISE and enterprise_id is None:
        raise ValueError("an enterprise key needs an enterprise id")
    key = plaintext or generate_api_key()
    row = ApiKey(
        name=name,
        enterprise_id=enterprise_id,
        scope=scope,
        key_prefix=key[:DISPLAY_PREFIX_LENGTH],
        key_hash=hash_api_key(key),
    )
    session.add(row)
    session.flush()
    return row, key


def ensure_api_key(
    session: Session, *, plaintext: str, enterprise_id: uuid.UUID, name: str
) -> ApiKey:
    """Idempotently store a known key for an enterprise (the development seed)."""
    existing = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(plaintext)))
    if existing is not None:
        return existing
    row, _ = create_api_key(
        session,
        enterprise_id=enterprise_id,
        scope=ApiKeyScope.ENTERPRISE,
        name=name,
        plaintext=plaintext,
    )
    return row


def authenticate_hash(session: Session, key_hash: str) -> Principal | None:
    """The principal of a key by its hash (hash_api_key); None when unknown, revoked or
    deactivated."""
    row = session.execute(
        select(ApiKey.id, ApiKey.scope, ApiKey.enterprise_id).where(
            ApiKey.key_hash == key_hash,
            ApiKey.revoked_at.is_(None),
            ApiKey.deactivated.is_(False),
        )
    ).one_or_none()
    if row is None:
        return None
    return Principal(key_id=row.id, scope=row.scope, enterprise_id=row.enterprise_id)


def revoke_api_key(session: Session, *, key_id: int) -> bool | None:
    """Revoke a key: True when revoked now, False when it already was, None when there is no
    such key. It stops authenticating once API processes stop trusting their cached lookup of
    it (API_KEY_CACHE_SECONDS, 5 s by default)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is not None:
        return False
    row.revoked_at = dt.datetime.now(dt.UTC)
    return True


@dataclass(frozen=True, slots=True)
class ListedKey:
    """What a listing shows of a key: never the key or its hash."""

    id: int
    key_prefix: str
    scope: ApiKeyScope
    enterprise_id: uuid.UUID | None
    name: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def as_json(self) -> dict[str, object]:
        """The key as a JSON object (times in ISO 8601)."""
        return {
            "id": self.id,
            "prefix": self.key_prefix,
            "scope": self.scope.value,
            "enterpriseId": str(self.enterprise_id) if self.enterprise_id else None,
            "name": self.name,
            "createdAt": self.created_at.isoformat(),
            "lastUsedAt": _iso(self.last_used_at),
            "revokedAt": _iso(self.revoked_at),
        }

    def as_row(self) -> tuple[str, ...]:
        """The key as table cells."""
        return (
            str(self.id),
            self.key_prefix + "…",
            self.scope.value,
            str(self.enterprise_id or "-"),
            self.name or "-",
            _minute(self.created_at),
            _minute(self.last_used_at),
            _minute(self.revoked_at),
        )


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at else None


def _minute(at: dt.datetime | None) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if at else "-"


def list_api_keys(
    session: Session, *, enterprise_id: uuid.UUID | None = None, include_revoked: bool = False
) -> list[ListedKey]:
    """Keys, oldest first: one enterprise's, or all; live ones only unless `include_revoked`."""
    stmt = select(
        ApiKey.id,
        ApiKey.key_prefix,
        ApiKey.scope,
        ApiKey.enterprise_id,
        ApiKey.name,
        ApiKey.created_at,
        ApiKey.last_used_at,
        ApiKey.revoked_at,
    ).order_by(ApiKey.id)
    if enterprise_id is not None:
        stmt = stmt.where(ApiKey.enterprise_id == enterprise_id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [ListedKey(*row) for row in session.execute(stmt)]


class PrincipalCache:
    """Live keys an API process has looked up, trusted for `ttl_seconds`: a request with a
    cached key needs no database round trip. Only live keys are cached, so a key created a
    moment ago works at once; a revoked one stops working within the TTL. Keyed by the key's
    hash, never by the key itself."""

    def __init__(self, ttl_seconds: float, *, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        """The cached principal of a key hash, or None (unknown, or trusted too long)."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        principal, expires_at = entry
        if time.monotonic() >= expires_at:
            with self._lock:
                self._entries.pop(key_hash, None)
            return None
        return principal

    def put(self, key_hash: str, principal: Principal) -> None:
        """Trust a live key's principal for the TTL (nothing when the TTL is 0)."""
        if self.ttl_seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key_hash] = (principal, time.monotonic() + self.ttl_seconds)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
