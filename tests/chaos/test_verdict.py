"""The chaos run's verdict fails on every kind of damage it claims to detect."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from tests.chaos.plan import LONG_FAULTS, SCHEDULE, Action
from tests.chaos.verdict import ActionRecord, Observed, Row, Triggered, judge


def _event(tx: str, notification_id: int) -> dict[str, Any]:
    return {"transactionId": tx, "payload": {"_xnovu": {"notificationId": notification_id}}}


def observed(**changes: Any) -> Observed:
    """Three notifications: two SENT, one FAILED by a planned permanent 400; every fault fired."""
    base = Observed(
        triggered=[Triggered(i, 202, i, f"tx-{i}", 1, 0.01, 0.01) for i in (1, 2, 3)],
        rows={
            1: Row("tx-1", "SENT", 1, None, None),
            2: Row("tx-2", "FAILED", 1, "novu_rejected", 400),
            3: Row("tx-3", "SENT", 2, None, None),
        },
        accepted=[_event("tx-1", 1), _event("tx-3", 3)],
        stats={"faults": dict.fromkeys(LONG_FAULTS.planned_kinds(), 1), "duplicates": 1},
        permanent={"tx-2"},
        actions=[ActionRecord(fault.action, 1.0, 0.1, "done") for fault in SCHEDULE],
        trigger_seconds=1.0,
        quiescence_seconds=0.5,
        window_seconds=12.0,
        planned_kinds=LONG_FAULTS.planned_kinds(),
        planned_actions=Counter(fault.action for fault in SCHEDULE),
    )
    return dataclasses.replace(base, **changes)


def test_a_clean_run_passes() -> None:
    verdict = judge(observed())
    assert verdict.ok, verdict.problems
    assert (verdict.counts["lost"], verdict.counts["duplicated"], verdict.counts["stuck"]) == (
        0,
        0,
        0,
    )


def test_a_row_left_pending_is_stuck() -> None:
    rows = {**observed().rows, 3: Row("tx-3", "PENDING", 2, None, None)}
    verdict = judge(observed(rows=rows, accepted=[_event("tx-1", 1)]))
    assert verdict.counts["stuck"] == 1 and not verdict.ok


def test_sent_but_never_accepted_is_lost() -> None:
    verdict = judge(observed(accepted=[_event("tx-1", 1)]))
    assert verdict.counts["lost"] == 1 and not verdict.ok


def test_a_missing_row_is_lost() -> None:
    rows = {nid: row for nid, row in observed().rows.items() if nid != 3}
    verdict = judge(observed(rows=rows, accepted=[_event("tx-1", 1)]))
    assert verdict.counts["lost"] == 1 and not verdict.ok


def test_one_notification_accepted_under_two_transaction_ids_is_duplicated() -> None:
    accepted = [*observed().accepted, _event("tx-other", 3)]
    verdict = judge(observed(accepted=accepted))
    assert verdict.counts["duplicated"] >= 1 and not verdict.ok


def test_a_failure_the_plan_did_not_cause_is_a_problem() -> None:
    rows = {**observed().rows, 2: Row("tx-2", "FAILED", 25, "attempts_exhausted", 500)}
    verdict = judge(observed(rows=rows, permanent=set()))
    assert not verdict.ok
    assert any("without a permanent fault" in problem for problem in verdict.problems)


def test_a_planned_fault_that_never_fired_fails_the_run() -> None:
    stats = {"faults": {**observed().stats["faults"], "dropAfterAccept": 0}}
    verdict = judge(observed(stats=stats))
    assert any("dropAfterAccept never fired" in problem for problem in verdict.problems)


def test_a_process_fault_that_did_not_happen_fails_the_run() -> None:
    actions = [record for record in observed().actions if record.action is not Action.RESTART_REDIS]
    verdict = judge(observed(actions=actions))
    assert not verdict.ok
