"""/docs renders in a real Chromium with every request to anywhere but the server refused, as
on a machine without internet (issue 16.4), and shows the Authorize button the bearer scheme
gives (issue 16.5)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_console_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.e2e.server import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data").start()
    yield process
    process.stop()


def test_docs_render_offline(server: ServerProcess, tmp_path: Path) -> None:
    refused: list[str] = []

    def only_the_server(route: Any) -> None:
        url = route.request.url
        if url.startswith(server.url + "/"):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20_000)
            context.route("**/*", only_the_server)
            page.goto(server.url + "/docs")
            page.wait_for_selector(".swagger-ui .opblock-summary-path")
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/v1/addressbook" in text for text in paths), paths
            assert page.locator("button.authorize").count() == 1
            assert page.locator(".swagger-ui .errors-wrapper").count() == 0
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "docs.png"))
        finally:
            context.close()
    assert refused == []
