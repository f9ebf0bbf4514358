"""The Novu sync on the real stack: the emulator, as Novu, calls discover on a real API process
(NOVU_BRIDGE_PUBLIC_URL) and keeps the workflows it lists; the worker syncs when asked, retries
a failed sync, and syncs once for many requests (docs/architecture.md, "Novu")."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis import Redis
from sqlalchemy import select

from shared.db.enums import ChannelType, PublishStatus, WorkflowType
from shared.db.models import NotificationWorkflow, NovuSyncRun, NovuWorkflowSync
from shared.db.session import transaction
from shared.novu.sync import DEBOUNCE_KEY, LOCK_KEY, request_sync, sync_exclusively
from tests.conftest import REPO, BridgeApi, Stack, Tenant, free_port, make_tenant
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration


def _known(emulator: httpx.Client) -> dict[str, dict[str, Any]]:
    """The workflows the emulator (Novu) knows, by workflowId."""
    response = emulator.get("/_emulator/workflows")
    assert response.status_code == 200, response.text
    return {w["workflowId"]: w for w in response.json()}


def _eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _insert_published(tenant: Tenant, key: str, template_id: int) -> None:
    """A published IN_APP workflow written straight into the database (as an import or a
    manual fix would be): nothing requests a sync for it."""
    with transaction(tenant.enterprise_id) as session:
        session.add(
            NotificationWorkflow(
                enterprise_id=tenant.enterprise_id,
                workflow_key=key,
                workflow_type=WorkflowType.DYNAMIC,
                publish_status=PublishStatus.PUBLISH,
                default_channels=[ChannelType.IN_APP],
                template_overrides={"inAppTemplateId": template_id},
                name=key,
            )
        )


def _runs(reason: str) -> list[NovuSyncRun]:
    with transaction() as session:
        R = NovuSyncRun
        return list(session.scalars(select(R).where(R.reason == reason).order_by(R.id)))


def _runs_with(key: str) -> list[NovuSyncRun]:
    with transaction() as session:
        R = NovuSyncRun
        return list(session.scalars(select(R).where(R.workflow_keys.any_() == key).order_by(R.id)))


def _sync_state(client: Any, tenant: Tenant, workflow_id: int) -> dict[str, Any]:
    response = client.get(f"/api/workflows/{workflow_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["novu_sync"])


def _cli_sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "novu", "sync"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_cli_sync_registers_static_and_dynamic_workflows(
    stack: Stack, emulator: httpx.Client, bridge_process: BridgeApi, client: Any, tenant: Tenant
) -> None:
    template = create_template(client, tenant, "IN_APP")
    key = f"cli-sync-{uuid.uuid4().hex[:8]}"
    _insert_published(tenant, key, template["id"])
    assert key not in _known(emulator)

    done = _cli_sync(stack.env)

    assert done.returncode == 0, done.stderr
    static = {"user-signup", "password-reset"}  # built in (other tests add their own in-process)
    listed = {line.strip() for line in done.stdout.splitlines()[1:]}
    assert {key, *static} <= listed
    known = _known(emulator)
    assert {key, *static} <= set(known)
    assert known[key]["steps"] == [{"stepId": "in_app", "type": "in_app"}]
    assert known[key]["bridgeUrl"] == stack.env["NOVU_BRIDGE_PUBLIC_URL"]
    assert known[key]["source"] == "xnovu"
    [workflow] = [
        w
        for w in client.get("/api/workflows", headers=tenant.headers).json()["items"]
        if w["workflow_key"] == key
    ]
    assert workflow["novu_sync"]["synced"] is True
    assert workflow["novu_sync"]["synced_at"] is not None
    assert workflow["novu_sync"]["last_error"] is None


def test_cli_sync_without_a_public_bridge_url_says_what_to_set(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "NOVU_BRIDGE_PUBLIC_URL"}
    before = len(_runs("xnovu novu sync"))

    done = _cli_sync(env)

    assert done.returncode == 1
    assert "NOVU_BRIDGE_PUBLIC_URL is not set" in done.stderr
    assert len(_runs("xnovu novu sync")) == before


def test_cli_sync_refused_by_novu_exits_non_zero_with_its_error(
    stack: Stack, emulator: httpx.Client
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/api/novu"

    done = _cli_sync({**stack.env, "NOVU_BRIDGE_PUBLIC_URL": unreachable})

    assert done.returncode == 1
    assert "Novu did not take the sync: Novu HTTP 400: Unable to reach Bridge Endpoint" in (
        done.stderr
    )
    [*_, run] = _runs("xnovu novu sync")
    assert run.bridge_url == unreachable
    assert run.error is not None and "Unable to reach Bridge Endpoint" in run.error


def test_the_periodic_check_syncs_only_what_changed(
    emulator: httpx.Client, bridge_process: BridgeApi, client: Any, tenant: Tenant
) -> None:
    sync_exclusively(reason="test: settle", wait_seconds=30)
    unchanged = sync_exclusively(reason="test: check", force=False, wait_seconds=30)
    assert unchanged.skipped and unchanged.ok

    template = create_template(client, tenant, "IN_APP")
    key = f"check-sync-{uuid.uuid4().hex[:8]}"
    _insert_published(tenant, key, template["id"])
    changed = sync_exclusively(reason="test: check", force=False, wait_seconds=30)

    assert not changed.skipped and changed.ok
    assert key in changed.workflow_keys
    assert key in _known(emulator)


def test_publishing_through_the_api_syncs_the_workflow(
    client: Any, tenant: Tenant, emulator: httpx.Client, worker: Any
) -> None:
    template = create_template(client, tenant, "IN_APP")
    key = f"published-{uuid.uuid4().hex[:8]}"
    workflow = create_workflow(client, tenant, key, IN_APP=template)
    assert workflow["novu_sync"] == {"synced": False, "synced_at": None, "last_error": None}

    published = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
    assert published.status_code == 200, published.text

    _eventually(lambda: key in _known(emulator), f"Novu to know {key}")
    state = _eventually(
        lambda: (s := _sync_state(client, tenant, workflow["id"]))["synced"] and s,
        "the workflow to read as synced",
    )
    assert state["synced_at"] is not None and state["last_error"] is None

    withdrawn = client.post(f"/api/workflows/{workflow['id']}/unpublish", headers=tenant.headers)
    assert withdrawn.status_code == 200, withdrawn.text
    _eventually(lambda: key not in _known(emulator), f"Novu to forget {key}")
    _eventually(
        lambda: not _sync_state(client, tenant, workflow["id"])["synced"],
        "the workflow to read as not synced",
    )


def test_a_failed_sync_records_its_error_and_is_retried(
    client: Any, tenant: Tenant, emulator: httpx.Client, worker: Any, bridge_process: BridgeApi
) -> None:
    template = create_template(client, tenant, "IN_APP")
    key = f"retried-{uuid.uuid4().hex[:8]}"
    workflow = create_workflow(client, tenant, key, IN_APP=template)
    bridge_process.stop()
    try:
        published = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
        assert published.status_code == 200, published.text
        state = _eventually(
            lambda: (s := _sync_state(client, tenant, workflow["id"]))["last_error"] and s,
            "the failed sync to be recorded",
        )
        assert state["synced"] is False
        assert "Unable to reach Bridge Endpoint" in state["last_error"]
        assert key not in _known(emulator)
    finally:
        bridge_process.start()

    state = _eventually(
        lambda: (s := _sync_state(client, tenant, workflow["id"]))["synced"] and s,
        "the retried sync to succeed",
        timeout=60,
    )
    assert state["last_error"] is None
    assert key in _known(emulator)
    # The first sync with the key failed and a later one took it: the failed task's own retry,
    # or beat's periodic check when it comes first (both are the designed recovery).
    runs = [(run.reason, run.error) for run in _runs_with(key)]
    assert runs[0][1] is not None and runs[-1][1] is None, runs
    assert any(reason == "periodic check" or reason == runs[0][0] for reason, _ in runs[1:]), runs


def test_concurrent_requests_make_one_sync(
    stack: Stack, worker: Any, emulator: httpx.Client
) -> None:
    redis = Redis.from_url(stack.redis_url)
    # A request of an earlier test still in its window would swallow both.
    _eventually(lambda: not redis.exists(DEBOUNCE_KEY), "earlier requests to be taken")
    reasons = [f"test: concurrent {uuid.uuid4().hex[:6]}" for _ in range(2)]
    # The test holds the sync lock while it asks twice, as a sync running when a burst arrives
    # does: the first request's task waits for the lock, so the second request meets its mark
    # however the machine schedules them. (Asked back to back without the lock, the task at
    # times took the lock and cleared the mark in between, and a second sync was right.)
    lock = redis.lock(LOCK_KEY, timeout=30)
    assert lock.acquire(blocking_timeout=30), "the sync lock stayed taken"
    try:
        for reason in reasons:
            request_sync(reason)
        assert redis.get(DEBOUNCE_KEY) == reasons[0].encode()  # the second was swallowed
    finally:
        lock.release()

    _eventually(lambda: any(_runs(r) for r in reasons), "the requested sync")
    time.sleep(5)  # past the debounce window: a second sync, had one been asked for, has run
    assert [len(_runs(r)) for r in reasons] == [1, 0]


def test_request_sync_with_redis_unreachable_logs_and_returns(stack: Stack) -> None:
    code = "from shared.novu.sync import request_sync; request_sync('test: no redis')"
    env = {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    started = time.monotonic()

    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert "could not request a Novu sync (test: no redis)" in done.stderr
    assert time.monotonic() - started < 10


def test_an_enterprise_reads_the_sync_rows_of_its_own_keys_only(
    emulator: httpx.Client, bridge_process: BridgeApi, client: Any, tenant: Tenant
) -> None:
    template = create_template(client, tenant, "IN_APP")
    key = f"own-sync-{uuid.uuid4().hex[:8]}"
    _insert_published(tenant, key, template["id"])
    assert key in sync_exclusively(reason="test: isolation", wait_seconds=30).workflow_keys
    other = make_tenant()

    def keys_seen_by(enterprise_id: uuid.UUID) -> set[str]:
        with transaction(enterprise_id) as session:
            return set(session.scalars(select(NovuWorkflowSync.workflow_key)))

    assert key in keys_seen_by(tenant.enterprise_id)
    assert key not in keys_seen_by(other.enterprise_id)
    with transaction() as session:  # the worker's system transactions see every key
        assert key in set(session.scalars(select(NovuWorkflowSync.workflow_key)))
