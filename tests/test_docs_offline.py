"""/docs works offline: the page and every file it loads come from this server (issue 16.4)."""

from __future__ import annotations

import re

from tests.conftest import Api

_LINKS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


async def test_docs_page_loads_nothing_from_elsewhere(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200 and "SwaggerUIBundle" in r.text
    links = [a or b for a, b in _LINKS.findall(r.text)]
    assert any(link.endswith("swagger-ui-bundle.js") for link in links), links
    assert any(link.endswith("swagger-ui.css") for link in links), links
    assert "//" not in "".join(links), f"an external URL on /docs: {links}"
    for link in links:
        asset = await api.client.get(link)
        assert asset.status_code == 200, link
        assert len(asset.content) > 50, link
    bundle = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert (await api.client.get("/redoc")).status_code == 404  # CDN-only; switched off
