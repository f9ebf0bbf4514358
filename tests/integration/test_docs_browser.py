"""`/docs` and `/redoc` render in a real headless Chromium with every request to anywhere but
the API refused, as on a machine without internet: Swagger UI lists the operations and ReDoc
its sections (api/docs.py). The screenshots are kept beside the stack's logs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import api_process
from tests.integration.test_ui_browser import chromium  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.integration


def _offline_page(browser: Any, api: str) -> tuple[Any, list[str]]:
    page = browser.new_page()
    refused: list[str] = []

    def only_the_api(route: Any) -> None:
        if route.request.url.startswith(api):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_api)
    return page, refused


def test_the_docs_render_offline(stack, chromium):  # noqa: F811
    with api_process(stack, "docs-api") as api:
        page, refused = _offline_page(chromium, api)
        page.goto(f"{api}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        operations = page.locator(".opblock").count()
        text = page.inner_text("body")
        page.screenshot(path=str(stack.tmp / "docs-swagger.png"), full_page=True)
        assert operations >= 25, operations
        for path in ("/api/trigger", "/api/notifications/{notification_id}/events"):
            assert path in text
        assert refused == [], refused  # Swagger UI fetched nothing from elsewhere

        page.goto(f"{api}/redoc")
        page.wait_for_selector("[data-section-id]", timeout=30_000)
        sections = page.locator("[data-section-id]").count()
        page.screenshot(path=str(stack.tmp / "docs-redoc.png"))
        assert sections >= 25, sections
        # ReDoc's bundle still asks Redocly's CDN for the logo of its "API docs by Redocly"
        # badge: refused here, it renders without it; nothing else is fetched from elsewhere.
        assert [url for url in refused if "cdn.redoc.ly" not in url] == [], refused
        page.close()
    assert (stack.tmp / "docs-swagger.png").stat().st_size > 10_000
