"""Rendering the delivery log's pages: one Jinja2 environment (autoescaped: tenant data is
hostile), the headers every page carries, and the bounded form reader."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.errors import ApiError

HERE = Path(__file__).resolve().parent
# Forms hold a key, an enterprise id and a token: a few hundred bytes.
MAX_FORM_BYTES = 8192
# Nothing runs on these pages and nothing is loaded from elsewhere; styles come from our one
# stylesheet. A stored payload that gets past escaping still cannot run script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: dt.datetime | None) -> str:
    """A time as UTC to the second, '—' for none."""
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["when"] = _when
environment.filters["as_json"] = _as_json


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page from templates/, with the security headers."""
    html = environment.get_template(name).render({"request": request, **context})
    return HTMLResponse(html, status_code, headers={**SECURITY_HEADERS, **(headers or {})})


def error_page(
    request: Request, status_code: int, title: str, message: str, *, ui: Any = None
) -> HTMLResponse:
    """An HTML error page (404, 403, ...); `ui` is the session (api/ui/auth.py) if any."""
    return render(
        request,
        "error.html",
        {"title": title, "message": message, "ui": ui, "csrf": ui.csrf if ui else None},
        status_code=status_code,
    )


def redirect(url: str) -> RedirectResponse:
    """303 See Other: after a form, the browser GETs the page."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of a repeated one); 413/415 as JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(
            415, "unsupported_media_type", "expected an application/x-www-form-urlencoded form"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "payload_too_large", f"a form is at most {MAX_FORM_BYTES} bytes")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
    except ValueError as exc:  # not UTF-8 (UnicodeDecodeError), or too many fields
        raise ApiError(400, "bad_request", f"the form cannot be read: {exc}") from exc


def static_file(name: str) -> Response:
    """One of static/'s files (only the stylesheet today), cacheable for an hour."""
    css = (HERE / "static" / name).read_bytes()
    return Response(
        css,
        media_type="text/css",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"},
    )
