"""The chaos run: `python -m tests.chaos.chaos_run --notifications 2000 --rate 50`.

Starts a stack of its own (tests/chaos/stack.py), triggers N notifications over HTTP at a
steady rate while the emulated Novu fails calls and, on a schedule, the worker is SIGKILLed
twice, Redis is SIGKILLed and restarted once and the worker's PostgreSQL connections are
terminated (tests/chaos/plan.py). It then waits until every notification is SENT or FAILED,
waits one reconciler window more, prints what happened and exits 0 only if nothing was lost,
sent twice or left stuck, every FAILED came from a permanent fault of the plan, and every
planned fault fired.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from tests.chaos.plan import (
    LONG_FAULTS,
    REDIS_DOWN_SECONDS,
    SCHEDULE,
    SHORT_FAULTS,
    TIMINGS,
    WORKER_DOWN_SECONDS,
    Action,
    NovuFaults,
    reconciler_window,
)
from tests.chaos.stack import ChaosStack
from tests.chaos.verdict import ActionRecord, Observed, Row, Triggered, Verdict, judge

CLIENT_TRIES = 20


def _trigger(http: httpx.Client, index: int, run: str, t0: float) -> Triggered:
    """One trigger, retried with the same Idempotency-Key as a careful client would."""
    user = f"chaos-{run}-{index}"
    body = {
        "workflowId": "user-signup",
        "payload": {"userId": user, "email": f"{user}@example.com", "name": "Chaos"},
    }
    started = time.monotonic()
    first = 0.0
    status: int | None = None
    error: str | None = None
    for tries in range(1, CLIENT_TRIES + 1):
        sent = time.monotonic()
        try:
            response = http.post(
                "/api/trigger", json=body, headers={"Idempotency-Key": f"chaos-{run}-{index}"}
            )
            status, error = response.status_code, None
            if status == 202:
                answer = response.json()
                return Triggered(
                    index,
                    status,
                    int(answer["notificationId"]),
                    answer["transactionId"],
                    tries,
                    time.monotonic() - started,
                    first or time.monotonic() - sent,
                    started_at=started - t0,
                )
            error = response.text[:200]
        except httpx.HTTPError as exc:
            error = repr(exc)
        first = first or time.monotonic() - sent
        if status is not None and status < 500 and status != 429:
            break
        time.sleep(0.25)
    return Triggered(
        index, status, None, None, tries, time.monotonic() - started, first, error, started - t0
    )


def _last_critical(log: Path) -> str | None:
    lines = [line for line in log.read_text(errors="replace").splitlines() if "CRITICAL" in line]
    return lines[-1].split("] ", 1)[-1][:200] if lines else None


class ChaosRun:
    """One run against a started stack: trigger, inject the schedule, wait, judge."""

    def __init__(self, stack: ChaosStack, notifications: int, rate: float, faults: NovuFaults):
        self.stack = stack
        self.notifications = notifications
        self.rate = rate
        self.faults = faults
        self.run_id = uuid.uuid4().hex[:8]
        self.actions: list[ActionRecord] = []
        self.enterprise_id = uuid.uuid4()
        # Held while the schedule kills and restarts the worker, so the supervisor keeps out.
        self._worker_lock = threading.Lock()
        self.crashes: list[str] = []
        self._done = threading.Event()

    def _act(self, action: Action, t0: float) -> None:
        at = time.monotonic() - t0
        count, detail, error = 1, "", None
        try:
            if action is Action.KILL_WORKER:
                with self._worker_lock:
                    pids = self.stack.kill_worker()
                    time.sleep(WORKER_DOWN_SECONDS)
                    self.stack.start_worker()
                detail = f"{len(pids)} processes killed"
            elif action is Action.RESTART_REDIS:
                self.stack.restart_redis(REDIS_DOWN_SECONDS)
                detail = f"down {REDIS_DOWN_SECONDS:.0f}s"
            elif action is Action.TERMINATE_PG:
                count = self.stack.terminate_worker_connections()
                detail = f"{count} backends terminated"
        except Exception as exc:
            error = repr(exc)
        took = time.monotonic() - t0 - at
        self.actions.append(ActionRecord(action, at, took, detail, count, error))
        print(f"  [{at:6.1f}s] {action.value}: {detail or error}", flush=True)

    def _supervise(self, t0: float, stop: threading.Event) -> None:
        """Restart a worker that exited on its own, as docker-compose's `restart:
        unless-stopped` would, and remember why it exited."""
        while not stop.wait(0.5):
            with self._worker_lock:
                worker = self.stack.worker
                if not worker.exited():
                    continue
                reason = (
                    _last_critical(worker.log)
                    or f"exit code {worker.proc and worker.proc.returncode}"
                )
                at = time.monotonic() - t0
                self.crashes.append(f"at {at:.1f}s: {reason}")
                print(f"  [{at:6.1f}s] the worker exited on its own ({reason}); restarting it")
                try:
                    self.stack.start_worker()
                except Exception as exc:
                    self.crashes.append(f"restart failed: {exc!r}")

    def _chaos(self, t0: float, window: float, stop: threading.Event) -> None:
        for fault in SCHEDULE:
            if stop.wait(max(0.0, t0 + fault.at_fraction * window - time.monotonic())):
                return
            self._act(fault.action, t0)

    def trigger_all(self, key: str) -> tuple[list[Triggered], float, float]:
        """Trigger at a steady rate while the schedule runs; (results, start, last answer)."""
        window = self.notifications / self.rate
        headers = {"Authorization": f"Bearer {key}"}
        timeout = httpx.Timeout(10.0, connect=5.0)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        with (
            httpx.Client(
                base_url=self.stack.api_url, headers=headers, timeout=timeout, limits=limits
            ) as http,
            ThreadPoolExecutor(max_workers=48, thread_name_prefix="trigger") as pool,
        ):
            t0 = time.monotonic()
            chaos = threading.Thread(target=self._chaos, args=(t0, window, self._done), daemon=True)
            chaos.start()
            threading.Thread(target=self._supervise, args=(t0, self._done), daemon=True).start()
            futures: list[Future[Triggered]] = []
            for index in range(self.notifications):
                delay = t0 + index / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(_trigger, http, index, self.run_id, t0))
            results = [future.result() for future in futures]
            last_answer = time.monotonic()
            chaos.join()  # every scheduled fault happens, even if triggering ran fast
        return results, t0, last_answer

    def rows(self) -> dict[int, Row]:
        with psycopg.connect(self.stack.postgres.url, connect_timeout=5) as conn:
            found = conn.execute(
                "SELECT id, transaction_id, notification_status::text, attempts,"
                " error_details->>'code', (error_details->>'statusCode')::int"
                " FROM notify.ent_notification WHERE enterprise_id = %s",
                (self.enterprise_id,),
            ).fetchall()
        return {
            nid: Row(tx, status, attempts, code, code_status)
            for nid, tx, status, attempts, code, code_status in found
        }

    def wait_for_quiescence(self, expected: int, since: float, timeout: float) -> float | None:
        """Seconds from `since` until every row is SENT or FAILED, or None at the timeout."""
        started = since
        last_report = time.monotonic()
        while time.monotonic() - started < timeout:
            statuses = Counter(row.status for row in self.rows().values())
            done = statuses["SENT"] + statuses["FAILED"]
            if done >= expected and done == sum(statuses.values()):
                return time.monotonic() - started
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(f"  waiting: {dict(statuses)}", flush=True)
            time.sleep(0.25)
        return None

    def observe(
        self, triggered: list[Triggered], trigger_seconds: float, quiet: float | None, window: float
    ) -> Observed:
        with httpx.Client(base_url=self.stack.emulator_url, timeout=30) as emulator:
            accepted = emulator.get("/_emulator/events").json()
            stats = emulator.get("/_emulator/stats").json()
            log = emulator.get("/_emulator/faults/log", params={"kind": "status:400"}).json()
        return Observed(
            triggered=triggered,
            rows=self.rows(),
            accepted=accepted,
            stats=stats,
            permanent={tx for entry in log for tx in entry["transactionIds"]},
            actions=self.actions,
            trigger_seconds=trigger_seconds,
            quiescence_seconds=quiet,
            window_seconds=window,
            planned_kinds=self.faults.planned_kinds(),
            planned_actions=Counter(fault.action for fault in SCHEDULE),
            worker_crashes=list(self.crashes),
        )

    def run(self, quiescence_timeout: float) -> Verdict:
        key = self.stack.create_api_key(self.enterprise_id)
        response = httpx.post(
            f"{self.stack.emulator_url}/_emulator/faults", json=self.faults.emulator_config()
        )
        response.raise_for_status()
        print(f"triggering {self.notifications} notifications at {self.rate:g}/s", flush=True)
        triggered, t0, last_answer = self.trigger_all(key)
        seconds = last_answer - t0
        answered = sum(1 for t in triggered if t.http_status == 202)
        print(f"triggered in {seconds:.1f}s; waiting for quiescence", flush=True)
        quiet = self.wait_for_quiescence(answered, last_answer, quiescence_timeout)
        window = reconciler_window()
        time.sleep(window)  # anything the reconciler would still do, it does now
        self._done.set()
        return judge(self.observe(triggered, seconds, quiet, window))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.chaos_run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="triggers per second")
    parser.add_argument(
        "--short",
        action="store_true",
        help="the short form's fault plan (rare faults at 3 %%, see plan.py)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes")
    parser.add_argument("--quiescence-timeout", type=float, default=300.0)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where logs and data go (default: a temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir even on success")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting of the stack, e.g. --set DELIVERY_MAX_ATTEMPTS=2",
    )
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xnovu-chaos-"))
    faults = SHORT_FAULTS if args.short else LONG_FAULTS
    overrides = dict(item.split("=", 1) for item in args.set)
    stack = ChaosStack(workdir, {**TIMINGS, **overrides}, worker_concurrency=args.concurrency)
    started = time.monotonic()
    try:
        print(f"chaos run: starting a stack in {workdir}", flush=True)
        stack.start()
        print(f"stack up in {time.monotonic() - started:.1f}s", flush=True)
        verdict = ChaosRun(stack, args.notifications, args.rate, faults).run(
            args.quiescence_timeout
        )
    except Exception:
        print(f"chaos run: could not complete; logs in {workdir}", flush=True)
        raise
    finally:
        stack.stop()
    print("\n".join(["", "chaos run results", *(f"  {line}" for line in verdict.lines)]))
    for problem in verdict.problems:
        print(f"  PROBLEM: {problem}")
    print(
        f"  verdict: {'PASS' if verdict.ok else 'FAIL'} "
        f"(whole run {time.monotonic() - started:.0f}s)"
    )
    if verdict.ok and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"  logs: {workdir}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
