"""Metrics of the worker and beat (shared/metrics.py), read from their own ports while the real
worker (two prefork children) and beat deliver: counts are deltas between two scrapes, and the
backlog gauges are compared with SQL counts of rows at rest."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from shared import metrics as shared_metrics
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.workflows.registry import get_registry
from tests.conftest import retract_leftover_rows, wait_for_status
from tests.factories import trigger_signup
from tests.webhook_receiver import Receiver, serve

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample a metrics endpoint answers, by name and labels."""
    answer = httpx.get(url, timeout=10)
    answer.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def poll(read: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def _no_rows_of_earlier_tests() -> None:
    # Their retries would add to the counts this file reads as deltas.
    retract_leftover_rows("tests/worker/test_metrics.py")


def test_deliveries_failures_and_retries_are_counted_across_the_workers_children(
    client, tenant, worker, emulator
):
    before = scrape(worker.metrics_url)

    sent = [trigger_signup(client, tenant)["notificationId"] for _ in range(3)]
    for notification_id in sent:
        wait_for_status(client, tenant, notification_id, {"SENT"})

    emulator.post("/_emulator/faults", json={"status": 400, "rate": 1.0})
    failed = trigger_signup(client, tenant)["notificationId"]
    wait_for_status(client, tenant, failed, {"FAILED"})
    emulator.delete("/_emulator/faults")

    emulator.post("/_emulator/faults", json={"status": 500, "rate": 1.0, "retryAfter": 2})
    retried = trigger_signup(client, tenant)["notificationId"]
    poll(lambda: _attempts(retried) >= 2, "a second attempt")
    emulator.delete("/_emulator/faults")
    row = wait_for_status(client, tenant, retried, {"SENT"}, timeout=30)
    failed_attempts = row["attempts"] - 1  # every attempt but the last met the 500

    def counted(after: Samples) -> dict[str, float]:
        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        return {
            "sent": delta("xnovu_deliveries_total", outcome="sent", workflow="user-signup"),
            "failed": delta("xnovu_deliveries_total", outcome="failed", workflow="user-signup"),
            "retry": delta("xnovu_deliveries_total", outcome="retry", workflow="user-signup"),
            "reason": delta("xnovu_delivery_retries_total", reason="novu_unavailable"),
            "latency": delta("xnovu_trigger_to_sent_seconds_count", workflow="user-signup"),
            "400": delta("xnovu_novu_requests_total", endpoint="trigger", status="400"),
            "500": delta("xnovu_novu_requests_total", endpoint="trigger", status="500"),
            "calls": delta("xnovu_novu_request_duration_seconds_count", endpoint="trigger"),
            "tokens": delta("xnovu_novu_tokens_spent_total", endpoint="trigger"),
            "email": delta("xnovu_delivery_channels_total", outcome="sent", channel="email"),
            "failed_email": delta(
                "xnovu_delivery_channels_total", outcome="failed", channel="email"
            ),
        }

    expected = {
        "sent": 4,
        "failed": 1,
        "retry": failed_attempts,
        "reason": failed_attempts,
        "latency": 4,
        "400": 1,
        "500": failed_attempts,
        # Four sent, one refused, the 500s: every call is timed and (but a 429) paid for.
        "calls": 4 + 1 + failed_attempts,
        "tokens": 4 + 1 + failed_attempts,
        "email": 4,
        "failed_email": 1,
    }
    channels = get_registry().get_static_workflows()["user-signup"].channels
    assert "email" in {channel.value.lower() for channel in channels}
    # The counts are written just after each outcome is recorded: wait for them to settle.
    seen: dict[str, float] = {}

    def settled() -> bool:
        seen.update(counted(scrape(worker.metrics_url)))
        return seen == expected

    try:
        poll(settled, "the counts", timeout=20)
    except AssertionError:
        assert seen == expected
    after = scrape(worker.metrics_url)
    # Every sent notification's trigger→SENT time is within the histogram's sum.
    latency_sum = value(after, "xnovu_trigger_to_sent_seconds_sum", workflow="user-signup")
    assert latency_sum > value(before, "xnovu_trigger_to_sent_seconds_sum", workflow="user-signup")
    # No label names an enterprise.
    assert not any(str(tenant.enterprise_id) in str(labels) for _, labels in after)


def test_reconciler_counts_the_rows_it_republished_and_whose_lease_ran_out(
    client, tenant, worker, emulator
):
    before = scrape(worker.metrics_url)
    # A due row whose message was published long ago and never consumed...
    lost = _held(client, tenant, enqueued_at=func.now() - dt.timedelta(minutes=5))
    # ...and one whose worker died holding it.
    dead = _held(
        client,
        tenant,
        notification_status=NotificationStatus.PROCESSING,
        attempts=1,
        locked_until=func.now() - dt.timedelta(seconds=1),
    )
    for notification_id in (lost, dead):
        wait_for_status(client, tenant, notification_id, {"SENT"}, timeout=20)

    def delta(after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def counted() -> bool:
        after = scrape(worker.metrics_url)
        return (
            delta(after, "xnovu_reconciler_rows_total", action="republished") >= 1
            and delta(after, "xnovu_reconciler_rows_total", action="lease_expired") >= 1
            and delta(after, "xnovu_delivery_retries_total", reason="lease_expired") >= 1
        )

    poll(counted, "the reconciler's counts")


def _held(client: Any, tenant: Any, **values: Any) -> int:
    """A notification triggered for an hour from now (so nothing takes it meanwhile), then
    made due with `values` written over its row."""
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    held = trigger_signup(client, tenant, scheduledFor=later)["notificationId"]
    with transaction() as session:
        session.execute(
            update(Notification).where(Notification.id == held).values(scheduled_for=None, **values)
        )
    return int(held)


def _attempts(notification_id: int) -> int:
    with transaction() as session:
        return session.scalars(
            select(Notification.attempts).where(Notification.id == notification_id)
        ).one()


def _backlog_in_sql() -> tuple[int, int]:
    with transaction() as session:
        counts = dict(
            session.execute(
                select(Notification.notification_status, func.count())
                .where(
                    Notification.notification_status.in_(
                        [NotificationStatus.PENDING, NotificationStatus.PROCESSING]
                    )
                )
                .group_by(Notification.notification_status)
            ).all()
        )
    return counts.get(NotificationStatus.PENDING, 0), counts.get(NotificationStatus.PROCESSING, 0)


def test_backlog_gauges_match_the_database(client, tenant, worker):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    scheduled = [
        trigger_signup(client, tenant, scheduledFor=later)["notificationId"] for _ in range(3)
    ]
    # Due for 90 s and published for later (as a retry by message is): nobody takes it before
    # then, so it waits, PENDING and due, while the gauges are read.
    _held(
        client,
        tenant,
        created_at=func.now() - dt.timedelta(seconds=90),
        enqueued_at=func.now() + dt.timedelta(hours=1),
    )
    seen: dict[str, object] = {}

    def matches() -> bool:
        in_sql = _backlog_in_sql()
        samples = scrape(worker.beat_metrics_url)
        gauges = (
            int(value(samples, "xnovu_notifications_backlog", status="PENDING")),
            int(value(samples, "xnovu_notifications_backlog", status="PROCESSING")),
        )
        oldest = value(samples, "xnovu_oldest_due_pending_seconds")
        seen.update(sql=in_sql, gauges=gauges, oldest=oldest)
        # Read at rest: the database said the same before and after the scrape.
        return in_sql == gauges == _backlog_in_sql() and 90 <= oldest < 90 + 60

    poll(matches, f"the backlog gauges to match the database ({seen})")
    assert seen["sql"][0] >= len(scheduled) + 1  # type: ignore[index]
    retract_leftover_rows("tests/worker/test_metrics.py")


# -- the dashboard and the alert rules name only what the processes export ----------------------

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# PromQL's own words; anything else an expression names must be a series.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "absent", "and", "or", "unless", "by", "without", "on", "ignoring", "bool", "topk",
}  # fmt: skip
# Prometheus writes `up` for every target it scrapes.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}


def _text_when_up(url: str) -> str:
    """What an endpoint answers, once its process serves it (beat starts after the worker)."""
    texts: list[str] = []

    def answered() -> bool:
        try:
            texts.append(httpx.get(url, timeout=10).text)
        except httpx.TransportError:
            return False
        return True

    poll(answered, f"{url} to answer")
    return texts[-1]


def _expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "xnovu.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(dashboard["panels"]) >= 10 and len(exprs) > len(dashboard["panels"])
    return exprs


def _series_named(expr: str) -> dict[str, set[str]]:
    """The series an expression names, each with the label names its matchers use."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    named: dict[str, set[str]] = {}
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", bare):
        keys = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2)))
        named.setdefault(match.group(1), set()).update(keys)
    rest = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    rest = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", rest)
    for word in re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)", rest):
        if word not in PROMQL_WORDS:
            named.setdefault(word, set())
    return named


def _exported(worker: Any, client: Any, operator: dict[str, str]) -> dict[str, set[str]]:
    """Every series the worker, beat and an API process export, with their label names; and
    the worker's series that have no sample yet, from their definitions."""
    client.get("/healthz")  # a request the API's series count
    api = client.get("/metrics", headers=operator)
    assert api.status_code == 200
    exported: dict[str, set[str]] = {k: set(v) for k, v in PROMETHEUS_SERIES.items()}
    texts = [_text_when_up(url) for url in (worker.metrics_url, worker.beat_metrics_url)]
    for text in [*texts, api.text]:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                exported.setdefault(sample.name, set()).update(sample.labels)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in shared_metrics.REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            exported.setdefault(family.name + suffix, set())
    return exported


def test_every_series_the_dashboard_and_alerts_name_is_exported(client, operator, worker):
    exported = _exported(worker, client, operator)
    assert "xnovu_notifications_backlog" in exported  # beat's, read live
    assert "xnovu_http_requests_total" in exported  # the API's
    for expr in _expressions():
        named = _series_named(expr)
        for name, labels in named.items():
            assert name in exported, f"{expr!r} names {name!r}, which no process exports"
            if exported[name]:
                assert labels <= exported[name] | {"le"}, (expr, name, exported[name])
        # What it sums by is a label of what it sums.
        grouped = {
            g.strip() for by in re.findall(r"\bby\s*\(([^)]*)\)", expr) for g in by.split(",")
        }
        known = set().union(*(exported[name] for name in named))
        if known:
            assert grouped <= known | {"le"}, (expr, grouped, known)


def test_the_expression_reader_finds_a_misspelt_series():
    named = _series_named('sum by (le) (rate(xnovu_nope_bucket{endpoint="x"}[5m])) > 0.5')
    assert named == {"xnovu_nope_bucket": {"endpoint"}}


def test_status_webhooks_are_counted_by_the_webhook_worker(client, tenant, worker, webhook_worker):
    before = scrape(webhook_worker.metrics_url)
    receivers = serve(Receiver())
    receiver = next(receivers)
    try:
        answer = client.post(
            "/api/webhooks",
            json={"url": receiver.url, "eventTypes": ["notification.sent"]},
            headers=tenant.headers,
        )
        assert answer.status_code == 201, answer.text
        sent = trigger_signup(client, tenant)["notificationId"]
        wait_for_status(client, tenant, sent, {"SENT"})
        poll(
            lambda: any(r.event["data"].get("notificationId") == sent for r in receiver.events()),
            "the webhook",
        )

        def counted() -> bool:
            name = "xnovu_status_webhooks_total"
            delivered = value(scrape(webhook_worker.metrics_url), name, outcome="delivered")
            return delivered > value(before, name, outcome="delivered")

        # Other tests' endpoints may be retried meanwhile: at least this one was delivered.
        poll(counted, "the delivered webhook's count")
    finally:
        receivers.close()
