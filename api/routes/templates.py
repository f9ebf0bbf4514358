"""Managing the caller's enterprise's templates, and previewing them with sample variables.

A preview renders on one of the API process's threads, whose CPU the event loop and every
other request share: eight previews of a template that loops to its timeout once made another
enterprise's triggers take 1.2 s instead of 13 ms. So at most PREVIEW_CONCURRENCY previews run
at once in a process, PREVIEW_CONCURRENCY_PER_ENTERPRISE of them one enterprise's; beyond
that a preview is refused at once, 429 `too_many_previews` with Retry-After
(docs/architecture.md, "Rendering").
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.deps import EnterpriseDep, PrincipalDep, SessionDep
from api.errors import ApiError, not_found
from api.schemas.templates import (
    PreviewRequest,
    PreviewResponse,
    TemplateCreate,
    TemplateList,
    TemplateRead,
    TemplateUpdate,
    locales_column,
)
from shared.db.enums import ChannelType
from shared.payloads import json_size
from shared.settings import get_settings
from shared.templates import (
    RenderError,
    RenderLimitExceeded,
    RenderMemoryExceeded,
    TemplateSecurityError,
    get_template_renderer,
)
from shared.templates.cache import TemplateRecord, choose_variant
from shared.templates.service import (
    InvalidTemplate,
    NewTemplate,
    TemplateKeyConflict,
    TemplateService,
)

router = APIRouter(prefix="/api/templates", tags=["templates"])

# Ids are BIGINT: anything outside that range cannot exist and is a 422, not a database error.
TemplateId = Annotated[int, Path(ge=1, le=2**63 - 1)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "No such template in the caller's enterprise"},
    409: {"description": "The enterprise already has a template with this key"},
    422: {"description": "Invalid body, template syntax error (with its line), render error"},
}


class PreviewSlots:
    """The previews running in this process, in all and per enterprise."""

    # A preview takes milliseconds, or its render timeout: a second is a fair time to wait.
    RETRY_AFTER_SECONDS = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, int] = {}
        self._total = 0

    @contextmanager
    def slot(self, enterprise_id: uuid.UUID) -> Iterator[None]:
        """Hold a slot while the block runs; 429 when the process's or the enterprise's
        previews are all taken."""
        settings = get_settings()
        with self._lock:
            mine = self._running.get(enterprise_id, 0)
            if (
                mine >= settings.preview_concurrency_per_enterprise
                or self._total >= settings.preview_concurrency
            ):
                whose = "this enterprise's" if mine else "this server's"
                raise ApiError(
                    429,
                    "too_many_previews",
                    f"{whose} previews are all running; try again shortly",
                    headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)},
                )
            self._running[enterprise_id] = mine + 1
            self._total += 1
        try:
            yield
        finally:
            with self._lock:
                self._total -= 1
                left = self._running.pop(enterprise_id) - 1
                if left:
                    self._running[enterprise_id] = left


# Shared with the delivery log page, whose content previews are bounded as these are.
preview_slots = PreviewSlots()


@contextmanager
def _edit_errors() -> Iterator[None]:
    """Turn the service's rule violations into API errors."""
    try:
        yield
    except TemplateKeyConflict as exc:
        raise ApiError(409, "duplicate_template_key", str(exc)) from exc
    except InvalidTemplate as exc:
        if exc.syntax:
            raise ApiError(
                422, "template_syntax_error", "the template does not compile", exc.errors
            ) from exc
        raise ApiError(422, "validation_error", "the template is invalid", exc.errors) from exc


@router.get("", response_model=TemplateList, responses=ERRORS)
def list_templates(
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    channel_type: ChannelType | None = None,
    include_deactivated: bool = False,
) -> TemplateList:
    """The enterprise's templates in id order, optionally of one channel."""
    rows = TemplateService(session).list_templates(
        enterprise_id, channel_type=channel_type, include_deactivated=include_deactivated
    )
    return TemplateList(items=[TemplateRead.of(row) for row in rows])


@router.post("", status_code=201, response_model=TemplateRead, responses=ERRORS)
def create_template(
    body: TemplateCreate, session: SessionDep, enterprise_id: EnterpriseDep, principal: PrincipalDep
) -> TemplateRead:
    """Create a DRAFT template; its sources must compile."""
    with _edit_errors():
        row = TemplateService(session).create_template(
            enterprise_id,
            NewTemplate(**{**body.model_dump(), "locales": locales_column(body.locales)}),
            created_by=principal.actor,
        )
    session.commit()
    get_template_renderer().invalidate_template(enterprise_id, row.id)
    return TemplateRead.of(row)


@router.get("/{template_id}", response_model=TemplateRead, responses=ERRORS)
def get_template(
    template_id: TemplateId, session: SessionDep, enterprise_id: EnterpriseDep
) -> TemplateRead:
    """One template; another enterprise's id answers 404."""
    row = TemplateService(session).get_template(template_id, enterprise_id)
    if row is None:
        raise not_found("template")
    return TemplateRead.of(row)


@router.patch("/{template_id}", response_model=TemplateRead, responses=ERRORS)
def update_template(
    template_id: TemplateId,
    body: TemplateUpdate,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    principal: PrincipalDep,
) -> TemplateRead:
    """Change the fields given; the result must still compile and follow its channel's rules."""
    with _edit_errors():
        row = TemplateService(session).update_template(
            template_id, enterprise_id, body.changes(), updated_by=principal.actor
        )
    if row is None:
        raise not_found("template")
    session.commit()
    get_template_renderer().invalidate_template(enterprise_id, row.id)
    return TemplateRead.of(row)


@router.post("/{template_id}/publish", response_model=TemplateRead, responses=ERRORS)
def publish_template(
    template_id: TemplateId,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    principal: PrincipalDep,
) -> TemplateRead:
    """Mark the template PUBLISH (again if it already was)."""
    with _edit_errors():
        row = TemplateService(session).publish_template(
            template_id, enterprise_id, updated_by=principal.actor
        )
    if row is None:
        raise not_found("template")
    session.commit()
    get_template_renderer().invalidate_template(enterprise_id, row.id)
    return TemplateRead.of(row)


@router.post(
    "/{template_id}/preview",
    response_model=PreviewResponse,
    response_model_exclude_none=True,
    responses={
        **ERRORS,
        413: {"description": "Variables over the payload limit"},
        429: {"description": "Too many previews running (Retry-After)"},
    },
)
def preview_template(
    template_id: TemplateId,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    body: PreviewRequest | None = None,
) -> PreviewResponse:
    """Render the saved template with sample variables (over its defaults), exactly as a
    notification would (in its variant for `locale`), drafts too; a template error answers 422
    with the reason."""
    variables = body.variables if body is not None else {}
    locale = body.locale if body is not None else None
    limit = get_settings().max_payload_bytes
    if json_size(variables) > limit:
        raise ApiError(413, "payload_too_large", f"variables exceed {limit} bytes")
    row = TemplateService(session).get_template(template_id, enterprise_id)
    if row is None:
        raise not_found("template")
    try:
        with preview_slots.slot(enterprise_id):
            record = TemplateRecord.of(row)
            subject, source = record.sources(choose_variant(record.variants, locale))
            rendered = get_template_renderer().render_source(
                row.channel_type,
                subject,
                source,
                variables,
                enterprise_id=enterprise_id,
                variables_description=row.variables_description,
                template_key=row.template_key,
                strict=record.strict,
                locale=locale,
                drafts=True,
            )
    except RenderMemoryExceeded as exc:
        raise ApiError(422, "render_memory_exceeded", str(exc)) from exc
    except RenderLimitExceeded as exc:
        raise ApiError(422, "render_limit_exceeded", str(exc)) from exc
    except TemplateSecurityError as exc:
        raise ApiError(422, "template_security_error", str(exc)) from exc
    except RenderError as exc:
        raise ApiError(422, "render_error", str(exc)) from exc
    return PreviewResponse(subject=rendered.subject, body=rendered.body)
