"""Sending one webhook message: Standard Webhooks signature, a checked address, bounded time.

Each request connects to the address `addresses` checked (the URL's host is kept in the Host
header and, for https, in TLS's SNI and certificate check), follows no redirect, ignores proxy
variables, and must finish (resolve, connect, send, first bytes of the answer) within
WEBHOOK_TIMEOUT_SECONDS; at most EXCERPT_BYTES of the answer are read and kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from standardwebhooks import Webhook

from shared.webhooks.addresses import UnsafeUrl, resolve_async

EXCERPT_BYTES = 1024
USER_AGENT = "XNovu-Webhooks/1"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What to send: the message's stable id, its body, where, and the secrets to sign with."""

    msg_id: str
    payload: dict[str, Any]
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt's outcome, as the attempts table keeps it."""

    attempted_at: dt.datetime
    duration_ms: int
    status_code: int | None
    excerpt: str | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        """Any 2xx; a redirect is not followed and counts as a failure."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def unreachable(self) -> bool:
        """No answer at all (timeout, refused, unresolvable, forbidden): the endpoint is likely
        down, so the rest of the batch is handed back instead of waiting on it too."""
        return self.status_code is None


def body_of(payload: dict[str, Any]) -> str:
    """The exact text sent and signed."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def signed_headers(delivery: Delivery, body: str, at: dt.datetime) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (one `v1,...` per secret,
    space-separated, so a receiver with either secret verifies during a rotation)."""
    signatures = " ".join(
        Webhook(secret).sign(delivery.msg_id, at, body) for secret in delivery.secrets
    )
    return {
        "webhook-id": delivery.msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        # The excerpt is read as sent: no decompressing an answer of unknown size.
        "accept-encoding": "identity",
    }


def client(connect_timeout: float, timeout: float) -> httpx.AsyncClient:
    """The client of one batch (connections kept between its messages)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def send(
    http: httpx.AsyncClient, delivery: Delivery, *, allow_private: bool, timeout: float
) -> Answer:
    """POST the message once; never raises for what the endpoint or the network did."""
    at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    status: int | None = None
    excerpt: str | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            target = await resolve_async(delivery.url, allow_private=allow_private)
            url = httpx.URL(delivery.url)
            host_header = url.netloc.decode("ascii")
            address = target.address
            ip_host = str(address)
            body = body_of(delivery.payload)
            headers = {**signed_headers(delivery, body, at), "host": host_header}
            extensions: dict[str, Any] = {}
            if target.scheme == "https":
                extensions["sni_hostname"] = target.host
            request = http.build_request(
                "POST",
                url.copy_with(host=ip_host),
                content=body.encode(),
                headers=headers,
                extensions=extensions,
            )
            response = await http.send(request, stream=True)
            try:
                status = response.status_code
                excerpt = await _excerpt(response)
            finally:
                await response.aclose()
    except UnsafeUrl as exc:
        error = f"{exc.code}: {exc.message}"
    except TimeoutError:
        error = f"timeout: no answer within {timeout:g} s"
    except httpx.TimeoutException as exc:
        error = f"timeout: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    duration_ms = int((time.monotonic() - started) * 1000)
    return Answer(at, duration_ms, status, excerpt, error)


async def _excerpt(response: httpx.Response) -> str:
    data = bytearray()
    async for chunk in response.aiter_raw():
        data.extend(chunk)
        if len(data) >= EXCERPT_BYTES:
            break
    return bytes(data[:EXCERPT_BYTES]).decode("utf-8", "replace")
