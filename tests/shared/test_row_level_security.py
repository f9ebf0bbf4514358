"""Row-level security as a second wall: a query that forgets its enterprise filter still sees
only the current enterprise's rows, and a session confined to no enterprise sees none."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import ProgrammingError

from shared.db.models import ApiKey, Notification, NotificationTemplate, NotificationWorkflow
from shared.db.session import scope_session, session_factory, transaction
from tests.rows import insert_notification


def _notification(enterprise: uuid.UUID) -> int:
    return insert_notification(enterprise).notification_id


def test_an_unscoped_query_sees_only_the_current_enterprise(stack):
    a, b = uuid.uuid4(), uuid.uuid4()
    mine, theirs = _notification(a), _notification(b)
    with transaction(a) as session:
        # Deliberately no enterprise filter.
        ids = set(session.scalars(select(Notification.id)))
        assert mine in ids and theirs not in ids
        assert (
            session.scalar(
                select(func.count()).select_from(Notification).where(Notification.id == theirs)
            )
            == 0
        )
        # Writes cannot reach the other enterprise's row either.
        touched = session.execute(
            update(Notification).where(Notification.id == theirs).values(name="hijacked")
        )
        assert touched.rowcount == 0


def test_a_session_confined_to_no_enterprise_sees_no_rows(stack):
    _notification(uuid.uuid4())
    session = session_factory()()
    scope_session(session, None)
    try:
        for model in (Notification, NotificationTemplate, NotificationWorkflow, ApiKey):
            assert (
                session.scalar(
                    select(func.count()).select_from(model).where(model.enterprise_id.is_not(None))
                )
                == 0
            ), model.__tablename__
    finally:
        session.close()


def test_a_row_for_another_enterprise_cannot_be_inserted(stack):
    a = uuid.uuid4()
    with pytest.raises(ProgrammingError, match="row-level security"):
        insert_notification(a, row_enterprise_id=uuid.uuid4(), payload={})


def test_the_scoped_role_is_neither_owner_nor_superuser(stack):
    with transaction(uuid.uuid4()) as session:
        role = session.scalar(text("SELECT current_user"))
        flags = session.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        owner = session.scalar(
            text("SELECT tableowner FROM pg_tables WHERE tablename = 'ent_notification'")
        )
    assert role == "xnovu_app"
    assert tuple(flags) == (False, False)
    assert owner != role
