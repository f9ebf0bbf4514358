"""What a chaos run observed, and its verdict: lost, duplicated, stuck, and whether every
planned fault fired."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.plan import Action

TERMINAL = frozenset({"SENT", "FAILED"})

# How Novu refuses a trigger for good: a single trigger answered 400, or an event of a bulk
# trigger answered with its own `error` result inside the call's 201 (single triggers travel
# in deliver_batch messages, and so in bulk calls).
REFUSED_STATUSES = (400, 201)


@dataclass(frozen=True)
class Triggered:
    """One `POST /api/trigger` of the run, after the client's own retries."""

    index: int
    http_status: int | None
    notification_id: int | None
    transaction_id: str | None
    tries: int
    seconds: float  # from the first try to the final answer
    first_try_seconds: float
    error: str | None = None
    started_at: float = 0.0  # seconds after the first trigger


@dataclass(frozen=True)
class Row:
    transaction_id: str
    status: str
    attempts: int
    error_code: str | None
    error_status: int | None


@dataclass(frozen=True)
class ActionRecord:
    action: Action
    at_seconds: float
    took_seconds: float
    detail: str
    count: int = 1
    error: str | None = None


@dataclass
class Observed:
    """Everything the verdict is computed from."""

    triggered: list[Triggered]
    rows: dict[int, Row]
    accepted: list[dict[str, Any]]  # GET /_emulator/events
    stats: dict[str, Any]  # GET /_emulator/stats
    permanent: set[str]  # transactionIds answered a permanent status (fault log)
    actions: list[ActionRecord]
    trigger_seconds: float
    quiescence_seconds: float | None  # last trigger → every row SENT or FAILED
    window_seconds: float
    planned_kinds: list[str]
    planned_actions: Counter[Action] = field(default_factory=Counter)
    # Worker exits nobody planned (restarted by the harness, as a supervisor would).
    worker_crashes: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    counts: dict[str, int]
    problems: list[str]
    lines: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _sample(items: set[Any] | list[Any], limit: int = 5) -> str:
    shown = sorted(items, key=str)[:limit]
    return ", ".join(map(str, shown)) + (" …" if len(items) > limit else "")


def judge(seen: Observed) -> Verdict:
    """Compare what the API answered, what PostgreSQL holds and what Novu accepted."""
    problems: list[str] = []
    answered = [t for t in seen.triggered if t.http_status == 202 and t.notification_id]
    refused = [t for t in seen.triggered if t not in answered]
    if refused:
        problems.append(
            f"{len(refused)} triggers never got a 202, e.g. "
            + _sample([f"#{t.index}: {t.http_status} {t.error}" for t in refused])
        )
    ids = {t.notification_id for t in answered}
    rows = seen.rows
    by_status = Counter(row.status for row in rows.values())

    missing = ids - rows.keys()
    extra_rows = rows.keys() - ids
    stuck = {nid for nid, row in rows.items() if row.status not in TERMINAL}
    sent = {row.transaction_id for row in rows.values() if row.status == "SENT"}
    failed = {nid: row for nid, row in rows.items() if row.status == "FAILED"}
    tx_status = {row.transaction_id: row.status for row in rows.values()}

    accepted_tx = Counter(str(event["transactionId"]) for event in seen.accepted)
    accepted_ids = Counter(
        (event.get("payload") or {}).get("_xnovu", {}).get("notificationId")
        for event in seen.accepted
    )
    accepted = set(accepted_tx)
    repeated_tx = {tx for tx, n in accepted_tx.items() if n > 1}
    repeated_ids = {nid for nid, n in accepted_ids.items() if n > 1}
    unknown_accepted = accepted - tx_status.keys()
    sent_not_accepted = sent - accepted
    accepted_not_sent = {tx for tx in accepted if tx_status.get(tx, "SENT") != "SENT"}
    unexplained_failed = {
        nid
        for nid, row in failed.items()
        if row.transaction_id not in seen.permanent
        or row.error_code != "novu_rejected"
        or row.error_status not in REFUSED_STATUSES
    }
    permanent_not_failed = {tx for tx in seen.permanent if tx_status.get(tx) != "FAILED"}

    lost = len(missing) + len(sent_not_accepted)
    duplicated = (
        sum(accepted_tx[tx] - 1 for tx in repeated_tx)
        + sum(accepted_ids[nid] - 1 for nid in repeated_ids)
        + len(unknown_accepted)
        + len(extra_rows)
    )
    checks: list[tuple[set[Any], str]] = [
        (missing, "answered 202 but have no row"),
        (sent_not_accepted, "are SENT but Novu never accepted their transactionId"),
        (repeated_tx, "transactionIds were accepted by Novu more than once"),
        (repeated_ids, "notifications reached Novu under more than one transactionId"),
        (unknown_accepted, "transactionIds accepted by Novu belong to no notification"),
        (extra_rows, "rows exist that no trigger answered"),
        (stuck, "notifications are still PENDING or PROCESSING"),
        (accepted_not_sent, "transactionIds Novu accepted are not SENT"),
        (unexplained_failed, "notifications FAILED without a permanent fault of the plan"),
        (permanent_not_failed, "transactionIds that got a permanent 400 are not FAILED"),
    ]
    for items, what in checks:
        if items:
            problems.append(f"{len(items)} {what}: {_sample(items)}")

    faults = seen.stats.get("faults", {})
    for kind in seen.planned_kinds:
        if not faults.get(kind):
            problems.append(f"planned Novu fault {kind} never fired")
    done = Counter(record.action for record in seen.actions if record.error is None)
    for action, planned in seen.planned_actions.items():
        if done[action] != planned:
            problems.append(f"{action.value}: done {done[action]} of {planned} times")
    for record in seen.actions:
        if record.error is not None:
            problems.append(f"{record.action.value} at {record.at_seconds:.1f}s: {record.error}")
        elif record.action is Action.TERMINATE_PG and record.count == 0:
            problems.append("no worker PostgreSQL connection was there to terminate")
    if seen.quiescence_seconds is None:
        problems.append("the stack never reached quiescence")

    counts = {
        "notifications": len(seen.triggered),
        "lost": lost,
        "duplicated": duplicated,
        "stuck": len(stuck),
        "sent": by_status["SENT"],
        "failed": by_status["FAILED"],
        "accepted": len(accepted),
        "resent_deduplicated": int(seen.stats.get("duplicates", 0)),
        "worker_crashes": len(seen.worker_crashes),
    }
    return Verdict(counts, problems, _lines(seen, counts, by_status, faults))


def _slowest_during(triggered: list[Triggered], record: ActionRecord) -> float:
    """The slowest first try of the triggers sent while an action was under way."""
    start, end = record.at_seconds, record.at_seconds + record.took_seconds
    return max(
        (t.first_try_seconds for t in triggered if start <= t.started_at <= end), default=0.0
    )


def _lines(
    seen: Observed, counts: dict[str, int], by_status: Counter[str], faults: dict[str, Any]
) -> list[str]:
    first = [t.first_try_seconds for t in seen.triggered]
    tries = sum(t.tries - 1 for t in seen.triggered)
    rate = len(seen.triggered) / seen.trigger_seconds if seen.trigger_seconds else 0.0
    injected = " ".join(f"{kind}={faults.get(kind, 0)}" for kind in sorted(faults))
    actions = "; ".join(
        f"{r.action.name} at {r.at_seconds:.1f}s ({r.detail}, {r.took_seconds:.1f}s; "
        f"slowest trigger meanwhile {_slowest_during(seen.triggered, r) * 1000:.0f} ms)"
        + (f" FAILED: {r.error}" if r.error else "")
        for r in seen.actions
    )
    quiet = f"{seen.quiescence_seconds:.1f}s" if seen.quiescence_seconds is not None else "never"
    statuses = " ".join(f"{status}={n}" for status, n in sorted(by_status.items()))
    return [
        f"notifications: {counts['notifications']} triggered over HTTP in "
        f"{seen.trigger_seconds:.1f}s ({rate:.1f}/s); API: first-try latency p50 "
        f"{_percentile(first, 0.5) * 1000:.0f} ms, p99 {_percentile(first, 0.99) * 1000:.0f} ms, "
        f"max {max(first, default=0) * 1000:.0f} ms; client retries {tries}",
        f"novu faults injected: {injected}",
        f"process faults: {actions}",
        f"novu: {counts['accepted']} transactionIds accepted, {seen.stats.get('requests', 0)} "
        f"requests, {counts['resent_deduplicated']} repeats dropped by transactionId",
        f"rows: {statuses}; permanent 400s planned for {len(seen.permanent)} transactionIds",
        f"time from last trigger to quiescence: {quiet} "
        f"(then a reconciler window of {seen.window_seconds:.0f}s)",
        f"worker exits nobody planned: {len(seen.worker_crashes)}"
        + "".join(f"; {crash}" for crash in seen.worker_crashes)
        + (" (restarted, as docker-compose's restart policy would)" if seen.worker_crashes else ""),
        f"lost={counts['lost']} duplicated={counts['duplicated']} stuck={counts['stuck']}",
    ]
