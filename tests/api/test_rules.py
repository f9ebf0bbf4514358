"""The rules API: create, read, list, update, publish, deactivate, preview; checks at save
time with the trigger intake's own checks; isolation between enterprises; bad input is a 4xx."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from shared.db.enums import PublishStatus
from shared.db.models import NotificationRule
from shared.db.session import transaction
from tests.conftest import Tenant, make_tenant
from tests.factories import api_error, create_template, create_workflow

SCHEMA = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string", "maxLength": 50}},
}


@pytest.fixture(autouse=True)
def _rules_stop_firing():
    """Rules of these tests never fire after them (the test worker's beat runs the scheduler)."""
    yield
    with transaction() as session:
        session.execute(update(NotificationRule).values(deactivated=True))


def _workflow(client: Any, tenant: Tenant, *, publish: bool = True) -> dict[str, Any]:
    sms = create_template(client, tenant, "SMS", body="{{ message }}")
    key = f"rule-wf-{uuid.uuid4().hex[:8]}"
    return create_workflow(client, tenant, key, publish=publish, payload_schema=SCHEMA, SMS=sms)


def _body(workflow_id: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Weekly report",
        "notification_workflow_id": workflow_id,
        "trigger_config": {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
        "rule_payload": {"recipients": ["manager-1"], "payload": {"message": "weekly"}},
    }
    body.update(changes)
    return body


def _create(client: Any, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/rules", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_rule_lifecycle_create_read_list_update_publish_deactivate(client, tenant):
    workflow = _workflow(client, tenant)
    rule = _create(client, tenant, _body(workflow["id"]))
    assert rule["publish_status"] == "DRAFT" and rule["deactivated"] is False
    assert rule["trigger_type"] == "CRON"
    assert rule["trigger_config"] == {
        "cron": "0 9 * * 1",
        "timezone": "Europe/Berlin",
        "enabled": True,
    }
    assert rule["rule_payload"] == {"recipients": ["manager-1"], "payload": {"message": "weekly"}}
    assert rule["next_fire_at"] is None and rule["last_error"] is None

    read = client.get(f"/api/rules/{rule['id']}", headers=tenant.headers)
    assert read.status_code == 200 and read.json() == rule

    patched = client.patch(
        f"/api/rules/{rule['id']}",
        json={"name": "Daily report", "trigger_config": {"cron": "30 8 * * *"}},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Daily report"
    # A new trigger_config replaces the old one: its time zone defaults to UTC again.
    assert patched.json()["trigger_config"]["timezone"] == "UTC"

    published = client.post(f"/api/rules/{rule['id']}/publish", headers=tenant.headers)
    assert published.status_code == 200 and published.json()["publish_status"] == "PUBLISH"
    deactivated = client.post(f"/api/rules/{rule['id']}/deactivate", headers=tenant.headers)
    assert deactivated.status_code == 200 and deactivated.json()["deactivated"] is True
    again = client.post(f"/api/rules/{rule['id']}/publish", headers=tenant.headers)
    assert again.json()["deactivated"] is False


def test_list_is_keyset_paged_newest_first(client, tenant):
    workflow = _workflow(client, tenant)
    ids = [_create(client, tenant, _body(workflow["id"], name=f"r{i}"))["id"] for i in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/rules", params=params, headers=tenant.headers).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    api_error(client.get("/api/rules?cursor=nope", headers=tenant.headers), 400, "invalid_cursor")


def test_preview_lists_the_next_fire_times_in_utc_and_local_time(client, tenant):
    workflow = _workflow(client, tenant)
    body = _body(workflow["id"], trigger_config={"cron": "30 2 * * *", "timezone": "Asia/Tokyo"})
    rule = _create(client, tenant, body)
    response = client.get(f"/api/rules/{rule['id']}/preview?count=3", headers=tenant.headers)
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["cron"] == "30 2 * * *" and preview["timezone"] == "Asia/Tokyo"
    times = preview["fireTimes"]
    assert len(times) == 3
    now = dt.datetime.now(dt.UTC)
    for number, fire in enumerate(times):
        utc = dt.datetime.fromisoformat(fire["utc"])
        local = dt.datetime.fromisoformat(fire["local"])
        assert utc == local and utc > now
        assert (utc.hour, utc.minute) == (17, 30)  # 02:30 in Tokyo (UTC+9, no DST)
        assert local.astimezone(ZoneInfo("Asia/Tokyo")).hour == 2
        if number:
            previous = dt.datetime.fromisoformat(times[number - 1]["utc"])
            assert utc - previous == dt.timedelta(days=1)
    disabled = client.patch(
        f"/api/rules/{rule['id']}",
        json={"trigger_config": {"cron": "30 2 * * *", "enabled": False}},
        headers=tenant.headers,
    )
    assert disabled.status_code == 200, disabled.text
    api_error(
        client.get(f"/api/rules/{rule['id']}/preview", headers=tenant.headers),
        409,
        "rule_disabled",
    )
    for count in (0, 101):
        api_error(
            client.get(f"/api/rules/{rule['id']}/preview?count={count}", headers=tenant.headers),
            422,
            "validation_error",
        )


@pytest.mark.parametrize(
    ("trigger_config", "field"),
    [
        ({"cron": "61 * * * *"}, "trigger_config.cron"),
        ({"cron": "* * * * * *"}, "trigger_config.cron"),  # cronsim's seconds field
        ({"cron": "@daily"}, "trigger_config.cron"),
        ({"cron": "0 0 31 2 *"}, "trigger_config.cron"),  # never fires
        ({"cron": "0 9 * * 1", "timezone": "Mars/Olympus"}, "trigger_config.timezone"),
        ({"cron": "0 9 * * 1", "timezone": "../../etc/passwd"}, "trigger_config.timezone"),
        ({"cron": "0 9 * * 1", "timezone": "Europe/Berlin\u0000"}, "trigger_config.timezone"),
    ],
)
def test_bad_schedule_is_422_naming_the_field(client, tenant, trigger_config, field):
    workflow = _workflow(client, tenant)
    response = client.post(
        "/api/rules",
        json=_body(workflow["id"], trigger_config=trigger_config),
        headers=tenant.headers,
    )
    error = api_error(response, 422, "invalid_schedule")
    assert [detail["field"] for detail in error["details"]] == [field]


def test_payload_and_recipients_are_checked_against_the_workflow_at_save(client, tenant):
    workflow = _workflow(client, tenant)
    bad_payload = _body(
        workflow["id"], rule_payload={"recipients": ["m-1"], "payload": {"message": "x" * 51}}
    )
    error = api_error(
        client.post("/api/rules", json=bad_payload, headers=tenant.headers), 422, "invalid_payload"
    )
    assert [detail["field"] for detail in error["details"]] == ["message"]

    missing = _body(workflow["id"], rule_payload={"recipients": ["m-1"], "payload": {}})
    api_error(
        client.post("/api/rules", json=missing, headers=tenant.headers), 422, "invalid_payload"
    )

    bad_recipient = _body(
        workflow["id"], rule_payload={"recipients": ["has space"], "payload": {"message": "hi"}}
    )
    error = api_error(
        client.post("/api/rules", json=bad_recipient, headers=tenant.headers),
        422,
        "invalid_rule_payload",
    )
    assert error["details"][0]["field"].startswith("rule_payload.recipients")

    too_many = _body(
        workflow["id"],
        rule_payload={"recipients": [f"m-{i}" for i in range(1001)], "payload": {"message": "x"}},
    )
    response = client.post("/api/rules", json=too_many, headers=tenant.headers)
    assert response.status_code == 422, response.text

    # A valid rule whose workflow's schema changed is refused at its next save too.
    rule = _create(client, tenant, _body(workflow["id"]))
    patched = client.patch(
        f"/api/rules/{rule['id']}",
        json={"rule_payload": {"recipients": ["m-1"], "payload": {"message": 5}}},
        headers=tenant.headers,
    )
    api_error(patched, 422, "invalid_payload")
    assert client.get(f"/api/rules/{rule['id']}", headers=tenant.headers).json() == rule


def test_workflow_must_be_a_published_one_of_the_enterprise(client, tenant):
    draft = _workflow(client, tenant, publish=False)
    error = api_error(
        client.post("/api/rules", json=_body(draft["id"]), headers=tenant.headers),
        422,
        "workflow_not_published",
    )
    assert error["details"][0]["field"] == "notification_workflow_id"
    api_error(
        client.post("/api/rules", json=_body(2**62), headers=tenant.headers),
        422,
        "workflow_not_found",
    )
    other = make_tenant()
    theirs = _workflow(client, other)
    api_error(
        client.post("/api/rules", json=_body(theirs["id"]), headers=tenant.headers),
        422,
        "workflow_not_found",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"name": "", "notification_workflow_id": 1, "trigger_config": {"cron": "* * * * *"}},
        {"name": "x", "notification_workflow_id": 0, "trigger_config": {"cron": "* * * * *"}},
        {
            "name": "x",
            "notification_workflow_id": 1,
            "trigger_config": {"cron": "* * * * *"},
            "trigger_type": "EVENT",
        },
        {
            "name": "x",
            "notification_workflow_id": 1,
            "trigger_config": {"cron": "* * * * *"},
            "surprise": True,
        },
        {"name": "x", "notification_workflow_id": 1, "trigger_config": "* * * * *"},
        {
            "name": "x",
            "notification_workflow_id": 1,
            "trigger_config": {"cron": "* * * * *", "timezone": "x" * 65},
        },
        {"name": "x", "notification_workflow_id": 1, "trigger_config": {"cron": "*" * 256}},
        {
            "name": "x",
            "notification_workflow_id": 1,
            "trigger_config": {"cron": "* * * * *"},
            "rule_payload": {"recipients": []},
        },
        {
            "name": "x",
            "notification_workflow_id": 1,
            "trigger_config": {"cron": "* * * * *"},
            "rule_payload": {"payload": "not an object"},
        },
    ],
)
def test_malformed_bodies_are_422(client, tenant, body):
    response = client.post("/api/rules", json=body, headers=tenant.headers)
    api_error(response, 422, "validation_error")


def test_unknown_and_out_of_range_ids(client, tenant):
    api_error(client.get("/api/rules/999999999999", headers=tenant.headers), 404, "not_found")
    api_error(client.get(f"/api/rules/{2**63}", headers=tenant.headers), 422, "validation_error")
    api_error(client.post("/api/rules/0/publish", headers=tenant.headers), 422, "validation_error")


def test_another_enterprise_neither_sees_nor_changes_a_rule(client, tenant):
    workflow = _workflow(client, tenant)
    rule = _create(client, tenant, _body(workflow["id"]))
    other = make_tenant()
    path = f"/api/rules/{rule['id']}"
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"name": "stolen"}),
        ("POST", "/publish", None),
        ("POST", "/deactivate", None),
        ("GET", "/preview", None),
    ]:
        response = client.request(method, path + suffix, json=body, headers=other.headers)
        api_error(response, 404, "not_found")
    assert client.get("/api/rules", headers=other.headers).json()["items"] == []
    assert client.get(path, headers=tenant.headers).json() == rule
    # Row-level security: the other enterprise's scoped transaction does not see the row.
    with transaction(other.enterprise_id) as session:
        assert session.scalars(select(NotificationRule.id)).all() == []
    with transaction(tenant.enterprise_id) as session:
        assert session.scalars(select(NotificationRule.id)).all() == [rule["id"]]


def test_a_schedule_change_disarms_the_rule_whoever_writes_it(client, tenant):
    """Migration 0012's trigger: the scheduler arms the rule again with its new schedule."""
    workflow = _workflow(client, tenant)
    rule = _create(client, tenant, _body(workflow["id"]))
    armed_at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with transaction() as session:
        session.execute(
            update(NotificationRule)
            .where(NotificationRule.id == rule["id"])
            .values(publish_status=PublishStatus.PUBLISH)
        )
        # Only the scheduler's own columns: the rule stays armed.
        session.execute(
            update(NotificationRule)
            .where(NotificationRule.id == rule["id"])
            .values(next_fire_at=armed_at, last_fired_at=armed_at)
        )
    before = client.get(f"/api/rules/{rule['id']}", headers=tenant.headers).json()
    assert dt.datetime.fromisoformat(before["next_fire_at"]) == armed_at
    # A change of name keeps it armed; the answer to a change of schedule shows it disarmed.
    renamed = client.patch(
        f"/api/rules/{rule['id']}", json={"name": "renamed"}, headers=tenant.headers
    ).json()
    assert dt.datetime.fromisoformat(renamed["next_fire_at"]) == armed_at
    rescheduled = client.patch(
        f"/api/rules/{rule['id']}",
        json={"trigger_config": {"cron": "0 10 * * 1"}},
        headers=tenant.headers,
    ).json()
    # Not the stale time (unarmed; or, under the suite's beat, already armed anew).
    stale = rescheduled["next_fire_at"]
    assert stale is None or dt.datetime.fromisoformat(stale) != armed_at
    with transaction() as session:  # armed again, as the scheduler would
        session.execute(
            update(NotificationRule)
            .where(NotificationRule.id == rule["id"])
            .values(next_fire_at=armed_at)
        )
    before = client.get(f"/api/rules/{rule['id']}", headers=tenant.headers).json()
    with transaction() as session:  # another service's plain SQL
        session.connection().exec_driver_sql(
            "UPDATE notify.ent_notification_rule SET trigger_config = %(config)s WHERE id = %(id)s",
            {"config": '{"cron": "*/5 * * * *"}', "id": rule["id"]},
        )
        changed = session.scalars(
            select(NotificationRule).where(NotificationRule.id == rule["id"])
        ).one()
        assert changed.next_fire_at is None
        assert changed.schedule_changed_at > dt.datetime.fromisoformat(before["updated_at"])
