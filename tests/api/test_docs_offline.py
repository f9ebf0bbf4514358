"""`/docs` and `/redoc` need nothing from the internet: every script, style sheet and icon
they load is served by the API itself (api/docs.py)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_what_the_api_serves(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    loaded = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", response.text)
    loaded += re.findall(r"""url:\s*["']([^"']+)""", response.text)  # Swagger UI's spec URL
    assert loaded and all(url.startswith("/") for url in loaded), loaded
    assert "cdn" not in response.text and "googleapis" not in response.text
    for url in loaded:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url


def test_the_assets_are_the_bundles():
    from starlette.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app()) as client:
        script = client.get("/docs-assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and "SwaggerUIBundle" in script.text
        assert client.get("/docs-assets/redoc.standalone.js").status_code == 200
        assert client.get("/docs-assets/../app.py").status_code == 404
        assert client.get("/docs/oauth2-redirect").status_code == 200
