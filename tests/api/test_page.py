"""The web page's files, served from the package (the browser tests drive the page itself)."""

from __future__ import annotations

import re

import httpx


async def test_the_page_is_html_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "/" not in (await client.get("/openapi.json")).json()["paths"]


async def test_everything_the_page_loads_comes_from_the_api_itself(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/")).text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls, "the page should load its script and style"
    assert all(url.startswith(("/", "#")) for url in urls), urls
    types = {"js": "javascript", "css": "text/css", "svg": "image/svg+xml"}
    for url in (url for url in urls if url.startswith("/static/")):
        response = await client.get(url)
        assert response.status_code == 200, url
        assert types[url.rsplit(".", 1)[1]] in response.headers["content-type"], url
        assert response.headers["cache-control"] == "no-cache"
        # The only absolute URL allowed is SVG's namespace, which is never fetched.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", response.text), url


async def test_an_unknown_static_file_is_the_usual_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/nope.js")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
