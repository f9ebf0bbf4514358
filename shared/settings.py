"""All XNovu configuration: environment variables read by one pydantic-settings class."""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.redis_client import is_sentinel, parse_sentinel_url

DEV_ENTERPRISE_ID = uuid.UUID("00000000-0000-0000-0000-000000000001")
DEV_API_KEY = "xnk_dev_0000000000000000000000000000000000000001"
EMULATOR_SECRET_KEY = "xnovu-emulator-secret"


# `make run` writes the embedded servers' URLs here, in XNOVU_DATA_DIR, while it runs; `xnovu`
# commands read it when DATABASE_URL is not set (shared/cli.py).
DEV_ENV_FILE = "dev.env"


class MissingSetting(RuntimeError):
    """A setting the command or process needs is not set."""


class Settings(BaseSettings):
    """Process-wide settings; every field is an environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Where things live. Unset DATABASE_URL / REDIS_URL make `xnovu dev` start embedded servers.
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    # Who runs `xnovu migrate` when it is not DATABASE_URL's role: the schema's owner, while
    # the services connect as a role that owns nothing (README, "Production").
    migrations_database_url: str | None = Field(default=None, alias="MIGRATIONS_DATABASE_URL")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    # The master a `sentinel://` REDIS_URL (or RATE_LIMIT_REDIS_URL) stands for, as named in the
    # Sentinels' `sentinel monitor` (docs/scaling.md); required with such a URL.
    redis_sentinel_master: str | None = Field(
        default=None, min_length=1, max_length=200, alias="REDIS_SENTINEL_MASTER"
    )
    novu_api_url: str | None = Field(default=None, alias="NOVU_API_URL")
    novu_secret_key: str | None = Field(default=None, alias="NOVU_SECRET_KEY")
    data_dir: Path = Field(default=Path(".xnovu"), alias="XNOVU_DATA_DIR")

    # Ports and bind addresses.
    api_host: str = Field(default="127.0.0.1", alias="API_HOST")
    api_port: int = Field(default=8000, alias="API_PORT")
    flower_port: int = Field(default=5555, alias="FLOWER_PORT")
    flower_basic_auth: str | None = Field(default=None, alias="FLOWER_BASIC_AUTH")
    # Prometheus metrics of a worker and of beat, each on a port of its own (shared/metrics.py);
    # unset, none is served. The loopback by default: the series are every enterprise's.
    metrics_host: str = Field(default="127.0.0.1", alias="METRICS_HOST")
    worker_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, alias="WORKER_METRICS_PORT"
    )
    beat_metrics_port: int | None = Field(default=None, ge=1, le=65535, alias="BEAT_METRICS_PORT")
    novu_emulator_port: int = Field(default=3100, alias="NOVU_EMULATOR_PORT")
    embedded_postgres_port: int = Field(default=54329, alias="XNOVU_PG_PORT")
    embedded_redis_port: int = Field(default=63790, alias="XNOVU_REDIS_PORT")

    # Demo enterprise seeded by `make run`.
    dev_enterprise_id: uuid.UUID = Field(default=DEV_ENTERPRISE_ID, alias="XNOVU_DEV_ENTERPRISE_ID")
    dev_api_key: str = Field(default=DEV_API_KEY, alias="XNOVU_DEV_API_KEY")

    # Novu client.
    novu_timeout_seconds: float = Field(default=10.0, alias="NOVU_TIMEOUT_SECONDS")
    novu_connect_timeout_seconds: float = Field(default=3.0, alias="NOVU_CONNECT_TIMEOUT_SECONDS")
    # The bridge (/api/novu) checks Novu's HMAC signature on every call but health-check. Only a
    # development setup talking to a Novu that cannot sign may switch it off; a warning is
    # logged on first use.
    novu_bridge_verify_signatures: bool = Field(default=True, alias="NOVU_BRIDGE_VERIFY_SIGNATURES")
    # Where the Novu emulator calls the bridge to execute steps (unset: it does not).
    novu_bridge_url: str | None = Field(default=None, alias="NOVU_BRIDGE_URL")
    # The address Novu reaches this service's bridge at (`.../api/novu`): what `xnovu novu sync`
    # and the automatic sync register with Novu (docs/architecture.md, "Novu").
    novu_bridge_public_url: str | None = Field(default=None, alias="NOVU_BRIDGE_PUBLIC_URL")
    # How often beat checks whether the discover document changed since the last sync.
    novu_sync_check_seconds: float = Field(default=30.0, gt=0, alias="NOVU_SYNC_CHECK_SECONDS")
    # The Events rate limit of the Novu tier, in tokens per second (Free 60, Pro 240, Team 600,
    # Enterprise 6,000): every worker process shares one budget of this size in Redis.
    novu_events_rps: float = Field(default=60.0, gt=0, alias="NOVU_EVENTS_RPS")
    # How long a notification of a workflow Novu does not know yet waits for a sync to make it
    # known (from the first time Novu refused it) before it fails.
    novu_sync_wait_seconds: float = Field(default=300.0, ge=0, alias="NOVU_SYNC_WAIT_SECONDS")
    # Novu's subscribers and topics are global to a Novu environment: every subscriberId and
    # topicKey XNovu sends is prefixed with its enterprise's id (docs/architecture.md,
    # "Recipients"). Off sends them bare, as before: only for moving a deployment over.
    novu_namespace_subscribers: bool = Field(default=True, alias="NOVU_NAMESPACE_SUBSCRIBERS")
    # The signing secret (`whsec_...`) of the endpoint registered in Novu's dashboard for its
    # message webhooks (`POST /api/novu/webhooks`, docs/architecture.md, "Delivery events from
    # Novu"). Unset, that endpoint answers 403 to every request.
    novu_webhook_secret: SecretStr | None = Field(default=None, alias="NOVU_WEBHOOK_SECRET")
    # Where the Novu emulator sends its message webhooks, and the secret it signs them with
    # (unset: it sends none).
    novu_emulator_webhook_url: str | None = Field(default=None, alias="NOVU_EMULATOR_WEBHOOK_URL")
    novu_emulator_webhook_secret: SecretStr | None = Field(
        default=None, alias="NOVU_EMULATOR_WEBHOOK_SECRET"
    )

    # Delivery and retry policy.
    delivery_max_attempts: int = Field(default=8, ge=1, alias="DELIVERY_MAX_ATTEMPTS")
    retry_base_seconds: float = Field(default=1.0, gt=0, alias="RETRY_BASE_SECONDS")
    retry_max_seconds: float = Field(default=300.0, gt=0, alias="RETRY_MAX_SECONDS")
    processing_lease_seconds: int = Field(default=60, ge=5, alias="PROCESSING_LEASE_SECONDS")
    reconcile_interval_seconds: float = Field(default=2.0, gt=0, alias="RECONCILE_INTERVAL_SECONDS")
    redeliver_after_seconds: int = Field(default=15, ge=1, alias="REDELIVER_AFTER_SECONDS")
    reconcile_batch_size: int = Field(default=500, ge=1, alias="RECONCILE_BATCH_SIZE")
    # Retention (shared/notifications/retention.py): finished notifications and their history
    # are removed this many days after they were created, finished and due; 0 keeps them.
    retention_days: int = Field(default=30, ge=0, le=36500, alias="RETENTION_DAYS")
    retention_batch_size: int = Field(default=1000, ge=1, le=10000, alias="RETENTION_BATCH_SIZE")
    retention_interval_seconds: float = Field(
        default=300.0, gt=0, alias="RETENTION_INTERVAL_SECONDS"
    )
    # Scheduled rules (shared/rules/scheduler.py): how often beat fires the due ones, and what
    # a fire time missed by more than a minute (downtime) does: `latest` fires the latest
    # missed time once, never a burst; `skip` waits for the next fire time.
    rules_tick_seconds: float = Field(default=2.0, gt=0, le=60, alias="RULES_TICK_SECONDS")
    rules_misfire: Literal["latest", "skip"] = Field(default="latest", alias="RULES_MISFIRE")
    # One active beat (shared/beat_lock.py): its lease in Redis lasts this long, renewed every
    # third of it; a standby beat takes over at most this long (plus a second) after the
    # active one died without giving it up.
    beat_lock_ttl_seconds: float = Field(default=15.0, ge=1, le=300, alias="BEAT_LOCK_TTL_SECONDS")
    # Countdowns live in broker messages only when shorter than this; longer delays stay in the
    # database (next_attempt_at) and are released by beat. Keep it well below the visibility
    # timeout.
    max_countdown_seconds: int = Field(default=60, ge=0, alias="MAX_COUNTDOWN_SECONDS")
    broker_visibility_timeout: int = Field(default=3600, ge=60, alias="BROKER_VISIBILITY_TIMEOUT")
    worker_prefetch_multiplier: int = Field(default=1, ge=1, alias="WORKER_PREFETCH_MULTIPLIER")

    # Limits of the HTTP API.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, alias="MAX_BODY_BYTES")
    max_payload_bytes: int = Field(default=262_144, ge=256, alias="MAX_PAYLOAD_BYTES")
    # How deeply a trigger's payload or overrides may nest (422 payload_too_deep above it). The
    # worker's JSON encoder refuses about 250 levels, and Python's parsers and jsonschema
    # recurse once a level: 64 keeps far from both (docs/architecture.md, "Hostile input").
    max_payload_depth: int = Field(default=32, ge=1, le=64, alias="MAX_PAYLOAD_DEPTH")
    max_recipients: int = Field(default=100, ge=1, le=100, alias="MAX_RECIPIENTS")
    max_page_size: int = Field(default=200, ge=1, alias="MAX_PAGE_SIZE")
    # Requests per second each API key may make, with bursts up to RATE_LIMIT_BURST; counted in
    # Redis so that every API process shares one budget per key. 0 switches the limit off.
    rate_limit_per_second: float = Field(default=200.0, ge=0, alias="RATE_LIMIT_PER_SECOND")
    rate_limit_burst: int = Field(default=400, ge=1, alias="RATE_LIMIT_BURST")
    # Where the limiter counts (unset: REDIS_URL). When it is unreachable, requests are accepted.
    rate_limit_redis_url: str | None = Field(default=None, alias="RATE_LIMIT_REDIS_URL")
    # How long an API process trusts a key it has looked up; a revoked key stops working in
    # every process within this time. A key that failed is refused for as long without a
    # lookup. 0: look the key up on every request.
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=300, alias="API_KEY_CACHE_SECONDS")
    # Failed key lookups each client address may cause per second, with bursts up to
    # AUTH_FAILURE_BURST; above it 429 (api/authguard.py). Counted where the request rate is.
    # 0 switches the limit off.
    auth_failures_per_second: float = Field(default=1.0, ge=0, alias="AUTH_FAILURES_PER_SECOND")
    auth_failure_burst: int = Field(default=20, ge=1, alias="AUTH_FAILURE_BURST")
    # The operator's credential (`Authorization: Bearer <token>`) for process-wide figures:
    # /metrics and /api/operator/stats. Unset, those answer 403 to everyone.
    operator_token: SecretStr | None = Field(
        default=None, min_length=32, alias="XNOVU_OPERATOR_TOKEN"
    )
    # Signs the delivery log page's session cookies (/ui/, api/ui/session.py). Unset, the page
    # answers 503; every API process behind one address needs the same value.
    ui_session_secret: SecretStr | None = Field(
        default=None, min_length=32, alias="UI_SESSION_SECRET"
    )
    # How long a delivery log session lasts after login (the key is checked on every page).
    ui_session_max_age_seconds: int = Field(
        default=8 * 3600, ge=60, le=7 * 24 * 3600, alias="UI_SESSION_MAX_AGE_SECONDS"
    )
    # Single triggers that arrive together are recorded in one transaction (group commit) of
    # at most this many rows per API process.
    trigger_batch_max_rows: int = Field(default=500, ge=1, le=1000, alias="TRIGGER_BATCH_MAX_ROWS")
    db_statement_timeout_ms: int = Field(default=5000, ge=100, alias="DB_STATEMENT_TIMEOUT_MS")
    db_pool_size: int = Field(default=10, ge=1, alias="DB_POOL_SIZE")
    # DATABASE_URL is a pooler in transaction mode (PgBouncer's pool_mode = transaction): the
    # service then keeps nothing in a server session between transactions (docs/scaling.md).
    db_transaction_pooler: bool = Field(default=False, alias="DB_TRANSACTION_POOLER")

    # Workflows and templates.
    workflows_dir: Path | None = Field(default=None, alias="XNOVU_WORKFLOWS_DIR")
    registry_check_interval_seconds: float = Field(
        default=2.0, gt=0, le=5, alias="REGISTRY_CHECK_INTERVAL_SECONDS"
    )
    template_cache_ttl_seconds: float = Field(
        default=300.0, ge=0, alias="TEMPLATE_CACHE_TTL_SECONDS"
    )
    template_max_output_bytes: int = Field(
        default=1_000_000, ge=1024, alias="TEMPLATE_MAX_OUTPUT_BYTES"
    )
    template_render_timeout_seconds: float = Field(
        default=2.0, gt=0, alias="TEMPLATE_RENDER_TIMEOUT_SECONDS"
    )
    template_max_depth: int = Field(default=5, ge=1, le=20, alias="TEMPLATE_MAX_DEPTH")
    # What one render's values may take, counted as they are built (shared/templates/limits.py).
    template_max_memory_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024 * 1024, alias="TEMPLATE_MAX_MEMORY_BYTES"
    )
    # Previews render on the API's threads, sharing its CPU with every request: how many may
    # run at once in one API process, and of those how many for one enterprise (429 beyond).
    preview_concurrency: int = Field(default=2, ge=1, alias="PREVIEW_CONCURRENCY")
    preview_concurrency_per_enterprise: int = Field(
        default=1, ge=1, alias="PREVIEW_CONCURRENCY_PER_ENTERPRISE"
    )
    # How many worker children, in all the workers, may run renders that are slow (one per
    # enterprise at most): the rest are kept for enterprises whose renders are fast.
    render_slow_lanes: int = Field(default=1, ge=1, alias="RENDER_SLOW_LANES")

    # Status webhooks to enterprises (docs/architecture.md, "Status webhooks"). Endpoints on
    # private, loopback, link-local or reserved addresses are refused (at registration and at
    # each delivery) unless this is true: tests and `make run` set it for their local receivers.
    webhook_allow_private_networks: bool = Field(
        default=False, alias="WEBHOOK_ALLOW_PRIVATE_NETWORKS"
    )
    webhook_max_endpoints_per_enterprise: int = Field(
        default=20, ge=1, le=1000, alias="WEBHOOK_MAX_ENDPOINTS_PER_ENTERPRISE"
    )
    # Seconds to wait after each failed attempt (comma-separated); when they are used up the
    # message is failed. Svix's schedule: about 27 hours of retries.
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 36000], alias="WEBHOOK_RETRY_SCHEDULE"
    )
    webhook_connect_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, alias="WEBHOOK_CONNECT_TIMEOUT_SECONDS"
    )
    # The whole request (resolve, connect, send, answer) of one attempt.
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, alias="WEBHOOK_TIMEOUT_SECONDS"
    )
    # Tasks delivering to one endpoint at once, so one slow endpoint holds at most this many of
    # the webhook workers' threads; and messages per task, sent one after another.
    webhook_max_in_flight_per_endpoint: int = Field(
        default=2, ge=1, le=50, alias="WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT"
    )
    # ... and tasks delivering to one enterprise's endpoints at once.
    webhook_max_in_flight_per_enterprise: int = Field(
        default=4, ge=1, le=100, alias="WEBHOOK_MAX_IN_FLIGHT_PER_ENTERPRISE"
    )
    webhook_batch_size: int = Field(default=20, ge=1, le=500, alias="WEBHOOK_BATCH_SIZE")
    # A task starts no attempt after this long: it hands the rest of its batch back.
    webhook_task_seconds: float = Field(default=30.0, gt=0, alias="WEBHOOK_TASK_SECONDS")
    # How often beat hands due messages to the webhook workers.
    webhook_dispatch_interval_seconds: float = Field(
        default=1.0, gt=0, alias="WEBHOOK_DISPATCH_INTERVAL_SECONDS"
    )
    # An endpoint is disabled when every attempt has failed for this long, or when this many
    # messages in a row ran out of retries.
    webhook_disable_after_seconds: float = Field(
        default=5 * 24 * 3600, gt=0, alias="WEBHOOK_DISABLE_AFTER_SECONDS"
    )
    webhook_disable_after_failed_messages: int = Field(
        default=50, ge=1, alias="WEBHOOK_DISABLE_AFTER_FAILED_MESSAGES"
    )

    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    # json: one JSON object a line (production); console: key=value lines (`make run`).
    log_format: Literal["json", "console"] = Field(default="json", alias="LOG_FORMAT")
    # FastAPI's own OpenTelemetry instrumentation (spans, metrics, log records through the
    # global OpenTelemetry providers). Off: the service's metrics are Prometheus' (/metrics)
    # and its logs the lines above, and checking for providers on every request cost the
    # trigger about 2 % of its CPU (docs/performance.md).
    fastapi_telemetry: bool = Field(default=False, alias="FASTAPI_TELEMETRY")

    @field_validator(
        "operator_token",
        "ui_session_secret",
        "worker_metrics_port",
        "beat_metrics_port",
        mode="before",
    )
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        # Empty (a compose `${VAR:-}`, a blanked .env line) means unset: no operator credential,
        # no delivery log page.
        return None if value == "" else value

    @field_validator("novu_webhook_secret", "novu_emulator_webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, value: object) -> object:
        # Empty means unset; anything else must be a Standard Webhooks secret, refused at
        # startup rather than at the first webhook.
        if value == "" or value is None:
            return None
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str) or not is_webhook_secret(value):
            raise ValueError("must be `whsec_` followed by base64 of at least 16 bytes")
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _retry_schedule(cls, value: object) -> object:
        # "5,300,1800" in the environment; each delay a positive number of seconds.
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            if not value or len(value) > 20:
                raise ValueError("between 1 and 20 delays")
            if any(float(delay) <= 0 for delay in value):
                raise ValueError("each delay must be more than 0 seconds")
        return value

    @property
    def effective_novu_api_url(self) -> str:
        """Real Novu when configured, otherwise the local emulator."""
        return self.novu_api_url or f"http://127.0.0.1:{self.novu_emulator_port}"

    @property
    def effective_novu_secret_key(self) -> str:
        """The configured secret key, or the emulator's development key."""
        return self.novu_secret_key or EMULATOR_SECRET_KEY

    def require_database_url(self) -> str:
        """DATABASE_URL normalised for SQLAlchemy's psycopg 3 driver."""
        if not self.database_url:
            raise MissingSetting("DATABASE_URL is not set (run through `xnovu dev` or set it)")
        return to_sqlalchemy_url(self.database_url)

    def require_migrations_database_url(self) -> str:
        """MIGRATIONS_DATABASE_URL, else DATABASE_URL, normalised as require_database_url."""
        if self.migrations_database_url:
            return to_sqlalchemy_url(self.migrations_database_url)
        return self.require_database_url()

    @model_validator(mode="after")
    def _sentinel_urls_are_whole(self) -> Settings:
        for name, url in (
            ("REDIS_URL", self.redis_url),
            ("RATE_LIMIT_REDIS_URL", self.rate_limit_redis_url),
        ):
            if url is None or not is_sentinel(url):
                continue
            try:
                parse_sentinel_url(url)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if not self.redis_sentinel_master:
                raise ValueError(f"{name} is a sentinel:// URL: set REDIS_SENTINEL_MASTER too")
        return self

    def require_sentinel_master(self) -> str:
        """REDIS_SENTINEL_MASTER, or a clear error when it is missing."""
        if not self.redis_sentinel_master:
            raise MissingSetting("REDIS_SENTINEL_MASTER is not set (needed by sentinel:// URLs)")
        return self.redis_sentinel_master

    def require_redis_url(self) -> str:
        """REDIS_URL, or a clear error when it is missing."""
        if not self.redis_url:
            raise MissingSetting("REDIS_URL is not set (run through `xnovu dev` or set it)")
        return self.redis_url


WEBHOOK_SECRET_PREFIX = "whsec_"


def is_webhook_secret(value: str) -> bool:
    """Whether a string is a Standard Webhooks secret: `whsec_` + base64 of >= 16 bytes."""
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (ValueError, binascii.Error):
        return False
    return len(key) >= 16


def new_webhook_secret() -> str:
    """A new Standard Webhooks secret: `whsec_` + base64 of 24 random bytes, as Svix makes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def to_sqlalchemy_url(url: str) -> str:
    """Accept plain postgres:// URLs and point them at the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
