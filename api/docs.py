"""The API's documentation pages, served without the internet.

FastAPI's own `/docs` and `/redoc` load Swagger UI and ReDoc from a CDN, so on a machine
without internet they were blank pages. The `fastapi-offline` package ships both bundles
(and a favicon); they are served from DOCS_ASSETS and the pages are FastAPI's own, pointed at
them. One thing stays outside: ReDoc's bundle asks Redocly's CDN for the small logo of its
"API docs by Redocly" badge; offline the badge shows without it, and the page is whole
(tests/integration/test_docs_browser.py).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS_ASSETS = "/docs-assets"


def install_offline_docs(app: FastAPI) -> None:
    """Serve `/docs` (Swagger UI) and `/redoc` from the bundles in the fastapi-offline
    package. The app must be built with docs_url=None and redoc_url=None."""
    assert app.openapi_url is not None
    openapi_url, oauth2_redirect = app.openapi_url, "/docs/oauth2-redirect"
    assets = str(files("fastapi_offline") / "static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
