"""TemplateService: reads and edits of notification templates, always scoped to one enterprise.

Services take a session and never commit: the request or task edge owns the transaction. Every
edit bumps the enterprise's registry generation in the same transaction, so every process drops
its cached copies within REGISTRY_CHECK_INTERVAL_SECONDS of the commit; the edge also drops this
process's copy right after committing (`TemplateRenderer.invalidate_template`).

Rows whose `publish_status` is DELETED are soft-deleted: the service neither shows nor edits
them (their key stays taken). There is no versioning: an edit is what the next render uses;
`publish` marks a checked template as ready (PUBLISH), and only a PUBLISH template is used
when a notification is sent (a draft is previewed only).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.enums import ChannelType, PublishStatus
from shared.db.models import NotificationTemplate
from shared.generation import bump_generation
from shared.templates.cache import MAX_TEMPLATE_ID
from shared.templates.renderer import validate_template_source

EDITABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "template_key",
        "channel_type",
        "subject_template",
        "body_template",
        "variables_description",
        "undefined_mode",
        "locales",
    }
)
NOT_NULL_FIELDS = frozenset({"template_key", "channel_type", "body_template", "undefined_mode"})
# Changing any of these re-checks the template's sources and channel rules.
CHECKED_FIELDS = frozenset(
    {"channel_type", "subject_template", "body_template", "variables_description", "locales"}
)
KEY_CONSTRAINT = "uq_ent_notification_template_enterprise_id_template_key"


@dataclass(frozen=True, slots=True)
class NewTemplate:
    template_key: str
    channel_type: ChannelType
    body_template: str
    name: str | None = None
    description: str | None = None
    subject_template: str | None = None
    variables_description: dict[str, Any] | None = None
    undefined_mode: str = "strict"
    locales: dict[str, Any] | None = None


class TemplateKeyConflict(Exception):
    """The enterprise already has a template with this key."""

    def __init__(self, template_key: str) -> None:
        super().__init__(f"a template with key {template_key!r} already exists")
        self.template_key = template_key


class InvalidTemplate(Exception):
    """The template breaks a rule; `syntax` tells a source that does not compile from the rest.
    Each error is `{field, message}`, with `line` for syntax errors."""

    def __init__(self, errors: list[dict[str, Any]], *, syntax: bool) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors
        self.syntax = syntax


def check_template(
    channel_type: ChannelType,
    subject_template: str | None,
    body_template: str,
    variables_description: Any = None,
    locales: Mapping[str, Any] | None = None,
) -> None:
    """Raise InvalidTemplate unless the template, and each of its locale variants, can be
    rendered by its channel's rules."""
    sources = [("", subject_template, body_template)]
    for tag, variant in (locales or {}).items():
        sources.append(
            (f"locales.{tag}.", variant.get("subject_template"), variant["body_template"])
        )
    problems = []
    for prefix, subject, body in sources:
        if not body or not body.strip():
            problems.append(
                {"field": f"{prefix}body_template", "message": "the body cannot be empty"}
            )
        if channel_type is ChannelType.EMAIL and not (subject or "").strip():
            problems.append(
                {
                    "field": f"{prefix}subject_template",
                    "message": "an EMAIL template needs a subject",
                }
            )
    if variables_description is not None and not isinstance(variables_description, Mapping):
        problems.append(
            {"field": "variables_description", "message": "must be an object keyed by variable"}
        )
    if problems:
        raise InvalidTemplate(problems, syntax=False)
    syntax_errors = []
    for prefix, subject, body in sources:
        syntax_errors += [
            {**error, "field": prefix + error["field"]}
            for error in validate_template_source(subject, body)
        ]
    if syntax_errors:
        raise InvalidTemplate(syntax_errors, syntax=True)


class TemplateService:
    """Enterprise-scoped reads and writes of `ent_notification_template`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _scope(enterprise_id: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
        """This enterprise's rows that are not soft-deleted."""
        return (
            NotificationTemplate.enterprise_id == enterprise_id,
            NotificationTemplate.publish_status != PublishStatus.DELETED,
        )

    def list_templates(
        self,
        enterprise_id: uuid.UUID,
        *,
        channel_type: ChannelType | None = None,
        include_deactivated: bool = False,
    ) -> Sequence[NotificationTemplate]:
        """The enterprise's templates in id order, optionally of one channel."""
        stmt = (
            select(NotificationTemplate)
            .where(*self._scope(enterprise_id))
            .order_by(NotificationTemplate.id)
        )
        if channel_type is not None:
            stmt = stmt.where(NotificationTemplate.channel_type == channel_type)
        if not include_deactivated:
            stmt = stmt.where(NotificationTemplate.deactivated.is_(False))
        return self.session.scalars(stmt).all()

    def get_template(
        self, template_id: int, enterprise_id: uuid.UUID, *, for_update: bool = False
    ) -> NotificationTemplate | None:
        """One template of this enterprise, or None (another enterprise's id is None too)."""
        if not 1 <= template_id <= MAX_TEMPLATE_ID:
            return None
        stmt = (
            select(NotificationTemplate)
            .where(*self._scope(enterprise_id))
            .where(NotificationTemplate.id == template_id)
        )
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def create_template(
        self, enterprise_id: uuid.UUID, data: NewTemplate, *, created_by: str | None = None
    ) -> NotificationTemplate:
        """Check and insert a DRAFT template; raises InvalidTemplate or TemplateKeyConflict."""
        check_template(
            data.channel_type,
            data.subject_template,
            data.body_template,
            data.variables_description,
            data.locales,
        )
        row = NotificationTemplate(
            enterprise_id=enterprise_id,
            template_key=data.template_key,
            channel_type=data.channel_type,
            name=data.name,
            description=data.description,
            subject_template=data.subject_template,
            body_template=data.body_template,
            variables_description=data.variables_description,
            undefined_mode=data.undefined_mode,
            locales=data.locales,
            publish_status=PublishStatus.DRAFT,
            created_by=created_by,
            updated_by=created_by,
        )
        self._flush(row, data.template_key)
        bump_generation(self.session, enterprise_id)
        self.session.refresh(row)
        return row

    def update_template(
        self,
        template_id: int,
        enterprise_id: uuid.UUID,
        changes: Mapping[str, Any],
        *,
        updated_by: str | None = None,
    ) -> NotificationTemplate | None:
        """Apply `changes` (column → value) to a template; None when there is no such template."""
        unknown = set(changes) - EDITABLE_FIELDS
        if unknown:
            raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
        nulls = [name for name in NOT_NULL_FIELDS if name in changes and changes[name] is None]
        if nulls:
            errors = [{"field": name, "message": "cannot be null"} for name in sorted(nulls)]
            raise InvalidTemplate(errors, syntax=False)
        row = self.get_template(template_id, enterprise_id, for_update=True)
        if row is None or not changes:
            return row
        if CHECKED_FIELDS & set(changes):
            check_template(
                changes.get("channel_type", row.channel_type),
                changes.get("subject_template", row.subject_template),
                changes.get("body_template", row.body_template),
                changes.get("variables_description", row.variables_description),
                changes.get("locales", row.locales),
            )
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_by = updated_by
        self._flush(row, row.template_key)
        bump_generation(self.session, enterprise_id)
        self.session.refresh(row)
        return row

    def publish_template(
        self, template_id: int, enterprise_id: uuid.UUID, *, updated_by: str | None = None
    ) -> NotificationTemplate | None:
        """Check the template again and mark it PUBLISH; None when there is no such template."""
        row = self.get_template(template_id, enterprise_id, for_update=True)
        if row is None:
            return None
        check_template(
            row.channel_type,
            row.subject_template,
            row.body_template,
            row.variables_description,
            row.locales,
        )
        row.publish_status = PublishStatus.PUBLISH
        row.updated_by = updated_by
        self.session.flush()
        bump_generation(self.session, enterprise_id)
        self.session.refresh(row)
        return row

    def _flush(self, row: NotificationTemplate, template_key: str) -> None:
        # A savepoint, so a duplicate key leaves the caller's transaction usable.
        try:
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError as exc:
            constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
            if constraint == KEY_CONSTRAINT:
                raise TemplateKeyConflict(template_key) from exc
            raise
