"""`xnovu dev` (what `make run` runs), tried as a new user would: start it, run the printed curl,
watch the notification reach SENT, find it at the emulator and in Flower, then stop it."""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from standardwebhooks import Webhook

from devtools.devstack import free_port, free_ports_in_a_row
from tests.conftest import REPO
from tests.webhook_receiver import Receiver, serve

pytestmark = pytest.mark.integration


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float, log: list[str]) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            log.append(line)
            if marker in line:
                return
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"{marker!r} not printed; output:\n{''.join(log[-80:])}")


def _cmdline(process: psutil.Process | None) -> list[str]:
    """A process's command line, or [] when it has gone (a process of the stack may end
    between the listing of its children and this read)."""
    try:
        return process.cmdline() if process is not None else []
    except (psutil.Error, OSError):
        return []


def dev_stack_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of an `xnovu dev` of its own (free ports, its data in tmp_path, none of
    the suite's servers), and its ports."""
    ports = {
        "API_PORT": free_port(),
        "FLOWER_PORT": free_port(),
        "NOVU_EMULATOR_PORT": free_port(),
        "XNOVU_PG_PORT": free_port(),
        "XNOVU_REDIS_PORT": free_port(),
        # The first worker's; the next ones count up (two delivery workers and the webhooks').
        "WORKER_METRICS_PORT": free_ports_in_a_row(3),
        "BEAT_METRICS_PORT": free_port(),
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "NOVU_API_URL",
            "NOVU_SECRET_KEY",
            "NOVU_BRIDGE_PUBLIC_URL",  # the suite's own bridge, not this stack's
            # The suite's Novu webhooks too: `make run` points its emulator at its own API.
            "NOVU_WEBHOOK_SECRET",
            "NOVU_EMULATOR_WEBHOOK_URL",
            "NOVU_EMULATOR_WEBHOOK_SECRET",
            "UI_SESSION_SECRET",  # `make run` makes its own
            "FLOWER_BASIC_AUTH",
        }
    }
    env.update({k: str(v) for k, v in ports.items()})
    env["XNOVU_DATA_DIR"] = str(tmp_path / "data")
    return env, ports


def test_make_run_serves_the_printed_curl_end_to_end(tmp_path: Path) -> None:
    env, ports = dev_stack_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "dev"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    try:
        _read_until(proc, "Press Ctrl-C to stop everything", 120, log)
        banner = "".join(log)
        api = f"http://127.0.0.1:{ports['API_PORT']}"
        assert f"{api}" in banner and "curl -s -X POST" in banner
        assert f"{api}/ui/" in banner  # the delivery log page
        key = next(line.split()[-1] for line in log if "API key" in line)
        # A status webhook endpoint on this machine (make run allows private addresses).
        hooks = serve(Receiver())
        receiver = next(hooks)
        endpoint = httpx.post(
            f"{api}/api/webhooks",
            headers={"Authorization": f"Bearer {key}"},
            json={"url": receiver.url, "eventTypes": ["notification.sent"]},
        )
        assert endpoint.status_code == 201, endpoint.text

        response = httpx.post(
            f"{api}/api/trigger",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "workflowId": "user-signup",
                "payload": {"userId": "u-1", "email": "ada@example.com", "name": "Ada"},
            },
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["notificationId"] and accepted["transactionId"]

        deadline = time.monotonic() + 20
        row: dict = {}
        while time.monotonic() < deadline:
            row = httpx.get(
                f"{api}/api/notifications/{accepted['notificationId']}",
                headers={"Authorization": f"Bearer {key}"},
            ).json()
            if row["notification_status"] in {"SENT", "FAILED"}:
                break
            time.sleep(0.1)
        assert row["notification_status"] == "SENT", row
        assert row["transaction_id"] == accepted["transactionId"]
        # ... and its webhook, from the webhooks worker, signed with the endpoint's secret.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not receiver.events("notification.sent"):
            time.sleep(0.1)
        [hook] = receiver.events("notification.sent")
        verified = Webhook(endpoint.json()["secret"]).verify(hook.body, hook.headers)
        assert verified["data"]["notificationId"] == accepted["notificationId"]
        hooks.close()

        events = httpx.get(
            f"http://127.0.0.1:{ports['NOVU_EMULATOR_PORT']}/_emulator/events"
        ).json()
        assert [e["transactionId"] for e in events] == [accepted["transactionId"]]

        # The seeded dynamic workflow of the original design renders its two templates.
        alert = httpx.post(
            f"{api}/api/trigger",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "workflowId": "building-alert",
                "payload": {"buildingId": "b-789", "message": "HVAC failure", "priority": "high"},
            },
        )
        assert alert.status_code == 202, alert.text
        alert_tx = alert.json()["transactionId"]
        # Within one sync retry (the worker asks for a sync when Novu does not know it yet).
        deadline = time.monotonic() + 60
        alert_events: list = []
        while time.monotonic() < deadline and not alert_events:
            alert_events = httpx.get(
                f"http://127.0.0.1:{ports['NOVU_EMULATOR_PORT']}/_emulator/events",
                params={"transactionId": alert_tx},
            ).json()
            time.sleep(0.1)
        known = httpx.get(f"http://127.0.0.1:{ports['NOVU_EMULATOR_PORT']}/_emulator/workflows")
        assert alert_events, f"not at Novu; Novu knows {known.text[:2000]}; output:\n{banner}"
        rendered = alert_events[0]["payload"]["_xnovu"]["rendered"]
        assert rendered["email"]["subject"] == "[HIGH] Building b-789: HVAC failure"
        assert "HVAC failure" in rendered["email"]["body"]
        assert rendered["in_app"]["body"] == "High alert: HVAC failure"

        # Novu's side of the bridge: the emulator executed each step on our signed bridge.
        deadline = time.monotonic() + 20
        messages: list = []
        while time.monotonic() < deadline and len(messages) < 2:
            messages = httpx.get(
                f"http://127.0.0.1:{ports['NOVU_EMULATOR_PORT']}/_emulator/messages",
                params={"transactionId": alert_tx},
            ).json()
            time.sleep(0.2)
        by_step = {m["stepId"]: m["outputs"] for m in messages}
        assert by_step["email"]["subject"] == "[HIGH] Building b-789: HVAC failure"
        assert by_step["in_app"]["body"] == "High alert: HVAC failure"

        # Novu's delivery events: the emulator's signed message webhooks reached our API.
        deadline = time.monotonic() + 20
        delivery: dict = {}
        while time.monotonic() < deadline and len(delivery) < 2:
            delivery = httpx.get(
                f"{api}/api/notifications/{alert.json()['notificationId']}",
                headers={"Authorization": f"Bearer {key}"},
            ).json()["delivery"]
            time.sleep(0.2)
        assert {channel: d["status"] for channel, d in delivery.items()} == {
            "email": "sent",
            "in_app": "sent",
        }, delivery

        # The delivery log page: log in with the printed key, find the notification's timeline.
        with httpx.Client(base_url=api, follow_redirects=True) as browser:
            form = browser.get("/ui/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf, form
            listed = browser.post("/ui/login", data={"csrf": csrf[1], "api_key": key})
            assert listed.url.path == "/ui/notifications", listed.text
            assert f'href="/ui/notifications/{accepted["notificationId"]}"' in listed.text
            page = browser.get(f"/ui/notifications/{accepted['notificationId']}").text
            assert 'id="status">SENT<' in page
            assert '<td class="kind">sent</td>' in page
            # The alert's page shows Novu's message.sent per channel (the webhooks above).
            alert_page = browser.get(f"/ui/notifications/{alert.json()['notificationId']}").text
            for channel in ("email", "in_app"):
                row = re.search(rf'<tr data-channel="{channel}">.*?</tr>', alert_page)
                assert row and '<td class="delivery-status">sent</td>' in row[0], alert_page

        # The worker's and beat's metrics, on their own ports (README, "Metrics").
        sent = 'xnovu_deliveries_total{outcome="sent",workflow="user-signup"}'
        worker_metrics = httpx.get(f"http://127.0.0.1:{ports['WORKER_METRICS_PORT']}/metrics")
        assert sent in worker_metrics.text
        beat_metrics = httpx.get(f"http://127.0.0.1:{ports['BEAT_METRICS_PORT']}/metrics")
        assert 'xnovu_notifications_backlog{status="PENDING"}' in beat_metrics.text
        assert f"127.0.0.1:{ports['BEAT_METRICS_PORT']}/metrics (beat)" in banner

        flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}"
        deadline = time.monotonic() + 30
        tasks: dict = {}
        while time.monotonic() < deadline:
            try:
                tasks = httpx.get(f"{flower}/api/tasks", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                tasks = {}
            names = {t.get("name") for t in tasks.values()}
            if "xnovu.deliver_batch" in names:
                break
            time.sleep(0.5)
        # A single trigger's delivery is published as deliver_batch(enterprise, [ids]): the
        # API commits the triggers that arrive together in one transaction and one message.
        deliver = [t for t in tasks.values() if t.get("name") == "xnovu.deliver_batch"]
        assert deliver, f"Flower lists no deliver task: {tasks}"
        delivered_ids = [
            notification_id
            for task in deliver
            for notification_id in ast.literal_eval(task.get("args") or "[None, []]")[1]
        ]
        assert accepted["notificationId"] in delivered_ids, deliver

        # `xnovu` commands run beside the stack use its embedded servers (make run's dev.env).
        cli_env = {k: v for k, v in env.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        listed = subprocess.run(
            [sys.executable, "-m", "shared.cli", "keys", "list", "--json"],
            cwd=REPO,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert "using DATABASE_URL" in listed.stderr
        assert key[:12] in listed.stdout and key not in listed.stdout

        # A worker that dies is started again, and says why; the stack goes on delivering.
        [worker] = [  # Celery's main process, the supervisor's child (not a pool child)
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if _cmdline(p)[1:3] == ["-m", "celery"]
            and "--hostname=xnovu-worker@%h" in _cmdline(p)
            and "devtools.respawn" in " ".join(_cmdline(p.parent()))
        ]
        worker.kill()
        _read_until(proc, "[respawn worker] exited on its own with status", 30, log)
        again = httpx.post(
            f"{api}/api/trigger",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "workflowId": "user-signup",
                "payload": {"userId": "u-2", "email": "bob@example.com", "name": "Bob"},
            },
        )
        assert again.status_code == 202, again.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = httpx.get(
                f"{api}/api/notifications/{again.json()['notificationId']}",
                headers={"Authorization": f"Bearer {key}"},
            ).json()
            if row["notification_status"] == "SENT":
                break
            time.sleep(0.2)
        assert row["notification_status"] == "SENT", row
    finally:
        children = stop(proc)
    assert_nothing_left(children, tmp_path)


def stop(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """SIGTERM `xnovu dev`, as Ctrl-C would, and wait for it; the processes it had started."""
    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return children


def assert_nothing_left(children: list[psutil.Process], tmp_path: Path) -> None:
    """Nothing `xnovu dev` started is left running, embedded servers included."""
    time.sleep(0.5)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"left running: {[(c.pid, c.name()) for c in left]}"
    leftover_pg = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] in {"postgres", "redis-server"}
        and str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftover_pg == []


@pytest.mark.parametrize("taken", ["API_PORT", "BEAT_METRICS_PORT", "webhooks"])
def test_a_taken_port_stops_make_run_before_it_starts_anything(tmp_path: Path, taken: str) -> None:
    env, ports = dev_stack_env(tmp_path)
    # The webhooks worker serves its metrics on the port after the delivery worker's.
    port = ports["WORKER_METRICS_PORT"] + 1 if taken == "webhooks" else ports[taken]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "shared.cli", "dev"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    name = "WORKER_METRICS_PORT+1, webhooks's metrics" if taken == "webhooks" else taken
    assert f"port {port} ({name}) is in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "running" not in done.stdout.lower() and "starting embedded" not in done.stdout
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
