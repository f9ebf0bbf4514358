"""Reading, cancelling and retrying notifications; isolation between enterprises."""

from __future__ import annotations

import datetime as dt

from shared.db.enums import NotificationStatus
from tests.conftest import make_tenant, signup_payload
from tests.rows import set_columns


def _scheduled(client, tenant, **extra):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    response = client.post(
        "/api/trigger",
        json={
            "workflowId": "user-signup",
            "payload": signup_payload(),
            "scheduledFor": later,
            **extra,
        },
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    return response.json()["notificationId"]


def _force_status(notification_id: int, status: NotificationStatus) -> None:
    set_columns(notification_id, notification_status=status)


def test_another_enterprises_notification_is_404(client, tenant):
    nid = _scheduled(client, tenant)
    other = make_tenant()
    for response in (
        client.get(f"/api/notifications/{nid}", headers=other.headers),
        client.post(f"/api/notifications/{nid}/cancel", headers=other.headers),
        client.post(f"/api/notifications/{nid}/retry", headers=other.headers),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    # and the row is untouched
    mine = client.get(f"/api/notifications/{nid}", headers=tenant.headers).json()
    assert mine["notification_status"] == "PENDING"


def test_list_filters_by_status_and_workflow_and_pages_by_keyset(client, tenant):
    ids = [_scheduled(client, tenant) for _ in range(5)]
    _force_status(ids[0], NotificationStatus.FAILED)
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/notifications", params=params, headers=tenant.headers).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    failed = client.get(
        "/api/notifications", params={"status": "FAILED"}, headers=tenant.headers
    ).json()["items"]
    assert [item["id"] for item in failed] == [ids[0]]
    by_workflow = client.get(
        "/api/notifications", params={"workflowId": "nothing-like-it"}, headers=tenant.headers
    ).json()["items"]
    assert by_workflow == []


def test_list_never_shows_another_enterprises_rows(client, tenant):
    _scheduled(client, tenant)
    other = make_tenant()
    assert client.get("/api/notifications", headers=other.headers).json()["items"] == []


def test_bad_cursor_and_bad_status_are_client_errors(client, tenant):
    assert client.get("/api/notifications?cursor=!!!", headers=tenant.headers).status_code == 400
    assert client.get("/api/notifications?status=NOPE", headers=tenant.headers).status_code == 422
    assert client.get("/api/notifications/abc", headers=tenant.headers).status_code == 422


def test_cancel_pending_retracts_and_repeating_it_answers_the_same(client, tenant):
    nid = _scheduled(client, tenant)
    first = client.post(
        f"/api/notifications/{nid}/cancel",
        json={"reason": "user opted out"},
        headers=tenant.headers,
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["notification_status"] == "RETRACTED"
    assert body["retraction_reason"] == "user opted out"
    assert body["retracted_at"] is not None
    again = client.post(f"/api/notifications/{nid}/cancel", headers=tenant.headers)
    assert again.status_code == 200
    assert again.json() == body


def test_cancel_processing_or_failed_is_409(client, tenant):
    for status in (NotificationStatus.PROCESSING, NotificationStatus.FAILED):
        nid = _scheduled(client, tenant)
        _force_status(nid, status)
        response = client.post(f"/api/notifications/{nid}/cancel", headers=tenant.headers)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "invalid_state"


def test_retry_moves_failed_back_to_pending_and_refuses_other_states(client, tenant):
    nid = _scheduled(client, tenant)
    refused = client.post(f"/api/notifications/{nid}/retry", headers=tenant.headers)
    assert refused.status_code == 409
    _force_status(nid, NotificationStatus.FAILED)
    accepted = client.post(f"/api/notifications/{nid}/retry", headers=tenant.headers)
    assert accepted.status_code == 202
    assert accepted.json()["notification_status"] == "PENDING"
    assert accepted.json()["attempts"] == 0


def test_unknown_route_and_method_are_json_errors(client, tenant):
    missing = client.get("/api/nothing", headers=tenant.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.delete("/api/trigger", headers=tenant.headers)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"] == "ok" and checks["broker"] == "ok"
    # Beat is reported, not required (tests/worker/test_beat_heartbeat.py): this test may run
    # before any beat has.
    assert checks["beat"]["status"] in {"ok", "never", "stale"}


def test_ids_beyond_bigint_are_422_not_a_database_error(client, tenant):
    huge = 2**70
    assert client.get(f"/api/notifications/{huge}", headers=tenant.headers).status_code == 422
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "notificationId": huge},
        headers=tenant.headers,
    )
    assert response.status_code == 422


def test_metrics_count_requests_by_route_template(client, tenant, operator):
    client.get("/api/notifications/123456789", headers=tenant.headers)
    text = client.get("/metrics", headers=operator).text
    assert 'route="/api/notifications/{notification_id}"' in text
    assert 'status="404"' in text
    assert "/api/notifications/123456789" not in text


def test_list_filters_by_tag_every_tag_given_must_be_carried(client, tenant):
    billing = _scheduled(client, tenant, tags=["billing"])
    both = _scheduled(client, tenant, tags=["billing", "urgent"])
    _scheduled(client, tenant)
    other = make_tenant()
    _scheduled(client, other, tags=["billing"])

    def listed(query: str) -> list[int]:
        response = client.get(f"/api/notifications?{query}", headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert listed("tag=billing") == [both, billing]
    assert listed("tag=billing&tag=urgent") == [both]
    assert listed("tag=urgent&limit=1") == [both]
    assert listed("tag=nobody-uses-it") == []
    empty = client.get("/api/notifications?tag=", headers=tenant.headers)
    assert empty.status_code == 422
    assert empty.json()["error"]["details"][0]["field"].startswith("query.tag")
