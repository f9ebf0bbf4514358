"""The `novu-signature` check: `t=<unix ms>,v1=<hex HMAC-SHA256("<t>.<body>", secret key)>`.

Novu signs `JSON.stringify(body)` of what it sends (`{}` for a GET, which has no body), and
sends exactly those bytes, so the bridge verifies the HMAC over the raw bytes it received: never
over a re-serialised copy, which would differ in spacing, key order or number spelling from what
was signed. The header is parsed as framework 2.13.2 parses it (comma-separated `key=value`
pairs, blanks around them ignored, the first of a repeated key kept; `t` and `v1` required),
the timestamp must be within five minutes of our clock either way, and the comparison runs in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from api.bridge import errors
from api.bridge.protocol import (
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_MS,
)

# What a GET is signed over: Novu signs its (absent) body as `{}`.
EMPTY_BODY = b"{}"
# Milliseconds need 13 digits until the year 2286; more is not a timestamp.
MAX_TIMESTAMP_DIGITS = 16


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    timestamp: str
    digest: str


def signature_header(headers: Mapping[str, str]) -> str | None:
    """The signature a request carries: `novu-signature`, else the legacy `x-novu-signature`."""
    return headers.get(SIGNATURE_HEADER) or headers.get(LEGACY_SIGNATURE_HEADER) or None


def parse_signature(header: str) -> ParsedSignature:
    """`t` and `v1` of a header; SignatureInvalidError when either is missing or `t` is not a
    timestamp in milliseconds."""
    fields: dict[str, str] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep and key and value and key not in fields:
            fields[key] = value
    timestamp, digest = fields.get("t"), fields.get("v1")
    if (
        not timestamp
        or not digest
        or len(timestamp) > MAX_TIMESTAMP_DIGITS
        or not (timestamp.isascii() and timestamp.isdigit())
    ):
        raise errors.signature_invalid()
    return ParsedSignature(timestamp=timestamp, digest=digest)


def compute_signature(secret_key: str, timestamp: str | int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` keyed with the secret key."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def sign(secret_key: str, body: bytes = EMPTY_BODY, *, timestamp_ms: int | None = None) -> str:
    """A `novu-signature` header value for a body, as Novu builds it (tests, tools)."""
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return f"t={timestamp},v1={compute_signature(secret_key, timestamp, body)}"


def verify_signature(
    header: str | None, body: bytes, secret_key: str, *, now_ms: int | None = None
) -> None:
    """Raise the bridge error for a missing, malformed, stale or wrong signature of `body`."""
    if not header:
        raise errors.signature_not_found()
    parsed = parse_signature(header)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - int(parsed.timestamp)) > SIGNATURE_TOLERANCE_MS:
        raise errors.signature_expired()
    expected = compute_signature(secret_key, parsed.timestamp, body)
    if not hmac.compare_digest(expected.encode(), parsed.digest.encode("utf-8", "replace")):
        raise errors.signature_mismatch()
