"""The worker's metrics without a worker (shared/metrics.py): a sub-batch's outcomes counted
at once give what counting each would, and a Novu call's endpoint label never holds a path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, Histogram

from devtools.devstack import free_port
from shared import metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_observe_many_counts_what_observing_each_value_counts():
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = (0.1, 1, 5)
    each = Histogram("h", "h", ["w"], buckets=buckets, registry=one).labels("x")
    summed = Histogram("h", "h", ["w"], buckets=buckets, registry=many).labels("x")
    # On a bound, between bounds, past the last, and zero.
    observed = [0.0, 0.1, 0.1000001, 0.5, 1.0, 4.9, 5.0, 7.5, 120.0, 0.05]
    for value in observed:
        each.observe(value)
    metrics.observe_many(summed, observed)
    assert _samples(many) == _samples(one)
    assert _samples(many)[("h_count", (("w", "x"),))] == len(observed)


def test_a_sub_batch_is_counted_per_outcome_workflow_channel_and_reason():
    before = _samples(metrics.REGISTRY)
    counted = metrics.Outcomes()
    for _ in range(3):
        counted.add("sent", "wf-a", ("email", "in_app"), since_due=0.2)
    counted.add("failed", metrics.DYNAMIC, ("sms",))
    counted.add("retry", "wf-a", ("email", "in_app"), "novu_unavailable")
    counted.add("given_back", "wf-a", ("email", "in_app"), "novu_rate_limited")
    counted.record()
    after = _samples(metrics.REGISTRY)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("xnovu_deliveries_total", outcome="sent", workflow="wf-a") == 3
    assert delta("xnovu_deliveries_total", outcome="failed", workflow="(dynamic)") == 1
    assert delta("xnovu_deliveries_total", outcome="retry", workflow="wf-a") == 1
    assert delta("xnovu_delivery_channels_total", outcome="sent", channel="in_app") == 3
    assert delta("xnovu_delivery_channels_total", outcome="failed", channel="sms") == 1
    # Only sent and failed notifications count by channel.
    assert delta("xnovu_delivery_channels_total", outcome="retry", channel="email") == 0
    assert delta("xnovu_delivery_retries_total", reason="novu_unavailable") == 1
    assert delta("xnovu_delivery_retries_total", reason="novu_rate_limited") == 1
    assert delta("xnovu_trigger_to_sent_seconds_count", workflow="wf-a") == 3
    assert delta("xnovu_trigger_to_sent_seconds_bucket", workflow="wf-a", le="0.25") == 3


def test_novu_endpoints_are_named_never_by_path():
    assert metrics.novu_endpoint("POST", "/v1/events/trigger") == "trigger"
    assert metrics.novu_endpoint("POST", "/v1/events/trigger/bulk") == "trigger_bulk"
    assert metrics.novu_endpoint("DELETE", "/v1/events/trigger/xn-123%2F4") == "cancel"
    assert metrics.novu_endpoint("POST", "/v1/bridge/sync?source=xnovu") == "bridge_sync"
    assert metrics.novu_endpoint("GET", "/v1/subscribers/abc") == "other"


def test_a_workflow_label_is_a_static_key_or_the_dynamic_bucket():
    assert metrics.workflow_label("user-signup", static=True) == "user-signup"
    assert metrics.workflow_label("tenant-chosen-key", static=False) == metrics.DYNAMIC


# A worker's main process as Celery runs it: the switch to multiprocess mode, then a forked
# child counting, then the parent; prints what the endpoint serves.
_WORKER = """
import os, sys, httpx
from shared import metrics
port = int(sys.argv[1])
metrics.serve_worker_metrics("127.0.0.1", port)
child = os.fork()
if child == 0:
    metrics.RECONCILER.labels("released").inc(2)
    os._exit(0)
os.waitpid(child, 0)
metrics.child_exited(child)
metrics.RECONCILER.labels("released").inc(3)
print(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
"""


def test_a_worker_serves_its_childrens_sum_and_forgets_an_earlier_run(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for run in range(2):  # the second run finds the first one's files
        served = subprocess.run(
            [sys.executable, "-c", _WORKER, str(free_port())],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert 'xnovu_reconciler_rows_total{action="released"} 5.0' in served, (run, served)


def test_prometheus_scrapes_where_compose_serves_the_metrics():
    repo = Path(__file__).resolve().parents[2]
    services = yaml.safe_load((repo / "docker-compose.yml").read_text())["services"]
    scrape = yaml.safe_load((repo / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    setting = {"xnovu-worker": "WORKER_METRICS_PORT", "xnovu-beat": "BEAT_METRICS_PORT"}
    for name, variable in setting.items():
        targets = [t for config in jobs[name]["static_configs"] for t in config["targets"]]
        assert targets, name
        for target in targets:
            host, port = target.split(":")
            environment = services[host]["environment"]
            assert str(environment[variable]) == port, (name, target)
            # On compose's network only: listening beyond the loopback, published nowhere.
            assert environment["METRICS_HOST"] == "0.0.0.0"
            assert "ports" not in services[host], host
    assert jobs["xnovu-api"]["authorization"]["credentials_file"]  # /metrics is the operator's
