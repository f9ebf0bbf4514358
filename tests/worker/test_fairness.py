"""One enterprise's slow renders do not starve another's deliveries (docs/architecture.md,
"Rendering"): measured against an unloaded baseline taken in the same test, on the real worker
(two children) with the real API."""

from __future__ import annotations

import datetime as dt
import os
import statistics
import threading
import time
import uuid
from functools import partial
from typing import Any

import pytest

from shared.db.enums import ChannelType
from shared.notifications.fairness import (
    LANE_NICE,
    MAX_WAIT_SECONDS,
    MIN_WAIT_SECONDS,
    SLOW_RENDER_SECONDS,
    FairRenders,
    RenderLanes,
    in_lane_thread,
)
from shared.settings import get_settings
from shared.templates import TemplateRenderer
from shared.templates.errors import RenderDeferred, RenderLimitExceeded, RenderMoved
from shared.templates.limits import (
    LOW_PRIORITY_WALL_FACTOR,
    RenderBudget,
    renders_timed_by_cpu,
    watched,
)
from tests.conftest import Tenant, make_tenant, signup_payload
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration

# Loops until the 2 s render timeout: every notification of this template holds a worker child
# for the whole timeout before it fails.
TIMES_OUT = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
SLOW_NOTIFICATIONS = 10
SAMPLES = 100


def _at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _trigger_to_sent(client: Any, tenant: Tenant) -> float:
    """Seconds from a trigger's commit to its SENT, by the database's own clock."""
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload()},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    url = f"/api/notifications/{response.json()['notificationId']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = client.get(url, headers=tenant.headers).json()
        if row["notification_status"] != "PENDING" and row["notification_status"] != "PROCESSING":
            assert row["notification_status"] == "SENT", row
            return (_at(row["processed_at"]) - _at(row["created_at"])).total_seconds()
        time.sleep(0.02)
    raise AssertionError(f"{url} was not delivered within 60 s")


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


# The slow enterprise's ten renders take their turns in one lane: 2 s each, and up to 3 s
# between turns (its rows come back by countdown), so it alone takes most of a minute.
@pytest.mark.timeout(300)
def test_slow_templates_do_not_delay_another_enterprise(client, worker, emulator):
    slow, other = make_tenant(), make_tenant()
    sms = create_template(client, slow, "SMS", body=TIMES_OUT)
    create_workflow(client, slow, "slow-renders", SMS=sms, publish=True)
    for _ in range(3):  # warm up: the worker's connections and caches for this enterprise
        _trigger_to_sent(client, other)

    unloaded = [_trigger_to_sent(client, other) for _ in range(SAMPLES)]

    slow_ids = []
    for _ in range(SLOW_NOTIFICATIONS):  # one message each, as ten separate triggers are
        response = client.post(
            "/api/trigger",
            json={"workflowId": "slow-renders", "payload": {"userId": "u-1"}},
            headers=slow.headers,
        )
        assert response.status_code == 202, response.text
        slow_ids.append(response.json()["notificationId"])
    time.sleep(0.5)  # every child has started one of them
    loaded = [_trigger_to_sent(client, other) for _ in range(SAMPLES)]

    base, under_load = _p99(unloaded), _p99(loaded)
    print(
        f"trigger->SENT p99: unloaded {base * 1000:.0f} ms, with {SLOW_NOTIFICATIONS} timing-out"
        f" renders of another enterprise {under_load * 1000:.0f} ms ({under_load / base:.2f}x);"
        f" medians {statistics.median(unloaded) * 1000:.0f} ms,"
        f" {statistics.median(loaded) * 1000:.0f} ms"
    )
    # The target is 2x; the margin is for a loaded two-core machine shared with other tests
    # (and a floor of 500 ms, for baselines of a few tens of milliseconds: a full-suite run
    # with 12 samples once saw 0.37 s against 22 ms). On a quiet machine three runs of 100
    # samples gave 1.12x, 1.21x and 1.32x; 1.74x to 2.13x while the lane's render ran at full
    # priority and held one of the two cores for its whole timeout; 9 s before the lanes.
    assert under_load <= max(3 * base, base + 0.5), (unloaded, loaded)

    # The slow enterprise's notifications all fail for their own reason, each on its first
    # attempt: waiting for the lane uses none.
    deadline = time.monotonic() + SLOW_NOTIFICATIONS * 5 + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [
            client.get(f"/api/notifications/{i}", headers=slow.headers).json() for i in slow_ids
        ]
        if all(row["notification_status"] == "FAILED" for row in rows):
            break
        time.sleep(0.5)
    assert [row["notification_status"] for row in rows] == ["FAILED"] * SLOW_NOTIFICATIONS
    for row in rows:
        assert row["error_details"]["code"] == "render_failed", row
        assert "timed out" in row["error_details"]["message"]
        # Only a lease that ran out uses an attempt: on a loaded machine a render on the lane's
        # low-priority thread may take up to 4 timeouts of wall time (8 s), beyond the tests'
        # 5 s PROCESSING_LEASE_SECONDS (production's is 60 s).
        events = client.get(f"/api/notifications/{row['id']}/events", headers=slow.headers).json()[
            "items"
        ]
        leases_run_out = sum(event["kind"] == "lease.expired" for event in events)
        assert row["attempts"] == 1 + leases_run_out, (row, [e["kind"] for e in events])


def _lanes(stack, lanes: int = 2) -> RenderLanes:
    """Render lanes of their own (not the worker's), so that the test and the worker do not
    take each other's."""
    return RenderLanes(stack.redis_url, lanes=lanes, prefix=f"test:{uuid.uuid4().hex}:")


def test_one_task_of_a_slow_enterprise_renders_at_a_time(stack):
    lanes = _lanes(stack)
    slow = uuid.uuid4()
    first, second, third = (FairRenders(lanes, slow, render_seconds=1.0) for _ in range(3))
    assert first.admit() is None and second.admit() is None  # not known to be slow yet
    with pytest.raises(RenderMoved):  # a render of `first` ran long: it marks the enterprise,
        first.slow()  # takes the lane, and is to go on on the lane's low-priority thread
    assert first.holding
    in_lane_thread(first.slow)  # there it goes on
    with pytest.raises(RenderDeferred) as deferred:
        second.slow()  # the other task's render gives way at once
    assert MIN_WAIT_SECONDS <= deferred.value.delay <= MAX_WAIT_SECONDS * 1.5
    assert third.admit() is not None  # a new task defers its rows unclaimed
    assert FairRenders(lanes, uuid.uuid4(), render_seconds=1.0).admit() is None  # others go on

    first.spend(1.0)  # its render time is spent: it gives the rest back and the lane up
    assert first.spent_out() and first.admit() is not None
    first.release()
    assert third.admit() is None and third.holding
    third.release()


def test_slow_enterprises_share_render_slow_lanes(stack):
    lanes = _lanes(stack, lanes=1)
    first, second = (FairRenders(lanes, uuid.uuid4(), render_seconds=1.0) for _ in range(2))
    in_lane_thread(first.slow)
    with pytest.raises(RenderDeferred) as deferred:
        second.slow()  # another enterprise, but the only lane is taken
    assert not isinstance(deferred.value, RenderMoved)
    assert second.admit() is not None
    first.release()
    assert second.admit() is None and second.holding
    second.release()


def test_a_render_that_must_give_way_stops_at_once(stack):
    lanes = _lanes(stack)
    slow = uuid.uuid4()
    holder, waiter = (FairRenders(lanes, slow, render_seconds=1.0) for _ in range(2))
    in_lane_thread(holder.slow)
    renderer = TemplateRenderer(get_settings())
    # It gives way (0.2 s in), long before its 2 s timeout would have failed it; and not as a
    # RenderError: the row goes back with its attempt unused, the template is not blamed.
    with pytest.raises(RenderDeferred) as deferred, watched(waiter.row()):
        renderer.render_source(ChannelType.SMS, None, TIMES_OUT, {}, enterprise_id=None)
    assert not isinstance(deferred.value, RenderMoved)
    holder.release()


def test_a_render_that_turns_slow_moves_to_the_low_priority_thread(stack):
    share = FairRenders(_lanes(stack), uuid.uuid4(), render_seconds=1.0)
    settings = get_settings().model_copy(update={"template_render_timeout_seconds": 0.5})
    renderer = TemplateRenderer(settings)

    def render() -> None:
        with watched(share.row()):
            renderer.render_source(ChannelType.SMS, None, TIMES_OUT, {}, enterprise_id=None)

    started = time.monotonic()
    with pytest.raises(RenderMoved):  # stopped once slow (0.2 s), long before its timeout
        render()
    assert share.holding and time.monotonic() - started < 0.45
    # On the lane thread it goes on to its own timeout, counted in CPU time there.
    with pytest.raises(RenderLimitExceeded, match=r"longer than 0\.5 s of CPU time"):
        in_lane_thread(render)
    share.release()


def test_a_row_whose_render_waited_for_the_cpu_is_not_slow(stack):
    """Slowness is the renders' CPU time: a thread that waited (for the CPU, the GIL, a
    collection) past SLOW_RENDER_SECONDS of real time is not slow, one that computed is."""
    lanes = _lanes(stack)
    enterprise = uuid.uuid4()
    share = FairRenders(lanes, enterprise, render_seconds=1.0)
    watch = share.row()
    time.sleep(SLOW_RENDER_SECONDS * 1.5)  # real time passes, next to no CPU time
    assert time.monotonic() > watch.slow_at  # the render's own check would fire now
    watch.slow()
    assert not share.holding and not lanes.is_slow(enterprise)
    assert watch.slow_at > time.monotonic()  # it looks again when the CPU could have run out

    spun = time.thread_time()
    while time.thread_time() - spun < SLOW_RENDER_SECONDS:  # now it computes that long
        pass
    with pytest.raises(RenderMoved):
        watch.slow()
    assert share.holding and lanes.is_slow(enterprise)
    share.release()


def test_the_lane_thread_runs_at_the_lowest_priority():
    niceness = in_lane_thread(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert niceness == LANE_NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < LANE_NICE  # only it
    assert in_lane_thread(renders_timed_by_cpu) and not renders_timed_by_cpu()


def test_on_the_lane_thread_a_render_is_timed_by_its_cpu_time_within_a_bound():
    def waits_then_spins(timeout: float, wait: float) -> float:
        budget = RenderBudget(timeout=timeout, max_depth=4, max_bytes=1 << 20)
        time.sleep(wait)  # real time passes, no CPU time: as when other work has the CPU
        budget.check_time()  # not timed out yet
        started = time.monotonic()
        with pytest.raises(RenderLimitExceeded, match=rf"longer than {timeout:g} s of CPU time"):
            while True:
                budget.check_time()
        return time.monotonic() - started

    # 0.3 s of waiting did not count against its 0.2 s timeout: it had all 0.2 s of CPU after.
    assert in_lane_thread(partial(waits_then_spins, 0.2, 0.3)) >= 0.15

    def starved() -> None:
        budget = RenderBudget(timeout=0.05, max_depth=4, max_bytes=1 << 20)
        time.sleep(0.05 * LOW_PRIORITY_WALL_FACTOR + 0.05)
        budget.check_time()

    with pytest.raises(RenderLimitExceeded, match=r"less than 0\.05 s of CPU time in 0\.2 s"):
        in_lane_thread(starved)
    # Elsewhere the timeout is real time, as before.
    budget = RenderBudget(timeout=0.05, max_depth=4, max_bytes=1 << 20)
    time.sleep(0.1)
    with pytest.raises(RenderLimitExceeded, match=r"longer than 0\.05 s$"):
        budget.check_time()
