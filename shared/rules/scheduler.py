"""The scheduler beat runs every RULES_TICK_SECONDS: it arms rules and fires the due ones.

One tick, in batches of RULE_BATCH rules, each batch one transaction:

1. arm: active CRON rules with no `next_fire_at` (new, or changed by anyone: migration 0012's
   trigger disarms them) get their first fire time after the later of their last change and
   their last fire; a schedule that cannot be read gets `last_error` instead;
2. fire: active rules whose `next_fire_at` has come, locked FOR UPDATE SKIP LOCKED so that a
   second scheduler takes other rules, each fire checked with the intake's checks and recorded
   by the intake's insert (shared/notifications/repository.py `insert_pending`: transaction id,
   `accepted` timeline event, `enqueued_at`), one statement per enterprise; the rows are then
   linked to their rule and fire time in one statement (a unique index makes a second row for
   the same rule and fire time impossible), and every rule's next fire time, last fire and error
   in one more; fires that created nothing add a `rule.failed` status webhook for each endpoint
   subscribed to it, in one more (only then);
3. after commit, the created rows' deliveries are published (or left for beat).

Misfires (the fire time is in the past, e.g. after downtime): RULES_MISFIRE=latest fires the
latest missed time once, never a burst; skip fires only a time missed by at most MISFIRE_GRACE
and otherwise waits for the next. docs/architecture.md, "Rules".
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DataError, IntegrityError

from shared.db.models import (
    Notification,
    NotificationRule,
    NotificationWorkflow,
    WebhookEndpoint,
    WebhookMessage,
)
from shared.db.session import transaction
from shared.errors import DomainError
from shared.notifications.publisher import publish_deliveries
from shared.notifications.repository import NewNotification, insert_pending
from shared.rules.payload import checked_notification
from shared.rules.schedule import parse_schedule
from shared.settings import Settings, get_settings
from shared.webhooks.events import RULE_FAILED
from shared.workflows.registry import get_registry

log = logging.getLogger(__name__)

RULES: str = NotificationRule.__table__.fullname  # type: ignore[attr-defined]
WORKFLOWS: str = NotificationWorkflow.__table__.fullname  # type: ignore[attr-defined]
NOTIFICATIONS: str = Notification.__table__.fullname  # type: ignore[attr-defined]
WEBHOOK_MESSAGES: str = WebhookMessage.__table__.fullname  # type: ignore[attr-defined]
WEBHOOK_ENDPOINTS: str = WebhookEndpoint.__table__.fullname  # type: ignore[attr-defined]

# Rules per transaction, and batches per tick: a tick does at most this much, the next the rest.
RULE_BATCH = 1000
MAX_BATCHES_PER_TICK = 20
# Under RULES_MISFIRE=skip, a fire time missed by at most this much still fires: a tick runs
# every few seconds, so every fire is a little late.
MISFIRE_GRACE = dt.timedelta(seconds=60)
CREATED_BY = "xnovu.rules"
_DISABLED = {"code": "disabled", "message": "trigger_config.enabled is false"}

ACTIVE = "r.trigger_type = 'CRON' AND r.publish_status = 'PUBLISH' AND NOT r.deactivated"

_TO_ARM = f"""
    SELECT r.id, r.trigger_config, GREATEST(r.schedule_changed_at, r.last_fired_at) AS since
    FROM {RULES} AS r
    WHERE {ACTIVE} AND r.next_fire_at IS NULL AND r.last_error IS NULL
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
    """

_DUE = f"""
    SELECT r.id, r.enterprise_id, r.trigger_config, r.rule_payload, r.next_fire_at,
        w.workflow_key,
        (w.enterprise_id IS NULL OR w.enterprise_id = r.enterprise_id) AS own_workflow
    FROM {RULES} AS r
    JOIN {WORKFLOWS} AS w ON w.id = r.notification_workflow_id
    WHERE {ACTIVE} AND r.next_fire_at <= %(now)s
    ORDER BY r.next_fire_at
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
    """

# next_fire_at NULL with an error: not armed until the rule changes (the trigger clears both).
_UPDATE_RULES = f"""
    UPDATE {RULES} AS r
    SET next_fire_at = v.next_fire_at,
        last_fired_at = COALESCE(v.fired_at, r.last_fired_at),
        last_error = v.error
    FROM unnest(
        CAST(%(ids)s AS bigint[]), CAST(%(next)s AS timestamptz[]),
        CAST(%(fired)s AS timestamptz[]), CAST(%(errors)s AS jsonb[])
    ) AS v(id, next_fire_at, fired_at, error)
    WHERE r.id = v.id
    """

_LINK = f"""
    UPDATE {NOTIFICATIONS} AS n
    SET notification_rule_id = v.rule_id, rule_fire_at = v.fire_at
    FROM unnest(
        CAST(%(ids)s AS bigint[]), CAST(%(rules)s AS bigint[]), CAST(%(fired)s AS timestamptz[])
    ) AS v(id, rule_id, fire_at)
    WHERE n.id = v.id
    """

# A `rule.failed` status webhook for each fire that created no notification, to each enabled
# endpoint of the rule's enterprise subscribed to it (docs/architecture.md, "Status webhooks"):
# written in the tick's transaction, with the rule's last_error, so the two commit together.
_RULE_FAILED_WEBHOOKS = f"""
    INSERT INTO {WEBHOOK_MESSAGES}
        (msg_id, enterprise_id, endpoint_id, event_type, notification_id, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), r.enterprise_id, e.id,
        '{RULE_FAILED}', NULL,
        jsonb_build_object(
            'type', '{RULE_FAILED}',
            'timestamp', to_jsonb(now()),
            'data', jsonb_strip_nulls(jsonb_build_object(
                'ruleId', r.id,
                'ruleName', r.name,
                'enterpriseId', r.enterprise_id,
                'workflowId', v.workflow_key,
                'fireAt', v.error -> 'fireAt',
                'error', v.error - 'fireAt'
            ))
        )
    FROM unnest(
        CAST(%(ids)s AS bigint[]), CAST(%(workflows)s AS text[]), CAST(%(errors)s AS jsonb[])
    ) AS v(id, workflow_key, error)
    JOIN {RULES} AS r ON r.id = v.id
    JOIN {WEBHOOK_ENDPOINTS} AS e
      ON e.enterprise_id = r.enterprise_id AND e.enabled
     AND '{RULE_FAILED}' = ANY(e.event_types)
    ORDER BY v.id, e.id
    """


@dataclass(slots=True)
class TickResult:
    """What one tick did."""

    armed: int = 0
    fired: int = 0
    skipped: int = 0
    failed: int = 0
    notification_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _RuleUpdate:
    next_fire_at: dt.datetime | None
    fired_at: dt.datetime | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Fire:
    rule_id: int
    enterprise_id: uuid.UUID
    fire_at: dt.datetime
    notification: NewNotification


def fire_rules(now: dt.datetime | None = None, settings: Settings | None = None) -> TickResult:
    """One tick: arm new and changed rules, fire the due ones, publish what was created."""
    settings = settings or get_settings()
    now = now or dt.datetime.now(dt.UTC)
    result = TickResult()
    for _ in range(MAX_BATCHES_PER_TICK):
        targets: list[tuple[int, uuid.UUID]] = []
        with transaction() as session:
            conn = session.connection()
            armed = _arm(conn)
            due = _fire_due(conn, now, settings, result, targets)
        result.armed += armed
        publish_deliveries(targets)
        if armed < RULE_BATCH and due < RULE_BATCH:
            break
    if result.fired or result.failed:
        log.info(
            "rules: %d fired, %d failed, %d skipped, %d armed",
            result.fired,
            result.failed,
            result.skipped,
            result.armed,
        )
    return result


def _rows(conn: Connection, sql: str, parameters: dict[str, Any]) -> Sequence[Any]:
    return conn.exec_driver_sql(sql, parameters).all()


def _arm(conn: Connection) -> int:
    rows = _rows(conn, _TO_ARM, {"limit": RULE_BATCH})
    updates: dict[int, _RuleUpdate] = {}
    for row in rows:
        try:
            schedule = parse_schedule(row.trigger_config)
        except DomainError as exc:
            updates[row.id] = _RuleUpdate(None, error=_error(exc))
            continue
        if schedule is None:  # `enabled: false`: armed again once its config changes
            updates[row.id] = _RuleUpdate(None, error=_DISABLED)
        else:
            updates[row.id] = _RuleUpdate(schedule.next_after(row.since))
    _update_rules(conn, updates)
    return len(rows)


def _fire_due(
    conn: Connection,
    now: dt.datetime,
    settings: Settings,
    result: TickResult,
    targets: list[tuple[int, uuid.UUID]],
) -> int:
    rows = _rows(conn, _DUE, {"now": now, "limit": RULE_BATCH})
    updates: dict[int, _RuleUpdate] = {}
    fires: dict[uuid.UUID, list[_Fire]] = {}
    registry = get_registry()
    for index, row in enumerate(rows):
        try:
            schedule = parse_schedule(row.trigger_config)
        except DomainError as exc:  # written by another service: armed by a former config
            updates[row.id] = _RuleUpdate(None, error=_error(exc))
            continue
        if schedule is None:
            updates[row.id] = _RuleUpdate(None, error=_DISABLED)
            continue
        fire_at = max(schedule.latest_at_or_before(now), row.next_fire_at)
        update = _RuleUpdate(schedule.next_after(max(now, fire_at)))
        updates[row.id] = update
        if settings.rules_misfire == "skip" and now - fire_at > MISFIRE_GRACE:
            result.skipped += 1
            continue
        try:
            if row.enterprise_id is None or not row.own_workflow:
                raise DomainError(
                    "workflow_not_found", "the rule's workflow is not one of its enterprise"
                )
            workflow = registry.get_workflow(row.workflow_key, row.enterprise_id)
            if workflow is None:
                raise DomainError(
                    "workflow_not_found",
                    f"workflow {row.workflow_key!r} is not published (or deactivated)",
                )
            notification = checked_notification(
                row.rule_payload, workflow, row.enterprise_id, settings, index
            )
        except DomainError as exc:
            update.error = _error(exc, fire_at)
            result.failed += 1
            continue
        fires.setdefault(row.enterprise_id, []).append(
            _Fire(row.id, row.enterprise_id, fire_at, notification)
        )
    links: list[tuple[int, _Fire]] = []
    for enterprise_id, group in fires.items():
        links.extend(_record(conn, enterprise_id, group, updates, result))
    _update_rules(conn, updates)
    # Another enterprise's workflow stays unnamed: its key is not the rule's enterprise's to see.
    keys = {row.id: row.workflow_key if row.own_workflow else None for row in rows}
    _tell_failed_fires(conn, updates, keys)
    targets.extend((notification_id, fire.enterprise_id) for notification_id, fire in links)
    result.notification_ids.extend(notification_id for notification_id, _ in links)
    return len(rows)


def _record(
    conn: Connection,
    enterprise_id: uuid.UUID,
    group: list[_Fire],
    updates: dict[int, _RuleUpdate],
    result: TickResult,
) -> list[tuple[int, _Fire]]:
    """One enterprise's fires through the intake's insert, then linked to their rule and fire
    time, in a savepoint of their own: one enterprise's refused insert (or a fire time already
    recorded, which the unique index refuses) cannot hold back the others' fires."""

    def execute(sql: str, parameters: dict[str, Any]) -> Sequence[Any]:
        return _rows(conn, sql, parameters)

    try:
        with conn.begin_nested():
            recorded = insert_pending(
                execute,
                enterprise_id=enterprise_id,
                notifications=[fire.notification for fire in group],
                created_by=CREATED_BY,
            )
            conn.exec_driver_sql(
                _LINK,
                {
                    "ids": [row.notification_id for row in recorded],
                    "rules": [fire.rule_id for fire in group],
                    "fired": [fire.fire_at for fire in group],
                },
            )
    except (IntegrityError, DataError) as exc:
        for fire in group:
            updates[fire.rule_id].error = _error(
                DomainError("record_failed", str(exc.orig)), fire.fire_at
            )
        result.failed += len(group)
        return []
    for fire in group:
        updates[fire.rule_id].fired_at = fire.fire_at
    result.fired += len(recorded)
    if log.isEnabledFor(logging.INFO):
        # The intake's line for each notification it records (shared/logs.py), with its rule.
        for row, fire in zip(recorded, group, strict=True):
            log.info(
                "notification accepted",
                extra={
                    "enterprise_id": str(enterprise_id),
                    "notification_id": row.notification_id,
                    "transaction_id": row.transaction_id,
                    "workflow_id": row.workflow_key,
                    "rule_id": fire.rule_id,
                    "rule_fire_at": fire.fire_at.isoformat(),
                },
            )
    return [(row.notification_id, fire) for row, fire in zip(recorded, group, strict=True)]


def _update_rules(conn: Connection, updates: dict[int, _RuleUpdate]) -> None:
    if not updates:
        return
    conn.exec_driver_sql(
        _UPDATE_RULES,
        {
            "ids": list(updates),
            "next": [update.next_fire_at for update in updates.values()],
            "fired": [update.fired_at for update in updates.values()],
            "errors": [
                json.dumps(update.error) if update.error is not None else None
                for update in updates.values()
            ],
        },
    )


def _tell_failed_fires(
    conn: Connection, updates: dict[int, _RuleUpdate], workflow_keys: dict[int, str | None]
) -> None:
    """The `rule.failed` webhooks of the fires that created nothing (errors with a fire time;
    a schedule that cannot be read is said by the rule's last_error alone)."""
    failed = {
        rule_id: update.error
        for rule_id, update in updates.items()
        if update.error is not None and "fireAt" in update.error
    }
    if failed:
        conn.exec_driver_sql(
            _RULE_FAILED_WEBHOOKS,
            {
                "ids": list(failed),
                "workflows": [workflow_keys[rule_id] for rule_id in failed],
                "errors": [json.dumps(error) for error in failed.values()],
            },
        )


def _error(exc: DomainError, fire_at: dt.datetime | None = None) -> dict[str, Any]:
    """The rule's `last_error`: the code, message and details a trigger would answer with."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details is not None:
        error["details"] = exc.details
    if fire_at is not None:
        error["fireAt"] = fire_at.isoformat()
    return error
