"""The delivery log's pages: the list of notifications, one notification, and its cancel and
retry forms.

Every page reads through the API's own routes and services in the request's session, scoped
to the session's enterprise (scope_session, as api/deps.py scopes an API request), so a page
sees exactly what the API shows that enterprise's key, and another enterprise's notification
is a 404 page. Cancel and retry are the API's (api/routes/notifications.py), answered by a
redirect back with a flash message.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.deps import SessionDep
from api.errors import ApiError
from api.routes import notifications as api_notifications
from api.ui import views
from api.ui.auth import LOGIN, UiSession, UiSessionDep, csrf_refused
from api.ui.pages import error_page, read_form, redirect, render, static_file
from shared.db.enums import NotificationStatus
from shared.db.session import scope_session

router = APIRouter(prefix="/ui", include_in_schema=False)

NotificationId = Annotated[int, Path(ge=1, le=2**63 - 1)]
PAGE_SIZE = 50
STATUSES = [status.value for status in NotificationStatus]


def _not_found(request: Request, ui: UiSession) -> Response:
    return error_page(
        request,
        404,
        "Not found",
        "No such notification in this enterprise.",
        ui=ui,
    )


@router.get("/static/ui.css")
def stylesheet() -> Response:
    """The pages' one stylesheet."""
    return static_file("ui.css")


@router.get("/notifications")
def notification_list(
    request: Request,
    session: SessionDep,
    ui: UiSessionDep,
    cursor: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """The enterprise's notifications, newest first, filtered (status, workflow, tag,
    transactionId, recipient, batchId, created range), in keyset pages."""
    if ui is None:
        return redirect(LOGIN)
    # The form shows what was typed; the query runs on the parsed filters.
    typed = {name: request.query_params.get(name, "")[:300] for name in views.FILTER_NAMES}
    context = {"ui": ui, "csrf": ui.csrf, "filters": typed, "statuses": STATUSES}
    filters, problem = views.list_filters(typed)
    if filters is None:
        return render(
            request,
            "list.html",
            {**context, "error": problem, "rows": [], "next_url": None},
            status_code=400,
        )
    scope_session(session, ui.enterprise_id)
    try:
        page = api_notifications.list_notifications(
            session=session,
            enterprise_id=ui.enterprise_id,
            status=filters.status,
            workflowId=filters.workflow,
            tag=[filters.tag] if filters.tag else None,
            transactionId=filters.transactionId,
            recipient=filters.recipient,
            batchId=filters.batchId,
            createdAfter=filters.createdAfter,
            createdBefore=filters.createdBefore,
            limit=PAGE_SIZE,
            cursor=cursor or None,
        )
    except ApiError as exc:  # a cursor this API did not issue, an inverted range
        return render(
            request,
            "list.html",
            {**context, "error": exc.message, "rows": [], "next_url": None},
            status_code=exc.status_code,
        )
    next_url = None
    if page.nextCursor:
        kept = {name: value for name, value in typed.items() if value}
        next_url = "/ui/notifications?" + urlencode({**kept, "cursor": page.nextCursor})
    rows = [(read, views.recipient_labels(read)) for read in page.items]
    return render(
        request, "list.html", {**context, "error": None, "rows": rows, "next_url": next_url}
    )


@router.get("/notifications/{notification_id}")
def notification_page(
    notification_id: NotificationId,
    request: Request,
    session: SessionDep,
    ui: UiSessionDep,
    flash: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    """One notification: its fields, error, content, and what happened to it."""
    if ui is None:
        return redirect(LOGIN)
    scope_session(session, ui.enterprise_id)
    try:
        read = api_notifications.get_notification(notification_id, session, ui.enterprise_id)
    except ApiError as exc:
        if exc.status_code == 404:
            return _not_found(request, ui)
        raise
    return render(
        request,
        "notification.html",
        {
            "ui": ui,
            "csrf": ui.csrf,
            "n": read,
            "recipients": views.recipient_labels(read),
            "flash": views.flash(flash),
            "content": views.content_preview(read, ui.enterprise_id),
            **views.history(session, read),
            **views.page_context(read),
        },
    )


@router.post("/notifications/{notification_id}/cancel")
async def cancel(
    notification_id: NotificationId, request: Request, session: SessionDep, ui: UiSessionDep
) -> Response:
    """The API's cancel, then back to the page with what it did."""
    return await _act(notification_id, request, session, ui, cancel=True)


@router.post("/notifications/{notification_id}/retry")
async def retry(
    notification_id: NotificationId, request: Request, session: SessionDep, ui: UiSessionDep
) -> Response:
    """The API's retry (FAILED → PENDING), then back to the page with what it did."""
    return await _act(notification_id, request, session, ui, cancel=False)


async def _act(
    notification_id: int,
    request: Request,
    session: SessionDep,
    ui: UiSession | None,
    *,
    cancel: bool,
) -> Response:
    form = await read_form(request)
    if ui is None:
        return redirect(LOGIN)
    if not ui.form_ok(form):
        return csrf_refused(request, ui)
    scope_session(session, ui.enterprise_id)

    def act() -> str:
        if cancel:
            api_notifications.cancel_notification(notification_id, session, ui.enterprise_id, None)
            return "retracted"
        api_notifications.retry_notification(notification_id, session, ui.enterprise_id)
        return "retried"

    try:
        done = await run_in_threadpool(act)
    except ApiError as exc:
        if exc.status_code == 404:
            return _not_found(request, ui)
        done = "too_many_requests" if exc.status_code == 429 else exc.code
    return redirect(f"/ui/notifications/{notification_id}?{urlencode({'flash': done})}")
