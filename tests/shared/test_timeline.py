"""The timeline's table and its append API: events in order, confined to their enterprise by
row-level security, and append-only for enterprise transactions."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from shared.db.session import transaction
from shared.notifications.timeline import (
    EXCERPT_CHARS,
    MAX_DETAIL_CHARS,
    TABLE,
    NewEvent,
    append_events,
    excerpt,
    list_events,
)
from tests.rows import insert_notification


def test_appended_events_read_back_oldest_first_in_keyset_pages(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    events = [
        NewEvent(row, "delivery.message.sent", None, {"channel": "email", "n": i}) for i in range(5)
    ]
    with transaction(enterprise) as session:
        append_events(session, enterprise, events)
    with transaction(enterprise) as session:
        first = list_events(session, enterprise, row, limit=3)
        rest = list_events(session, enterprise, row, after_id=first[-1].id, limit=10)
    kinds = [e.kind for e in [*first, *rest]]
    # The insert itself wrote `accepted` first.
    assert kinds == ["accepted"] + ["delivery.message.sent"] * 5
    assert [e.detail["n"] for e in [*first, *rest][1:]] == [0, 1, 2, 3, 4]
    stamps = [e.created_at for e in [*first, *rest]]
    assert stamps == sorted(stamps)


def test_another_enterprise_neither_reads_nor_writes_the_events(stack):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    row = insert_notification(mine).notification_id
    with transaction(theirs) as session:
        # Deliberately no enterprise filter: row-level security alone hides them.
        seen = session.execute(
            text(f"SELECT count(*) FROM {TABLE} WHERE notification_id = :id"), {"id": row}
        ).scalar_one()
        assert seen == 0
        assert list_events(session, mine, row) == []
    refused = pytest.raises(ProgrammingError, match="row-level security")
    with refused, transaction(theirs) as session:
        append_events(session, mine, [NewEvent(row, "retried")])


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET kind = 'sent' WHERE notification_id = :id",
        f"DELETE FROM {TABLE} WHERE notification_id = :id",
    ],
)
def test_enterprise_transactions_cannot_change_or_remove_events(stack, statement):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    refused = pytest.raises(ProgrammingError, match="permission denied")
    with refused, transaction(enterprise) as session:
        session.execute(text(statement), {"id": row})
    with transaction(enterprise) as session:
        assert [e.kind for e in list_events(session, enterprise, row)] == ["accepted"]


def test_a_kind_outside_the_vocabulary_format_is_refused(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    with pytest.raises(DBAPIError, match="kind_format"), transaction(enterprise) as session:
        append_events(session, enterprise, [NewEvent(row, "Sent; DROP")])


def test_details_and_excerpts_are_bounded(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    huge = {"body": "x" * (MAX_DETAIL_CHARS * 2)}
    with transaction(enterprise) as session:
        append_events(session, enterprise, [NewEvent(row, "delivery.message.failed", 1, huge)])
    with transaction(enterprise) as session:
        [_, event] = list_events(session, enterprise, row)
    assert event.detail is not None and event.detail["truncated"] is True
    assert len(event.detail["excerpt"]) < MAX_DETAIL_CHARS
    assert event.attempt == 1

    long = excerpt({"message": "y" * 5000})
    assert long is not None and len(long) == EXCERPT_CHARS and long.endswith("…")
    assert excerpt({"a": 1}) == '{"a":1}'
    assert excerpt(None) is None
