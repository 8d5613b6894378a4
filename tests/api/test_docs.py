"""Swagger UI and Redoc, with every file they load served by the API itself."""

from __future__ import annotations

import re

import httpx

from factq.api import create_app
from factq.settings import Settings
from tests.conftest import api_client

CONTENT_TYPES = {"js": "javascript", "css": "text/css", "png": "image/png"}


def references(html: str) -> list[str]:
    """What a docs page loads: its files, its icon and the OpenAPI document."""
    attributes = re.findall(r'(?:src|href|spec-url)="([^"]*)"', html)
    swagger_spec = re.findall(r"url: '([^']*)'", html)
    return attributes + swagger_spec


async def test_the_docs_pages_load_only_files_the_api_serves(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200, page
        assert response.headers["content-type"].startswith("text/html"), page
        # No other host: no CDN, no web fonts, no icon from elsewhere.
        assert not re.search(r"https?:|//", response.text), response.text
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy, page
        assert "https:" not in policy, page
        urls = references(response.text)
        assert "/openapi.json" in urls, page
        assert all(url.startswith("/") for url in urls), urls
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
            if url.startswith("/docs/assets/"):
                extension = url.rsplit(".", 1)[1]
                assert CONTENT_TYPES[extension] in asset.headers["content-type"], url
                assert asset.content, url
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200


async def test_the_docs_need_no_key_and_stay_out_of_the_openapi_document(
    settings_factory,
) -> None:
    keyed: Settings = settings_factory(api_keys="a-key-0123456789")
    async with api_client(keyed) as client:
        paths = ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js", "/openapi.json")
        for path in paths:
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/v1/jobs")).status_code == 401
        documented = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in documented if path.startswith(("/docs", "/redoc"))]


async def test_an_unknown_docs_file_is_the_usual_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/assets/nothing.js")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


async def test_behind_a_proxy_the_docs_use_its_root_path(settings: Settings) -> None:
    # Only the pages and their files: nothing here needs the lifespan's connections.
    transport = httpx.ASGITransport(app=create_app(settings), root_path="/factq")
    async with httpx.AsyncClient(transport=transport, base_url="http://factq.test") as client:
        for page in ("/factq/docs", "/factq/redoc"):
            response = await client.get(page)
            assert response.status_code == 200, page
            urls = references(response.text)
            assert "/factq/openapi.json" in urls, page
            assert all(url.startswith("/factq/") for url in urls), urls
            for url in (url for url in urls if "/docs/assets/" in url):
                assert (await client.get(url)).status_code == 200, url
        swagger = (await client.get("/factq/docs")).text
        assert "'/factq/docs/oauth2-redirect'" in swagger
