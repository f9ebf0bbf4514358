"""Telling Novu which workflows we serve: the bridge sync (docs/architecture.md, "Novu").

Novu runs only the workflows it knows, and learns code-first ones by a sync: `POST
/v1/bridge/sync` with our bridge's public URL, after which Novu calls the bridge's `discover`,
stores every workflow it lists and deletes the ones it no longer lists. A trigger of a
workflow Novu does not know answers 422.

- `request_sync(reason)`: ask for a sync soon. Debounced in Redis, so a burst of requests from
  any number of processes becomes one `xnovu.novu_sync` task; never raises.
- `sync_exclusively(...)`: what the task (and `xnovu novu sync`) runs: under a Redis lock, so
  no two processes sync at once (a task waits for a running sync, then syncs once more),
  `sync_now`.
- `sync_now(...)`: build the discover document as the bridge answers it, hash it, call Novu's
  sync and record the outcome: one `novu_sync_run` row, and per workflow key a
  `novu_workflow_sync` row (what the workflow API shows as `novu_sync`). Safe to repeat.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import delete, event, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import NovuSyncRun, NovuWorkflowSync
from shared.db.session import transaction
from shared.novu.client import NovuClient
from shared.novu.errors import NovuError
from shared.novu.schemas import canonical_json
from shared.process import PerProcess
from shared.queue import PUBLISH_TIMEOUT_SECONDS, TASK_QUEUES, TaskName, producer
from shared.redis_client import fail_fast_client, redis_from_url
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The `source` Novu records a sync under (the Novu CLI sends its own name).
SYNC_SOURCE = "xnovu"
# Requests while the mark lives become one sync: the task clears the mark once it holds the lock,
# before it reads the workflows, so a request the mark swallowed was committed before that read,
# and a later one publishes a task of its own. The expiry only bounds how long a lost task's mark
# swallows requests. No countdown: a worker holds a countdown message unacknowledged until it is
# due, and kombu's Redis transport crashes the worker when the broker connection drops while it
# restores such messages (seen in tests/integration/test_broker_outage.py).
DEBOUNCE_SECONDS = 2.0
DEBOUNCE_KEY = "xnovu:novu-sync:requested"
LOCK_KEY = "xnovu:novu-sync:lock"
# Novu calls discover (5 s timeout, retried) and then stores every workflow before it answers;
# far longer than a trigger, and the lock outlives it so a crashed holder frees it in time.
SYNC_TIMEOUT_SECONDS = 60.0
LOCK_SECONDS = 2 * SYNC_TIMEOUT_SECONDS + 10
# novu_sync_run keeps this many of the latest runs.
KEPT_RUNS = 1000
# The reason beat's periodic check gives.
PERIODIC_CHECK = "periodic check"
# session.info key of the reasons to request a sync for once the session commits.
_AFTER_COMMIT = "xnovu_novu_sync_after_commit"


class SyncNotConfigured(RuntimeError):
    """NOVU_BRIDGE_PUBLIC_URL is not set: Novu has no address to call our bridge at."""


class SyncBusy(RuntimeError):
    """Another process holds the sync lock."""


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What one sync declared and how it ended (`skipped`: nothing changed, nothing sent)."""

    reason: str
    bridge_url: str
    discover_hash: str
    workflow_keys: tuple[str, ...]
    error: str | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (the task's result, the CLI's report)."""
        return {
            "reason": self.reason,
            "bridgeUrl": self.bridge_url,
            "discoverHash": self.discover_hash,
            "workflows": list(self.workflow_keys),
            "error": self.error,
            "skipped": self.skipped,
        }


# -- requesting a sync ---------------------------------------------------------------------------

_debounce_redis = PerProcess(
    lambda: fail_fast_client(get_settings().require_redis_url(), PUBLISH_TIMEOUT_SECONDS)
)


def request_sync(reason: str) -> None:
    """Have a worker sync with Novu within seconds; a burst of requests from every process
    becomes one sync. Never raises: when Redis refuses, the failure is logged and beat's
    periodic check syncs once the discover document differs from the last one synced."""
    if not get_settings().novu_bridge_public_url:
        log.warning("Novu sync not requested (%s): NOVU_BRIDGE_PUBLIC_URL is not set", reason)
        return
    try:
        marked = _debounce_redis.get().set(
            DEBOUNCE_KEY, reason, nx=True, px=int(DEBOUNCE_SECONDS * 1000)
        )
        if not marked:
            return  # a sync is already on its way, and reads the workflows after this commit
        producer().send_task(
            TaskName.NOVU_SYNC.value,
            args=[reason],
            queue=TASK_QUEUES[TaskName.NOVU_SYNC].value,
            retry=False,
        )
    except Exception as exc:
        log.warning("could not request a Novu sync (%s): %s", reason, exc)


def request_sync_after_commit(session: Session, reason: str) -> None:
    """`request_sync(reason)` once the session's transaction commits; forgotten if it rolls
    back (docs/architecture.md, guarantee 1: publish after commit)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(reason)


@event.listens_for(Session, "after_commit")
def _request_after_commit(session: Session) -> None:
    reasons = session.info.pop(_AFTER_COMMIT, None)
    if reasons:
        request_sync("; ".join(dict.fromkeys(reasons)))


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


# -- syncing -------------------------------------------------------------------------------------


def discover_document() -> dict[str, Any]:
    """The bridge's `discover` answer as it stands now, built without HTTP."""
    # The catalog lives with the bridge in api/bridge/ (it also answers health-check and code);
    # it is pure domain code over shared/, imported here rather than copied (one definition of
    # what we declare to Novu). docs/architecture.md, "Novu", names this one exception.
    from api.bridge.catalog import load_catalog

    return load_catalog().discover()


def document_hash(document: Any) -> str:
    """sha256 of the document's canonical JSON: equal documents, equal hashes."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def require_bridge_url(settings: Settings) -> str:
    """NOVU_BRIDGE_PUBLIC_URL, or SyncNotConfigured saying what to set."""
    if not settings.novu_bridge_public_url:
        raise SyncNotConfigured(
            "NOVU_BRIDGE_PUBLIC_URL is not set: set it to the address Novu reaches this "
            "service's bridge at, e.g. https://xnovu.example.com/api/novu"
        )
    return settings.novu_bridge_public_url


def sync_client(settings: Settings) -> NovuClient:
    """A Novu client for the sync call, whose answer takes far longer than a trigger's."""
    return NovuClient(
        settings.effective_novu_api_url,
        settings.effective_novu_secret_key,
        timeout=SYNC_TIMEOUT_SECONDS,
        connect_timeout=settings.novu_connect_timeout_seconds,
    )


def sync_now(*, reason: str, force: bool = True, settings: Settings | None = None) -> SyncOutcome:
    """Sync Novu with the discover document now and record the outcome; with `force` False,
    only when the document (or where it goes) changed since the last successful sync.

    A failure Novu or the network reports is recorded and returned as the outcome's `error`;
    database errors propagate."""
    settings = settings or get_settings()
    bridge_url = require_bridge_url(settings)
    novu_api_url = settings.effective_novu_api_url
    document = discover_document()
    digest = document_hash(document)
    entries = {w["workflowId"]: document_hash(w) for w in document["workflows"]}
    outcome = SyncOutcome(reason, bridge_url, digest, tuple(entries))
    if not force:
        with transaction() as session:
            last = last_success(session)
        if last is not None and (last.discover_hash, last.bridge_url, last.novu_api_url) == (
            digest,
            bridge_url,
            novu_api_url,
        ):
            return replace(outcome, skipped=True)
    started = datetime.now(UTC)
    try:
        with sync_client(settings) as novu:
            novu.sync_bridge(bridge_url, source=SYNC_SOURCE)
    except NovuError as exc:
        outcome = replace(outcome, error=str(exc))
    with transaction() as session:
        record_sync(session, outcome, entries=entries, started=started, novu_api_url=novu_api_url)
    if outcome.ok:
        log.info("Novu sync (%s): %d workflows", reason, len(entries))
    else:
        log.warning("Novu sync (%s) failed: %s", reason, outcome.error)
    return outcome


def last_success(session: Session) -> NovuSyncRun | None:
    """The latest sync Novu took."""
    R = NovuSyncRun
    return session.scalars(
        select(R).where(R.error.is_(None)).order_by(R.id.desc()).limit(1)
    ).one_or_none()


def record_sync(
    session: Session,
    outcome: SyncOutcome,
    *,
    entries: Mapping[str, str],
    started: datetime,
    novu_api_url: str,
) -> None:
    """One run row, and each declared key's row: synced (hash, time, no error) when Novu took
    it, else the error beside what Novu last took; keys Novu dropped lose their row."""
    finished = datetime.now(UTC)
    session.add(
        NovuSyncRun(
            reason=outcome.reason,
            started_at=started,
            finished_at=finished,
            novu_api_url=novu_api_url,
            bridge_url=outcome.bridge_url,
            discover_hash=outcome.discover_hash,
            workflow_keys=list(outcome.workflow_keys),
            error=outcome.error,
        )
    )
    S = NovuWorkflowSync
    if entries:
        rows = [
            {
                "workflow_key": key,
                "discover_hash": digest if outcome.ok else None,
                "synced_at": finished if outcome.ok else None,
                "last_attempt_at": finished,
                "last_error": outcome.error,
            }
            for key, digest in entries.items()
        ]
        stmt = insert(S).values(rows)
        changed = ["last_attempt_at", "last_error"]
        if outcome.ok:
            changed += ["discover_hash", "synced_at"]
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[S.workflow_key],
                set_={name: stmt.excluded[name] for name in changed},
            )
        )
    if outcome.ok:
        session.execute(delete(S).where(S.workflow_key.not_in(list(entries))))
    oldest_kept = (
        select(NovuSyncRun.id).order_by(NovuSyncRun.id.desc()).offset(KEPT_RUNS - 1).limit(1)
    ).scalar_subquery()
    session.execute(delete(NovuSyncRun).where(NovuSyncRun.id < oldest_kept))


def workflow_sync_states(
    session: Session, workflow_keys: Iterable[str]
) -> dict[str, NovuWorkflowSync]:
    """The sync rows of these keys (a key without one was never part of a sync)."""
    keys = list(dict.fromkeys(workflow_keys))
    if not keys:
        return {}
    S = NovuWorkflowSync
    return {
        row.workflow_key: row for row in session.scalars(select(S).where(S.workflow_key.in_(keys)))
    }


# -- one sync at a time --------------------------------------------------------------------------

_lock_redis = PerProcess(lambda: redis_from_url(get_settings().require_redis_url()))


@contextmanager
def _sync_lock(wait_seconds: float) -> Iterator[None]:
    lock = _lock_redis.get().lock(LOCK_KEY, timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=wait_seconds > 0, blocking_timeout=wait_seconds or None):
        raise SyncBusy("another process is syncing with Novu")
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("the Novu sync lock expired before the sync ended")


def sync_exclusively(
    *, reason: str, force: bool = True, wait_seconds: float = 0.0, settings: Settings | None = None
) -> SyncOutcome:
    """`sync_now` under the Redis lock every process shares; raises SyncBusy when another holds
    it beyond `wait_seconds`."""
    settings = settings or get_settings()
    require_bridge_url(settings)
    with _sync_lock(wait_seconds):
        # From here on, a new request publishes a task of its own (see DEBOUNCE_SECONDS).
        _lock_redis.get().delete(DEBOUNCE_KEY)
        return sync_now(reason=reason, force=force, settings=settings)
