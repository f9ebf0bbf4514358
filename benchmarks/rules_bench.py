"""Stage (i) of `make bench`: the rules scheduler's tick with 10,000 active rules.

Rules of `enterprises` enterprises (each with the demo's `building-alert` workflow) are written
with plain SQL, their next fire times a day ahead, so that the stack's own beat (ticking with
the real clock) never finds them due; this process then calls the scheduler's tick itself with
`now` at that fire time, as beat's task does, and times it:

- an idle tick (nothing due) with 100 and with 10,000 active rules: what every tick costs;
- a tick with 100 due of 100 rules and with 1,000 due of 10,000 (10 per enterprise): the time
  per tick, notifications created per second, and the cost per fired rule at both sizes.

The ratios (10,000 against 100 rules) show whether a tick's cost follows the rules due, not the
rules there are. The registry of workflows (and their compiled payload schemas) is warmed
first, as a running worker's is. A fire is late by at most RULES_TICK_SECONDS plus the tick's
time.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import text

from benchmarks.run import ALERT
from shared.db.session import transaction
from shared.rules.payload import checked_notification
from shared.rules.scheduler import fire_rules
from shared.settings import get_settings
from shared.workflows.registry import get_registry

IDLE_TICKS = 7
_INSERT_RULES = """
    INSERT INTO notify.ent_notification_rule (
        name, enterprise_id, notification_workflow_id, trigger_type, trigger_config,
        rule_payload, publish_status
    )
    SELECT 'bench rule', w.enterprise_id, w.id, 'CRON',
        CASE WHEN g <= :due_each THEN CAST('{"cron": "* * * * *"}' AS jsonb)
             ELSE CAST('{"cron": "0 9 * * *"}' AS jsonb) END,
        CAST(:payload AS jsonb), 'PUBLISH'
    FROM notify.ent_notification_workflow AS w, generate_series(1, :each) AS g
    WHERE w.enterprise_id = ANY(:enterprises) AND w.workflow_key = 'building-alert'
    """
# In the same transaction as the insert (whose trigger left them unarmed): the stack's beat
# never sees them unarmed, and never arms them from the real clock.
_ARM = """
    UPDATE notify.ent_notification_rule
    SET next_fire_at = CASE WHEN trigger_config->>'cron' = '* * * * *' THEN :due
                            ELSE :later END
    WHERE enterprise_id = ANY(:enterprises)
    """


def _seed(enterprises: list[uuid.UUID], each: int, due_each: int, due_at: dt.datetime) -> None:
    from devtools.seed import seed_building_alert

    payload = {"recipients": ["ops-1"], "payload": ALERT}
    with transaction() as session:
        for enterprise in enterprises:
            seed_building_alert(session, enterprise)
        session.flush()
        parameters: dict[str, Any] = {
            "enterprises": enterprises,
            "each": each,
            "due_each": due_each,
            "payload": json.dumps(payload),
        }
        session.execute(text(_INSERT_RULES), parameters)
        session.execute(
            text(_ARM),
            {"enterprises": enterprises, "due": due_at, "later": due_at + dt.timedelta(days=30)},
        )
    # As a running worker has them: each enterprise's workflow loaded, its schema compiled.
    registry, settings = get_registry(), get_settings()
    for enterprise in enterprises:
        workflow = registry.get_workflow("building-alert", enterprise)
        assert workflow is not None
        checked_notification(payload, workflow, enterprise, settings)


def _retire(enterprises: list[uuid.UUID]) -> None:
    with transaction() as session:
        session.execute(
            text(
                "UPDATE notify.ent_notification_rule SET deactivated = true"
                " WHERE enterprise_id = ANY(:enterprises)"
            ),
            {"enterprises": enterprises},
        )


def _measure(rules: int, due: int, enterprises: int) -> dict[str, Any]:
    """Idle and due tick times with `rules` active rules, `due` of them due at once."""
    ids = [uuid.uuid4() for _ in range(enterprises)]
    due_at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(second=0, microsecond=0)
    _seed(ids, rules // enterprises, due // enterprises, due_at)
    try:
        fire_rules(due_at - dt.timedelta(hours=1))  # not timed: connections, plans
        idle = []
        for _ in range(IDLE_TICKS):
            started = time.perf_counter()
            fired = fire_rules(due_at - dt.timedelta(seconds=30)).fired
            idle.append(time.perf_counter() - started)
            assert fired == 0
        started = time.perf_counter()
        result = fire_rules(due_at + dt.timedelta(seconds=1))
        seconds = time.perf_counter() - started
        assert result.fired == due, (result.fired, due, result.failed)
    finally:
        _retire(ids)
    return {
        "rules": rules,
        "due": due,
        "enterprises": enterprises,
        "idle_tick_ms": statistics.median(idle) * 1000,
        "due_tick_ms": seconds * 1000,
        "notifications_per_second": due / seconds,
        "ms_per_fired_rule": seconds * 1000 / due,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Stage (i): both sizes and their ratios."""
    large_rules, large_due = (2_000, 200) if quick else (10_000, 1_000)
    small = _measure(100, 100, 10)
    large = _measure(large_rules, large_due, 100)
    return {
        "small": small,
        "large": large,
        "idle_ratio": large["idle_tick_ms"] / small["idle_tick_ms"],
        "per_fired_rule_ratio": large["ms_per_fired_rule"] / small["ms_per_fired_rule"],
    }
