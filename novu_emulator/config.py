"""The emulator's bridge configuration: what `POST /_emulator/config` accepts.

    {
      "bridgeUrl": "http://127.0.0.1:8000/api/novu",  # null: no bridge calls
      "timeoutMs": 5000,            # per bridge request attempt (Novu: 5 s)
      "attempts": 4,                # in all, for retryable answers (Novu: 1 + 3 retries)
      "retryBaseMs": 1000,          # wait before retry n is retryBaseMs * 2^n (Novu: 2, 4, 8 s)
      "discoverTtlSeconds": 5,      # how long a bridge's discover answer is reused
      "stepConcurrency": 50         # step workers, and HTTP connections, executing steps
    }

Omitted fields take their defaults; `DELETE /_emulator/config` restores the configuration the
emulator was started with (`--bridge-url` / NOVU_BRIDGE_URL).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BridgeConfig(BaseModel):
    """Where and how the emulator calls the bridge (`POST /_emulator/config`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    bridge_url: str | None = Field(default=None, alias="bridgeUrl", max_length=2048)
    timeout_ms: int = Field(default=5000, ge=50, le=60_000, alias="timeoutMs")
    attempts: int = Field(default=4, ge=1, le=10)
    retry_base_ms: int = Field(default=1000, ge=0, le=60_000, alias="retryBaseMs")
    discover_ttl_seconds: float = Field(default=5.0, ge=0, le=3600, alias="discoverTtlSeconds")
    step_concurrency: int = Field(default=50, ge=1, le=1000, alias="stepConcurrency")

    @field_validator("bridge_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_http_url(value):
            raise ValueError("bridgeUrl must be an absolute http(s) URL")
        return value

    def to_json(self) -> dict[str, Any]:
        """The configuration as `GET /_emulator/config` shows it."""
        return self.model_dump(mode="json", by_alias=True)


def is_http_url(value: str) -> bool:
    """Whether a string is an absolute http(s) URL with a host."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def parse_bridge_config(document: Any) -> BridgeConfig:
    """Validate a `POST /_emulator/config` body; raises `pydantic.ValidationError`."""
    return BridgeConfig.model_validate(document)
