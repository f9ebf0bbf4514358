"""The emulator's fault configuration: what `POST /_emulator/faults` accepts.

See the package docstring for the format. Status rules are mutually
exclusive outcomes of one random draw per trigger request, so their rates add
up (at most 1): `[{500, 0.1}, {429, 0.05}, {400, 0.01}]` fails 16 % of calls.
Rules with `"scope": "transaction"` are drawn apart from those, once per
transactionId (their own rates add up to at most 1).
"""

from __future__ import annotations

import enum
import random
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

# Top-level keys of the one-rule shorthand `{"status": 500, "rate": 0.3, ...}`.
_SHORTHAND_RULE_KEYS = ("status", "rate", "retryAfter", "sticky", "message", "scope")


class _FaultModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FaultScope(enum.StrEnum):
    # A new draw for every trigger request: a transient fault.
    REQUEST = "request"
    # One draw per transactionId, the first time it is seen; a transactionId it picks gets the
    # same answer on every single trigger carrying it, as a trigger Novu rejects for what it
    # is (a validation error) would.
    TRANSACTION = "transaction"


class StatusFault(_FaultModel):
    """With probability `rate`, a trigger request is answered `status` and nothing is recorded."""

    status: int = Field(ge=400, le=599)
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    retry_after: int | None = Field(default=None, ge=0, alias="retryAfter")
    # Sticky: the failure happens inside Novu's handler, so Novu caches it under the
    # request's Idempotency-Key and replays it for 24 h. Otherwise it comes from in
    # front of Novu's idempotency layer (gateway, throttler) and is not remembered.
    sticky: bool = False
    message: str | None = Field(default=None, max_length=1000)
    scope: FaultScope = FaultScope.REQUEST

    @model_serializer(mode="wrap")
    def _omit_default_scope(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Shown only when it is not the default, so configurations read as they were written.
        document: dict[str, Any] = handler(self)
        if self.scope is FaultScope.REQUEST:
            document.pop("scope", None)
        return document

    def retry_after_header(self) -> str | None:
        """`Retry-After` to send: always for 429 (1 s unless set), otherwise only when set."""
        if self.retry_after is not None:
            return str(self.retry_after)
        return "1" if self.status == 429 else None


class ProviderFailure(_FaultModel):
    """With probability `rate`, a `channel` step's message is refused by its provider: the
    message is `failed` and Novu's `message.failed` webhook is sent (webhooks.py)."""

    channel: Literal["email", "in_app", "sms", "push", "chat"]
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    message: str = Field(
        default="the provider refused the message (injected by the emulator)",
        min_length=1,
        max_length=1000,
    )


class FaultConfig(_FaultModel):
    """Every fault the emulator injects; the default injects none."""

    rules: tuple[StatusFault, ...] = ()
    latency_ms: int = Field(default=0, ge=0, le=120_000, alias="latencyMs")
    # A spike: this fraction of /v1 requests waits latencySpikeMs more.
    latency_spike_rate: float = Field(default=0.0, ge=0.0, le=1.0, alias="latencySpikeRate")
    latency_spike_ms: int = Field(default=0, ge=0, le=120_000, alias="latencySpikeMs")
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0, alias="dropRate")
    drop_after_accept_rate: float = Field(default=0.0, ge=0.0, le=1.0, alias="dropAfterAcceptRate")
    # Novu's queue lag: accepted triggers wait this long before their steps run. Not
    # cancellable: Novu cancels only runs held in a delay step.
    hold_seconds: float = Field(default=0.0, ge=0.0, le=86_400.0, alias="holdSeconds")
    rate_limit_per_second: int | None = Field(default=None, ge=1, alias="rateLimitPerSecond")
    # A second trigger of a transactionId this soon after the first runs too (None: the
    # emulator's startup value, 100 ms unless --dedupe-race-window-ms says otherwise).
    dedupe_race_window_ms: int | None = Field(
        default=None, ge=0, le=3_600_000, alias="dedupeRaceWindowMs"
    )
    # Providers refusing channel steps' messages after the bridge answered them.
    provider_failures: tuple[ProviderFailure, ...] = Field(default=(), alias="providerFailures")

    @model_validator(mode="before")
    @classmethod
    def _lift_shorthand_rule(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(key in data for key in _SHORTHAND_RULE_KEYS):
            return data
        if "status" not in data:
            raise ValueError("`rate`, `retryAfter`, `sticky`, `message`, `scope` need a `status`")
        if "rules" in data:
            raise ValueError("give either a top-level `status` or `rules`, not both")
        rest = {key: value for key, value in data.items() if key not in _SHORTHAND_RULE_KEYS}
        rule = {key: data[key] for key in _SHORTHAND_RULE_KEYS if key in data}
        return {**rest, "rules": [rule]}

    @model_validator(mode="after")
    def _rates_fit_one_draw(self) -> FaultConfig:
        for scope in FaultScope:
            if sum(rule.rate for rule in self.rules if rule.scope is scope) > 1.0 + 1e-9:
                raise ValueError(
                    f"the rates of the {scope.value}-scoped status rules must add up to at most 1"
                )
        return self

    def pick_status_fault(
        self, rng: random.Random, scope: FaultScope = FaultScope.REQUEST
    ) -> StatusFault | None:
        """The rule of `scope` that fires, if any (one draw for all rules of that scope)."""
        rules = [rule for rule in self.rules if rule.scope is scope]
        if not rules:
            return None
        draw = rng.random()
        threshold = 0.0
        for rule in rules:
            threshold += rule.rate
            if draw < threshold:
                return rule
        return None

    def provider_failure(self, channel: str, rng: random.Random) -> ProviderFailure | None:
        """The provider failure that hits a message of this channel, if one does."""
        for failure in self.provider_failures:
            if failure.channel == channel and rng.random() < failure.rate:
                return failure
        return None

    def has_transaction_rules(self) -> bool:
        """Whether any rule is decided per transactionId."""
        return any(rule.scope is FaultScope.TRANSACTION for rule in self.rules)

    def to_json(self) -> dict[str, Any]:
        """The configuration as `GET /_emulator/faults` shows it."""
        return self.model_dump(mode="json", by_alias=True)


def parse_fault_config(document: Any) -> FaultConfig:
    """Validate a `POST /_emulator/faults` body; raises `pydantic.ValidationError`."""
    return FaultConfig.model_validate(document)


def validation_problems(exc: ValidationError) -> list[dict[str, str]]:
    """A JSON-safe list of what was wrong with a fault configuration."""
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "message": error["msg"]}
        for error in exc.errors(include_url=False)
    ]
