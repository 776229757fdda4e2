"""The console's push-outbox page, a user's full page and the header at phone width, in a
real Chromium against a real server (issue 16.6). Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from tests.browser.test_console_browser import (  # noqa: F401 (fixtures)
    Api,
    api,
    page,
    playwright,
    pytestmark,
    server,
    shot,
    sign_in,
)
from tests.e2e.server import ServerProcess


def add_failed_delivery(process: ServerProcess, user_id: int, error: str) -> None:
    """A webhook delivery that failed for good, written as the push worker leaves one."""
    engine = sa.create_engine(f"sqlite:///{process.data_dir / 'contactsync.db'}")
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO push_outbox (user_id, seq, state, attempts, next_attempt_at, "
                "last_error, created_at, updated_at) VALUES (:u, 1, 'failed', 8, :n, :e, :n, :n)"
            ),
            {"u": user_id, "n": now, "e": error},
        )
    engine.dispose()


def test_outbox_user_page_and_phone_width(page: Any, server: ServerProcess, api: Api) -> None:  # noqa: F811
    dee = api.user("+14155550161", "Dee Pages")
    eve = api.user("+14155550162", "Eve Pages")
    headers = api.token(dee["user_id"])
    r = api.client.post(
        "/v1/addressbook",
        json={
            "contacts": [
                {"phone": "+14155550162", "name": "Eve"},
                {"phone": "+14155550163", "name": "Frank (not registered)"},
            ]
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    dm = api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [eve["user_id"]]}, headers=headers
    )
    api.client.post(
        f"/v1/conversations/{dm.json()['id']}/messages",
        json={"body": "hello", "client_msg_id": "m1"},
        headers=headers,
    )
    add_failed_delivery(server, dee["user_id"], "HTTP 502 from https://push.example/hook")

    sign_in(page, server)
    page.click("nav >> text=Push outbox")
    assert page.url.endswith("/console/outbox")
    table = page.inner_text("#outbox")
    assert "HTTP 502 from https://push.example/hook" in table
    shot(page, "outbox")
    page.locator("#outbox button", has_text="Retry").first.click()
    page.wait_for_load_state()
    assert "due again now" in page.inner_text("[role=status]")
    assert "HTTP 502" not in page.content()
    page.click("#outbox-states >> text=pending")
    assert "HTTP 502 from https://push.example/hook" in page.inner_text("#outbox")

    page.goto(f"{server.url}/console/users/{dee['user_id']}")
    book = page.inner_text("#book")
    assert "Eve" in book and "Frank (not registered)" in book
    assert "+14155550163" not in page.content()  # masked
    assert "Eve Pages" in page.inner_text("#conversations")
    assert "conversation.created" in page.inner_text("#events")
    shot(page, "user-full")
    page.goto(server.url + "/console/overview")
    assert page.inner_text("#stat-messages") == "1"
    assert "now" in page.locator("#activity-chart text").all_text_contents()
    shot(page, "overview-full")

    page.set_viewport_size({"width": 375, "height": 800})
    pages = {
        "overview": "/console/overview",
        "user": f"/console/users/{dee['user_id']}",
        "outbox": "/console/outbox?state=pending",
    }
    for name, path in pages.items():
        page.goto(server.url + path)
        header = page.evaluate(
            "(() => { const h = document.querySelector('header.top');"
            " return [h.scrollWidth, h.clientWidth, document.documentElement.scrollWidth]; })()"
        )
        assert header[0] <= header[1] and header[2] <= 375, (path, header)
        shot(page, f"phone-{name}")
