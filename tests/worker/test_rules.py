"""The rules scheduler against the real stack: a rule created through the API fires through
beat and the worker, one notification per rule and fire time however many schedulers run;
misfires after downtime; daylight saving time; rows other services wrote; isolation.

The test worker's beat runs the scheduler every RULES_TICK_SECONDS with the real clock. Tests
that pick the scheduler's `now` put their fire times a few days ahead (or in 2027 for the DST
days), where that beat never finds them due, and call `fire_rules(now)` themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from shared.db.enums import PublishStatus
from shared.db.models import Notification, NotificationRule
from shared.db.session import transaction
from shared.queue import TASK_QUEUES, TaskName, producer
from shared.rules.scheduler import fire_rules
from shared.settings import get_settings
from tests.conftest import Tenant, make_tenant, wait_for_status
from tests.factories import create_template, create_workflow
from tests.worker.test_metrics import scrape, value

pytestmark = pytest.mark.integration

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(autouse=True)
def _rules_stop_firing():
    """Rules of a test never fire in a later one (fire_rules(now) fires every due rule), nor
    do earlier files' rules fire during a test (the worker's beat fires them on the real clock,
    and the metrics test counts fires)."""

    def deactivate_all() -> None:
        with transaction() as session:
            session.execute(update(NotificationRule).values(deactivated=True))

    deactivate_all()
    yield
    deactivate_all()


def _workflow(client: Any, tenant: Tenant) -> dict[str, Any]:
    sms = create_template(client, tenant, "SMS", body="Report: {{ message }}")
    key = f"rule-{uuid.uuid4().hex[:8]}"
    return create_workflow(
        client,
        tenant,
        key,
        publish=True,
        payload_schema={"type": "object", "required": ["message"]},
        SMS=sms,
    )


def _rule(client: Any, tenant: Tenant, workflow_id: int, cron: str, tz: str = "UTC") -> int:
    response = client.post(
        "/api/rules",
        json={
            "name": f"every {cron}",
            "notification_workflow_id": workflow_id,
            "trigger_config": {"cron": cron, "timezone": tz},
            "rule_payload": {"recipients": ["ops-1"], "payload": {"message": "hello"}},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _activate(
    rule_id: int,
    *,
    next_fire_at: dt.datetime | None = None,
    changed_at: dt.datetime | None = None,
) -> None:
    """Publish the rule and set the scheduler's columns in one transaction, so that the real
    beat never sees it armed from the real clock."""
    with transaction() as session:
        where = NotificationRule.id == rule_id
        session.execute(
            update(NotificationRule).where(where).values(publish_status=PublishStatus.PUBLISH)
        )
        values: dict[str, Any] = {"next_fire_at": next_fire_at}
        if changed_at is not None:
            values["schedule_changed_at"] = changed_at
        session.execute(update(NotificationRule).where(where).values(**values))


def _insert_rule(
    enterprise_id: uuid.UUID, workflow_id: int, config: dict[str, Any], payload: dict[str, Any]
) -> int:
    """A published rule as another service writes it: plain SQL, the original's columns."""
    with transaction() as session:
        [(rule_id,)] = (
            session.connection()
            .exec_driver_sql(
                """
                INSERT INTO notify.ent_notification_rule (
                    name, enterprise_id, notification_workflow_id, trigger_type,
                    trigger_config, rule_payload, publish_status
                ) VALUES (
                    'written by another service', %(enterprise)s, %(workflow)s, 'CRON',
                    %(config)s, %(payload)s, 'PUBLISH'
                ) RETURNING id
                """,
                {
                    "enterprise": enterprise_id,
                    "workflow": workflow_id,
                    "config": json.dumps(config),
                    "payload": json.dumps(payload),
                },
            )
            .all()
        )
    return int(rule_id)


def _make_stale(rule_id: int) -> None:
    """The rule's payload no longer matches its workflow's schema (no `message`), as if the
    workflow had changed since: its fires fail `invalid_payload`."""
    with transaction() as session:
        session.execute(
            update(NotificationRule)
            .where(NotificationRule.id == rule_id)
            .values(rule_payload={"recipients": ["ops-1"], "payload": {}})
        )


def _fired(rule_id: int) -> list[Notification]:
    with transaction() as session:
        return list(
            session.scalars(
                select(Notification)
                .where(Notification.notification_rule_id == rule_id)
                .order_by(Notification.rule_fire_at)
            )
        )


def _rule_row(rule_id: int) -> NotificationRule:
    with transaction() as session:
        return session.scalars(select(NotificationRule).where(NotificationRule.id == rule_id)).one()


def _ahead(days: int = 3) -> dt.datetime:
    """A minute boundary `days` ahead of the real clock: the real beat's ticks never reach it."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(second=0, microsecond=0)


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_every_minute_rule_fires_once_a_minute_and_each_is_sent(client, tenant, worker):
    workflow = _workflow(client, tenant)
    rule_id = _rule(client, tenant, workflow["id"], "* * * * *")
    published = client.post(f"/api/rules/{rule_id}/publish", headers=tenant.headers)
    assert published.status_code == 200, published.text
    # The real beat arms it (the first minute after it was published)...
    armed = _wait(
        lambda: client.get(f"/api/rules/{rule_id}", headers=tenant.headers).json()["next_fire_at"],
        "beat to arm the rule",
    )
    assert dt.datetime.fromisoformat(armed).second == 0
    # ...and fires it once its minute comes: brought forward to the current minute here (if
    # the next minute begins meanwhile, beat fires that one: the latest due).
    current = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    with transaction() as session:
        session.execute(
            update(NotificationRule)
            .where(NotificationRule.id == rule_id)
            .values(next_fire_at=current)
        )
    [row] = _wait(lambda: _fired(rule_id), "beat to fire the rule")
    first = row.rule_fire_at
    assert first in (current, current + MINUTE)
    # The next minutes, ticked here rather than waited for (or by beat, if the real clock got
    # there first: either way, one notification per minute).
    for minute in (1, 2):
        fire_rules(first + minute * MINUTE + dt.timedelta(seconds=1))
    rows = _fired(rule_id)
    assert [r.rule_fire_at for r in rows] == [first, first + MINUTE, first + 2 * MINUTE]
    for r in rows:
        sent = wait_for_status(client, tenant, r.id, {"SENT", "FAILED"}, timeout=60)
        assert sent["notification_status"] == "SENT", sent
        # Everything a triggered row gets: the workflow, a transaction id, its payload and
        # recipients checked, the `accepted` event of its timeline.
        assert sent["workflow_key"] == workflow["workflow_key"]
        assert sent["notification_workflow_id"] == workflow["id"]
        assert sent["transaction_id"].startswith("xn-")
        assert sent["payload"] == {"message": "hello"} and sent["recipients"] == ["ops-1"]
        assert sent["notification_rule_id"] == rule_id
        assert dt.datetime.fromisoformat(sent["rule_fire_at"]) == r.rule_fire_at
        events = client.get(f"/api/notifications/{r.id}/events", headers=tenant.headers)
        assert events.json()["items"][0]["kind"] == "accepted", events.text
    rule = _rule_row(rule_id)
    assert rule.last_fired_at == first + 2 * MINUTE and rule.last_error is None
    assert rule.next_fire_at is not None and rule.next_fire_at > first + 2 * MINUTE


def test_schedulers_running_at_once_fire_each_rule_once_per_fire_time(client, tenant, worker):
    workflow = _workflow(client, tenant)
    fire_at = _ahead()
    rule_ids = [_rule(client, tenant, workflow["id"], "*/5 * * * *") for _ in range(20)]
    fire_at = fire_at.replace(minute=fire_at.minute - fire_at.minute % 5)
    for rule_id in rule_ids:
        _activate(rule_id, next_fire_at=fire_at)

    schedulers = 4
    barrier = threading.Barrier(schedulers)
    fired: list[int] = []

    def tick() -> None:
        barrier.wait()
        fired.append(fire_rules(fire_at + dt.timedelta(seconds=2)).fired)

    threads = [threading.Thread(target=tick) for _ in range(schedulers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(fired) == len(rule_ids), fired
    # A scheduler that restarts and ticks again at the same moment fires nothing more.
    assert fire_rules(fire_at + dt.timedelta(seconds=3)).fired == 0
    for rule_id in rule_ids:
        assert [r.rule_fire_at for r in _fired(rule_id)] == [fire_at]
        assert _rule_row(rule_id).next_fire_at == fire_at + dt.timedelta(minutes=5)

    # The database itself refuses a second notification for the same rule and fire time.
    [row] = _fired(rule_ids[0])
    [other] = _fired(rule_ids[1])
    with pytest.raises(IntegrityError), transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == other.id)
            .values(notification_rule_id=rule_ids[0], rule_fire_at=row.rule_fire_at)
        )


def test_after_downtime_the_latest_missed_time_fires_once(client, tenant, worker):
    workflow = _workflow(client, tenant)
    now = _ahead()
    rule_id = _rule(client, tenant, workflow["id"], "* * * * *")
    _activate(rule_id, next_fire_at=now - dt.timedelta(hours=2))  # 120 fire times missed
    result = fire_rules(now + dt.timedelta(seconds=30))
    assert result.fired == 1
    assert [r.rule_fire_at for r in _fired(rule_id)] == [now]
    assert _rule_row(rule_id).next_fire_at == now + MINUTE


def test_misfire_skip_waits_for_the_next_time_but_fires_a_little_late_one(client, tenant, worker):
    """RULES_MISFIRE=skip: a fire time late by more than a minute (here the 2 hours an hourly
    rule missed: its latest time is half an hour ago) waits for the next one; one late by
    seconds, as every tick's fires are, still fires."""
    skip = get_settings().model_copy(update={"rules_misfire": "skip"})
    workflow = _workflow(client, tenant)
    hour = _ahead().replace(minute=0)
    now = hour + dt.timedelta(minutes=30, seconds=30)
    missed = _rule(client, tenant, workflow["id"], "0 * * * *")
    _activate(missed, next_fire_at=hour - dt.timedelta(hours=2))
    late = _rule(client, tenant, workflow["id"], "* * * * *")
    _activate(late, next_fire_at=hour + dt.timedelta(minutes=30))
    result = fire_rules(now, skip)
    assert (result.fired, result.skipped) == (1, 1)
    assert _fired(missed) == []
    assert _rule_row(missed).next_fire_at == hour + dt.timedelta(hours=1)
    assert [r.rule_fire_at for r in _fired(late)] == [hour + dt.timedelta(minutes=30)]


def test_a_rule_at_0230_berlin_time_fires_once_on_both_dst_change_days(client, tenant, worker):
    """2027-03-28: 02:30 does not exist (02:00 → 03:00), the rule fires once at 03:00 local;
    2027-10-31: 02:30 happens twice, the rule fires once, at the first (summer time)."""
    workflow = _workflow(client, tenant)
    spring = _rule(client, tenant, workflow["id"], "30 2 * * *", "Europe/Berlin")
    autumn = _rule(client, tenant, workflow["id"], "30 2 * * *", "Europe/Berlin")
    # Armed from a change the day before each (arming reads no clock: the real beat, if it
    # arms them first, arms them the same).
    _activate(spring, changed_at=dt.datetime(2027, 3, 27, 12, tzinfo=dt.UTC))
    _activate(autumn, changed_at=dt.datetime(2027, 10, 30, 12, tzinfo=dt.UTC))

    spring_fire = dt.datetime(2027, 3, 28, 1, 0, tzinfo=dt.UTC)  # 03:00 CEST
    autumn_first = dt.datetime(2027, 10, 31, 0, 30, tzinfo=dt.UTC)  # 02:30 CEST
    autumn_again = dt.datetime(2027, 10, 31, 1, 30, tzinfo=dt.UTC)  # 02:30 CET
    fire_rules(dt.datetime(2027, 3, 27, 12, 0, 1, tzinfo=dt.UTC))  # arms both
    assert _rule_row(spring).next_fire_at == spring_fire
    assert _rule_row(autumn).next_fire_at == autumn_first

    fire_rules(spring_fire + dt.timedelta(seconds=5))
    assert [r.rule_fire_at for r in _fired(spring)] == [spring_fire]
    assert _rule_row(spring).next_fire_at == dt.datetime(2027, 3, 29, 0, 30, tzinfo=dt.UTC)
    # Months later by the ticks' clock: the spring rule would fire its latest missed time.
    client.post(f"/api/rules/{spring}/deactivate", headers=tenant.headers)
    for moment in (autumn_first, autumn_again):
        fire_rules(moment + dt.timedelta(seconds=5))
    assert [r.rule_fire_at for r in _fired(autumn)] == [autumn_first]
    assert _rule_row(autumn).next_fire_at == dt.datetime(2027, 11, 1, 1, 30, tzinfo=dt.UTC)


def test_a_rule_another_service_wrote_in_the_original_form_fires(client, tenant, worker):
    workflow = _workflow(client, tenant)
    rule_id = _insert_rule(
        tenant.enterprise_id,
        workflow["id"],
        {"cron": "0 9 * * 1", "timezone": "UTC"},
        {"recipients": ["ops-2"], "message": "from the original"},
    )
    next_fire = _wait(lambda: _rule_row(rule_id).next_fire_at, "beat to arm the rule")
    assert next_fire.weekday() == 0 and (next_fire.hour, next_fire.minute) == (9, 0)
    fire_rules(next_fire + dt.timedelta(seconds=1))
    [row] = _fired(rule_id)
    assert row.payload == {"message": "from the original"} and row.recipients == ["ops-2"]
    sent = wait_for_status(client, tenant, row.id, {"SENT", "FAILED"}, timeout=60)
    assert sent["notification_status"] == "SENT", sent


def test_fires_that_fail_the_checks_create_nothing_and_say_why(client, tenant, worker):
    """A rule written by another service naming another enterprise's workflow, and one whose
    payload no longer matches its workflow: no notification, the reason in last_error, and
    both move on to their next fire time."""
    workflow = _workflow(client, tenant)
    other = make_tenant()
    now = _ahead()
    foreign = _insert_rule(
        other.enterprise_id,
        workflow["id"],
        {"cron": "* * * * *"},
        {"recipients": ["x"], "payload": {"message": "hi"}},
    )
    stale = _rule(client, tenant, workflow["id"], "* * * * *")
    for rule_id in (foreign, stale):
        _activate(rule_id, next_fire_at=now)
    _make_stale(stale)
    result = fire_rules(now + dt.timedelta(seconds=1))
    assert result.failed == 2 and result.fired == 0
    for rule_id, code in ((foreign, "workflow_not_found"), (stale, "invalid_payload")):
        assert _fired(rule_id) == []
        rule = _rule_row(rule_id)
        assert rule.last_error is not None and rule.last_error["code"] == code, rule.last_error
        assert rule.last_error["fireAt"] == now.isoformat()
        assert rule.next_fire_at == now + MINUTE
    assert _rule_row(stale).last_error["details"][0]["field"] == "message"


def test_a_fire_time_already_recorded_is_refused_by_the_database_and_said(client, tenant, worker):
    """The unique index is the last word: a rule whose fire time already has its notification
    (as if a scheduler's update of the rule had been lost) gets no second one."""
    workflow = _workflow(client, tenant)
    now = _ahead()
    rule_id = _rule(client, tenant, workflow["id"], "* * * * *")
    bystander = _rule(client, tenant, workflow["id"], "* * * * *")
    _activate(rule_id, next_fire_at=now)
    fire_rules(now + dt.timedelta(seconds=1))
    [first] = _fired(rule_id)
    with transaction() as session:  # the rule forgets it fired
        session.execute(
            update(NotificationRule).where(NotificationRule.id == rule_id).values(next_fire_at=now)
        )
    _activate(bystander, next_fire_at=now)
    other_enterprise = make_tenant()
    elsewhere = _rule(
        client, other_enterprise, _workflow(client, other_enterprise)["id"], "* * * * *"
    )
    _activate(elsewhere, next_fire_at=now)
    result = fire_rules(now + dt.timedelta(seconds=2))
    assert [r.id for r in _fired(rule_id)] == [first.id]
    rule = _rule_row(rule_id)
    assert rule.last_error is not None and rule.last_error["code"] == "record_failed"
    assert "ux_ent_notification_rule_fire" in rule.last_error["message"]
    assert rule.next_fire_at == now + MINUTE
    # Its enterprise's fires of that tick share its savepoint; another enterprise's do not.
    assert _fired(bystander) == [] and _rule_row(bystander).last_error["code"] == "record_failed"
    assert [r.rule_fire_at for r in _fired(elsewhere)] == [now]
    assert (result.fired, result.failed) == (1, 2)


def test_a_changed_schedule_applies_from_beats_next_tick(client, tenant, worker):
    workflow = _workflow(client, tenant)
    rule_id = _rule(client, tenant, workflow["id"], "0 9 * * 1", "Europe/Berlin")
    client.post(f"/api/rules/{rule_id}/publish", headers=tenant.headers)
    path = f"/api/rules/{rule_id}"

    def next_fire() -> str | None:
        return client.get(path, headers=tenant.headers).json()["next_fire_at"]

    monday = dt.datetime.fromisoformat(_wait(next_fire, "beat to arm the rule"))
    assert monday.astimezone(ZoneInfo("Europe/Berlin")).weekday() == 0
    changed = client.patch(
        path,
        json={"trigger_config": {"cron": "0 10 * * 2", "timezone": "Europe/Berlin"}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200, changed.text
    preview = client.get(f"{path}/preview?count=1", headers=tenant.headers).json()
    expected = dt.datetime.fromisoformat(preview["fireTimes"][0]["utc"])

    def rearmed() -> dt.datetime | None:
        value = next_fire()
        armed = dt.datetime.fromisoformat(value) if value is not None else None
        return armed if armed != monday else None

    assert _wait(rearmed, "beat to arm the rule with its new schedule") == expected


def test_the_worker_counts_fires_and_failed_fires_in_its_metrics(client, tenant, worker):
    """The tick run by the real worker (the task beat sends, given a `now`): one rule fires,
    one fails its checks; xnovu_rule_fires_total says so on the worker's metrics port."""
    workflow = _workflow(client, tenant)
    good = _rule(client, tenant, workflow["id"], "* * * * *")
    stale = _rule(client, tenant, workflow["id"], "* * * * *")
    now = _ahead()
    for rule_id in (good, stale):
        _activate(rule_id, next_fire_at=now)
    _make_stale(stale)
    before = scrape(worker.metrics_url)

    producer().send_task(
        TaskName.FIRE_RULES.value,
        kwargs={"now": (now + dt.timedelta(seconds=1)).isoformat()},
        queue=TASK_QUEUES[TaskName.FIRE_RULES].value,
        retry=False,
    )

    def counted() -> dict[str, float]:
        after = scrape(worker.metrics_url)
        return {
            outcome: value(after, "xnovu_rule_fires_total", outcome=outcome)
            - value(before, "xnovu_rule_fires_total", outcome=outcome)
            for outcome in ("fired", "failed", "skipped")
        }

    _wait(lambda: counted() == {"fired": 1, "failed": 1, "skipped": 0}, "the counted fires", 10)
    [notification] = _fired(good)
    assert _fired(stale) == [] and _rule_row(stale).last_error["code"] == "invalid_payload"
    wait_for_status(client, tenant, notification.id, {"SENT"})
