"""The console in a real headless Chromium (Debian's, driven by Playwright) against a real
`contactsync serve` on loopback. Screenshots of each page go to test-artifacts/.

Chromium is installed by scripts/browser (called from scripts/test); Playwright never downloads
a browser here. Without /usr/bin/chromium these tests are skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess
from tests.test_console import Receiver

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("browser") / "data").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright: Any, tmp_path: Path) -> Iterator[Any]:
    """A page in a fresh browser profile (its own user-data-dir, so no cookies carry over)."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS,
        viewport={"width": 1200, "height": 900},
    )
    page = context.pages[0] if context.pages else context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


class Api:
    """The server's HTTP API, as the app's backend and its clients use it."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def user(self, phone: str, name: str | None = None) -> dict[str, Any]:
        r = self.client.post(
            "/v1/admin/users", json={"phone": phone, "name": name}, headers=self.admin
        )
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def token(self, user_id: int) -> dict[str, str]:
        r = self.client.post(
            f"/v1/admin/users/{user_id}/tokens", json={"device_id": "phone-1"}, headers=self.admin
        )
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def get_user(self, user_id: int) -> httpx.Response:
        return self.client.get(f"/v1/admin/users/{user_id}", headers=self.admin)

    def event_types(self, headers: dict[str, str]) -> list[str]:
        r = self.client.get("/v1/events?after=0&limit=1000", headers=headers)
        return [e["type"] for e in r.json()["events"]]


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    a = Api(server.url)
    yield a
    a.client.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def sign_in(page: Any, server: ServerProcess, key: str = ADMIN_KEY) -> None:
    page.goto(server.url + "/console")
    assert page.url.endswith("/console/login")
    page.fill("#key", key)
    page.click("#login button[type=submit]")
    page.wait_for_load_state()


def test_a_wrong_key_is_refused(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/console/login")
    shot(page, "login")
    sign_in(page, server, key="csadmin_not-the-key")
    assert page.url.endswith("/console/login")
    assert "That is not the admin key." in page.inner_text("[role=alert]")
    assert page.context.cookies() and all(c["name"] != "cs_console" for c in page.context.cookies())
    shot(page, "login-refused")
    page.goto(server.url + "/console/users")
    assert page.url.endswith("/console/login")


def test_sign_in_and_find_a_user_created_through_the_api(
    page: Any, server: ServerProcess, api: Api
) -> None:
    ann = api.user("+14155550121", "Ann Browser")
    api.user("+14155550122", "Someone Else")
    headers = api.token(ann["user_id"])
    api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": f"+1415555013{i}", "name": f"c{i}"} for i in range(4)]},
        headers=headers,
    )
    sign_in(page, server)
    assert page.url.endswith("/console/overview")
    session = next(c for c in page.context.cookies() if c["name"] == "cs_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session
    assert int(page.inner_text("#stat-users")) >= 2
    assert page.locator("#activity-chart rect.bar").count() == 48
    shot(page, "overview")

    page.click("nav >> text=Users")
    page.fill("input[name=q]", "ann browser")
    page.click("form.search button")
    rows = page.locator("#users tbody tr")
    assert rows.count() == 1
    assert "+14155550121" not in page.content()  # masked in the list
    assert "+14*******21" in rows.first.inner_text()
    shot(page, "users")
    rows.first.locator("a").click()
    assert page.url.endswith(f"/console/users/{ann['user_id']}")
    assert page.inner_text("#phone") == "+14*******21"
    assert "4 entries" in page.inner_text("#book-size")
    assert "phone-1" in page.inner_text("#devices")
    page.click("#reveal")
    assert page.inner_text("#phone") == "+14155550121"
    shot(page, "user")

    # Search by number, written the way a person would.
    page.goto(server.url + "/console/users")
    page.fill("input[name=q]", "(415) 555-0121")
    page.press("input[name=q]", "Enter")
    page.wait_for_load_state()
    assert page.locator("#users tbody tr").count() == 1


def test_toggling_a_setting_takes_effect_on_the_api(
    page: Any, server: ServerProcess, api: Api
) -> None:
    holder = api.user("+14155550141", "Holder")
    headers = api.token(holder["user_id"])
    api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": "+14155550142"}, {"phone": "+14155550143"}]},
        headers=headers,
    )
    sign_in(page, server)
    page.click("nav >> text=Settings")
    box = page.locator("#f-notify_contact_joined")
    assert box.is_checked()
    box.uncheck()
    page.fill("#f-max_contacts_per_request", "2")
    page.click("#save")
    assert "Settings saved." in page.inner_text("[role=status]")
    assert not page.locator("#f-notify_contact_joined").is_checked()
    shot(page, "settings")

    api.user("+14155550142")  # joins while notices are off: the holder hears nothing
    assert "contact.joined" not in api.event_types(headers)
    r = api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": f"+1415555015{i}"} for i in range(3)]},
        headers=headers,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_contacts"

    page.locator("#f-notify_contact_joined").check()
    page.fill("#f-max_contacts_per_request", "5000")
    page.click("#save")
    assert "Settings saved." in page.inner_text("[role=status]")
    api.user("+14155550143")  # notices on again
    assert api.event_types(headers).count("contact.joined") == 1

    # A bad value is refused with the reason next to the field; nothing is saved.
    page.fill("#f-discovery_quota", "-5")
    page.click("#save")
    assert "greater than or equal to 0" in page.inner_text("#error-discovery_quota")
    page.goto(server.url + "/console/settings")
    assert page.input_value("#f-discovery_quota") == "50000"


def test_a_form_posted_without_the_csrf_token_is_refused(
    page: Any, server: ServerProcess, api: Api
) -> None:
    user = api.user("+14155550161", "Target")
    sign_in(page, server)
    page.goto(server.url + f"/console/users/{user['user_id']}")
    page.evaluate(
        """() => document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())"""
    )
    with page.expect_navigation() as navigation:
        page.click("#toggle-restricted")
    assert navigation.value.status == 403
    assert "Request refused" in page.inner_text("h1")
    shot(page, "refused")
    assert api.get_user(user["user_id"]).json()["restricted"] is False

    # A forged token is no better than none.
    page.goto(server.url + f"/console/users/{user['user_id']}")
    page.evaluate(
        """() => document.querySelectorAll('input[name=csrf]').forEach(e => e.value = 'forged')"""
    )
    page.click("#toggle-restricted")
    assert "Request refused" in page.inner_text("h1")
    assert api.get_user(user["user_id"]).json()["restricted"] is False

    # The real form works.
    page.goto(server.url + f"/console/users/{user['user_id']}")
    page.click("#toggle-restricted")
    assert "now restricted" in page.inner_text("[role=status]")
    assert api.get_user(user["user_id"]).json()["restricted"] is True


def test_delete_asks_first(page: Any, server: ServerProcess, api: Api) -> None:
    user = api.user("+14155550171", "Doomed")
    sign_in(page, server)
    page.goto(server.url + f"/console/users/{user['user_id']}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete")
    assert page.url.endswith(f"/console/users/{user['user_id']}")
    assert api.get_user(user["user_id"]).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url("**/console/users?done=deleted")
    assert api.get_user(user["user_id"]).status_code == 404


def test_send_test_reaches_the_webhook_signed(page: Any, server: ServerProcess) -> None:
    receiver = Receiver()
    try:
        sign_in(page, server)
        page.goto(server.url + "/console/settings")
        assert page.locator("#send-test").is_disabled()
        secret = "browser-test-secret-0123456789"
        page.fill("#f-push_webhook_url", receiver.url)
        page.fill("#f-push_webhook_secret", secret)
        page.click("#save")
        assert "Settings saved." in page.inner_text("[role=status]")
        page.click("#send-test")
        assert "answered 200" in page.inner_text("#test-result")
        shot(page, "settings-test")
        [(headers, body)] = receiver.requests
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-contactsync-signature"] == expected
        assert json.loads(body)["test"] is True
    finally:
        receiver.close()


def test_metrics_count_the_browsing(page: Any, server: ServerProcess) -> None:
    def count(route: str, status: str) -> float:
        r = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200
        labels = {"method": "GET", "route": route, "status": status}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if sample.name == "contactsync_http_requests_total" and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    before = count("/console/users/{user_id}", "200")
    sign_in(page, server)
    for _ in range(3):
        page.goto(server.url + "/console/users/1")
    assert count("/console/users/{user_id}", "200") - before == 3
    assert count("/console/static/{path}", "200") >= 1
