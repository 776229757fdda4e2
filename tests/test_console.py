"""The admin console through HTTP as a browser would use it: sign-in, CSRF, users, settings.

Runs on both databases. The browser-driven versions of the main flows are in tests/browser/.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.server.console.sessions import COOKIE
from contactsync.server.metrics import outbox_counts
from contactsync.server.services import app_settings, policy
from tests.conftest import ADMIN_KEY, Api

ANN = "+14155550101"
BOB = "+14155550102"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(api: Api, key: str = ADMIN_KEY) -> str:
    """Sign in like the login form does; return the session's CSRF token."""
    form = await api.client.get("/console/login")
    assert form.status_code == 200
    r = await api.client.post("/console/login", data={"key": key, "csrf": csrf_of(form.text)})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console/overview"
    page = await api.client.get("/console/overview")
    assert page.status_code == 200
    return csrf_of(page.text)


async def post(api: Api, path: str, data: dict[str, Any]) -> Any:
    return await api.client.post(path, data=data)


async def test_pages_need_a_session(api: Api) -> None:
    for path in ("/console", "/console/overview", "/console/users", "/console/settings"):
        r = await api.client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/console/login", path
    r = await api.client.post("/console/users/1/delete", data={"csrf": "x"})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(api: Api) -> None:
    form = await api.client.get("/console/login")
    r = await api.client.post("/console/login", data={"key": ADMIN_KEY, "csrf": csrf_of(form.text)})
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and COOKIE + "=" in v)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/console" in cookie.lower()
    assert "csadmin_" not in cookie  # the cookie is a session token, never the key
    token = api.client.cookies.get(COOKIE)
    page = await api.client.get("/console/overview")
    assert page.status_code == 200 and "Overview" in page.text
    for name, value in (
        ("content-security-policy", "script-src 'self'"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ):
        assert value in page.headers[name]

    r = await post(api, "/console/logout", {"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert (await api.client.get("/console/overview")).status_code == 303
    # The old token is dead on the server, not just forgotten by this client.
    api.client.cookies.set(COOKIE, token or "", path="/console")
    assert (await api.client.get("/console/overview")).status_code == 303


async def test_a_wrong_key_is_refused(api: Api) -> None:
    form = await api.client.get("/console/login")
    for wrong in ("csadmin_wrong", "", ADMIN_KEY + "x", "cs_" + ADMIN_KEY[8:]):
        r = await api.client.post("/console/login", data={"key": wrong, "csrf": csrf_of(form.text)})
        assert r.status_code == 401
        assert "not the admin key" in r.text
        assert COOKIE not in api.client.cookies
    assert (await api.client.get("/console/overview")).status_code == 303


async def test_sign_in_attempts_are_limited(api: Api) -> None:
    form = await api.client.get("/console/login")
    token = csrf_of(form.text)
    statuses = [
        (await api.client.post("/console/login", data={"key": "nope", "csrf": token})).status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    # Even the right key waits out the window: guessing is what the limit is for.
    r = await api.client.post("/console/login", data={"key": ADMIN_KEY, "csrf": token})
    assert r.status_code == 429 and COOKIE not in api.client.cookies


async def test_sign_in_without_its_csrf_token_is_refused(api: Api) -> None:
    await api.client.get("/console/login")
    r = await api.client.post("/console/login", data={"key": ADMIN_KEY})
    assert r.status_code == 403 and COOKIE not in api.client.cookies
    r = await api.client.post("/console/login", data={"key": ADMIN_KEY, "csrf": "forged" * 5})
    assert r.status_code == 403 and COOKIE not in api.client.cookies


async def test_forms_without_the_csrf_token_change_nothing(api: Api) -> None:
    ann = await api.create_user(ANN, "Ann")
    csrf = await sign_in(api)
    path = f"/console/users/{ann['user_id']}/restricted"
    for data, headers in (
        ({"restricted": "1"}, {}),
        ({"restricted": "1", "csrf": "wrong-token-" * 3}, {}),
        ({"restricted": "1", "csrf": csrf}, {"origin": "https://evil.example"}),
        ({"restricted": "1", "csrf": csrf}, {"sec-fetch-site": "cross-site"}),
    ):
        r = await api.client.post(path, data=data, headers=headers)
        assert r.status_code == 403, data
        assert "Nothing was changed" in r.text
    for action in ("delete", "revoke"):
        r = await post(api, f"/console/users/{ann['user_id']}/{action}", {})
        assert r.status_code == 403
    r = await post(api, "/console/settings", {"discovery_quota": "1"})
    assert r.status_code == 403
    user = (await api.client.get(f"/v1/admin/users/{ann['user_id']}", headers=api.admin)).json()
    assert user["restricted"] is False
    async with api.ctx.read() as tx:
        assert (await app_settings.load(tx)).discovery_quota == 50_000
    # The same post with the token and from the console itself works.
    host = {"origin": "http://testserver"}
    r = await api.client.post(path, data={"restricted": "1", "csrf": csrf}, headers=host)
    assert r.status_code == 303


async def test_a_new_admin_key_ends_console_sessions(api: Api) -> None:
    await sign_in(api)
    key = api.ctx.services.admin_key
    api.ctx.services.admin_key = type(key)("0" * 64, "environment", None)
    assert (await api.client.get("/console/overview")).status_code == 303


async def test_search_by_phone_or_name_shows_masked_numbers(api: Api) -> None:
    ann = await api.create_user(ANN, "Ann Archer")
    bob = await api.create_user(BOB, "Bob Brown")
    await sign_in(api)

    async def found(q: str) -> list[int]:
        r = await api.client.get("/console/users", params={"q": q})
        assert r.status_code == 200
        assert ANN not in r.text and BOB not in r.text, "numbers must be masked"
        return [int(i) for i in re.findall(r'href="/console/users/(\d+)"', r.text)]

    assert await found("") == [bob["user_id"], ann["user_id"]]
    assert await found("+1 (415) 555-0101") == [ann["user_id"]]
    assert await found("5550102") == [bob["user_id"]]
    assert await found("555010") == [bob["user_id"], ann["user_id"]]
    assert await found("archer") == [ann["user_id"]]
    assert await found("BOB") == [bob["user_id"]]
    assert await found("nobody") == []
    assert await found("100%_") == []  # LIKE wildcards are taken literally
    r = await api.client.get("/console/users", params={"q": "ann"})
    assert phones.mask(ANN) in r.text


async def test_user_page_and_reveal(api: Api) -> None:
    ann, ann_token = await api.user_with_token(ANN, "Ann")
    await api.token(ann["user_id"], "tablet-2")
    await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": BOB, "name": "Bob"}, {"phone": "+14155550103"}]},
        headers=ann_token,
    )
    csrf = await sign_in(api)
    page = await api.client.get(f"/console/users/{ann['user_id']}")
    assert page.status_code == 200
    assert ANN not in page.text and phones.mask(ANN) in page.text
    assert "phone-1" in page.text and "tablet-2" in page.text
    assert re.search(r'id="book-size">2 entries', page.text)
    shown = await post(api, f"/console/users/{ann['user_id']}/reveal", {"csrf": csrf})
    assert shown.status_code == 200 and ANN in shown.text
    # Revealing needs the token like any other action.
    refused = await post(api, f"/console/users/{ann['user_id']}/reveal", {})
    assert refused.status_code == 403 and ANN not in refused.text
    assert (await api.client.get("/console/users/999999")).status_code == 404


async def test_user_page_shows_who_can_find_the_user_and_the_discovery_mode(api: Api) -> None:
    ann, ann_token = await api.user_with_token(ANN, "Ann")
    await sign_in(api)
    page = await api.client.get(f"/console/users/{ann['user_id']}")
    assert 'id="discoverable-by">the app default<' in page.text
    assert 'id="announce-join-to">everybody<' in page.text
    assert "books-not-stored" not in page.text
    r = await api.client.put(
        "/v1/me/preferences",
        json={"discoverable_by": "contacts", "announce_join_to": "nobody"},
        headers=ann_token,
    )
    assert r.status_code == 200, r.text
    api.ctx.settings.discovery_mode = "private"
    page = await api.client.get(f"/console/users/{ann['user_id']}")
    assert 'id="discoverable-by">contacts<' in page.text
    assert 'id="announce-join-to">nobody<' in page.text
    assert "address books are not stored" in page.text


async def test_revoke_restrict_pair_unpair_delete(api: Api) -> None:
    ann, ann_token = await api.user_with_token(ANN, "Ann")
    bob = await api.create_user(BOB, "Bob")
    csrf = await sign_in(api)
    base = f"/console/users/{ann['user_id']}"

    r = await post(api, base + "/revoke", {"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == base + "?done=revoked"
    assert (await api.client.get("/v1/me", headers=ann_token)).status_code == 401
    assert "signed out" in (await api.client.get(r.headers["location"])).text

    assert (
        await post(api, base + "/restricted", {"csrf": csrf, "restricted": "1"})
    ).status_code == 303
    user = (await api.client.get(f"/v1/admin/users/{ann['user_id']}", headers=api.admin)).json()
    assert user["restricted"] is True
    assert (
        await post(api, base + "/restricted", {"csrf": csrf, "restricted": "0"})
    ).status_code == 303
    user = (await api.client.get(f"/v1/admin/users/{ann['user_id']}", headers=api.admin)).json()
    assert user["restricted"] is False

    # Pair by phone number (any written form), unpair by id; both idempotent.
    r = await post(api, base + "/pair", {"csrf": csrf, "other": "+1 415-555-0102"})
    assert r.headers["location"].endswith("done=paired")
    r = await post(api, base + "/pair", {"csrf": csrf, "other": str(bob["user_id"])})
    assert r.headers["location"].endswith("done=already_paired")
    async with api.ctx.read() as tx:
        assert await policy.paired(tx, bob["user_id"], ann["user_id"])
    assert "Bob" in (await api.client.get(base)).text
    r = await post(api, base + "/unpair", {"csrf": csrf, "other": str(bob["user_id"])})
    assert r.headers["location"].endswith("done=unpaired")
    async with api.ctx.read() as tx:
        assert not await policy.paired(tx, ann["user_id"], bob["user_id"])

    # Bad partners: the page says why, nothing changes.
    for other, status in (("", 422), ("999999", 404), (str(ann["user_id"]), 422), ("+1 999", 422)):
        r = await post(api, base + "/pair", {"csrf": csrf, "other": other})
        assert r.status_code == status, other
        assert 'class="flash bad"' in r.text
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM pairs")) == 0

    r = await post(api, base + "/delete", {"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/console/users?done=deleted"
    assert (
        await api.client.get(f"/v1/admin/users/{ann['user_id']}", headers=api.admin)
    ).status_code == 404
    r = await post(api, base + "/delete", {"csrf": csrf})
    assert r.status_code == 404
    # Actions on a user id no database can hold are a clear 422, not a crash.
    r = await post(api, "/console/users/99999999999999999999/delete", {"csrf": csrf})
    assert r.status_code == 422


async def test_settings_form_changes_what_the_api_does(api: Api) -> None:
    _, ann = await api.user_with_token(ANN, "Ann")
    await api.client.post("/v1/addressbook", json={"contacts": [{"phone": BOB}]}, headers=ann)
    csrf = await sign_in(api)
    page = await api.client.get("/console/settings")
    assert 'name="notify_contact_joined"' in page.text and "checked" in page.text
    form = current_form(page.text)
    form.pop("notify_contact_joined")  # unticked boxes are not posted
    form["max_contacts_per_request"] = "2"
    r = await post(api, "/console/settings", {**form, "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/console/settings?done=saved"
    async with api.ctx.read() as tx:
        saved = await app_settings.load(tx)
    assert saved.notify_contact_joined is False and saved.max_contacts_per_request == 2
    assert saved.discovery_quota == 50_000  # untouched fields keep their values

    await api.create_user(BOB, "Bob")  # joins: with notices off, Ann hears nothing
    assert [e["type"] for e in await api.events(ann)] == []
    three = {"contacts": [{"phone": f"+1415555020{i}"} for i in range(3)]}
    r = await api.client.post("/v1/addressbook", json=three, headers=ann)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_contacts"


def current_form(html: str) -> dict[str, Any]:
    """The values the settings form would post as rendered (no browser needed)."""
    values: dict[str, Any] = {}
    for tag in re.findall(r"<input [^>]*>", html):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or name.group(1) == "csrf":
            continue
        value = re.search(r'value="([^"]*)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if kind and kind.group(1) == "checkbox":
            if " checked" in tag:
                values.setdefault(name.group(1), []).append(value.group(1) if value else "on")
        else:
            values[name.group(1)] = value.group(1) if value else ""
    return {
        k: (v[0] if isinstance(v, list) and len(v) == 1 and "types" not in k else v)
        for k, v in values.items()
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_contacts_per_request", "0", "greater than or equal to 1"),
        ("max_contacts_per_request", "lots", "whole number"),
        ("discovery_quota", "", "whole number"),
        ("push_webhook_url", "not a url", "URL"),
        ("push_webhook_secret", "short", "at least 16"),
        ("push_event_types", ["contact.joined", "no.such.type"], "Unknown event types"),
    ],
)
async def test_bad_settings_are_refused_whole(
    api: Api, field: str, value: Any, message: str
) -> None:
    csrf = await sign_in(api)
    form = current_form((await api.client.get("/console/settings")).text)
    form["discovery_quota"] = "77"  # a good change riding along must not be saved either
    form[field] = value
    r = await post(api, "/console/settings", {**form, "csrf": csrf})
    assert r.status_code == 400, r.text
    assert "were not saved" in r.text and message in r.text
    async with api.ctx.read() as tx:
        assert (await app_settings.load(tx)).discovery_quota == 50_000


async def test_webhook_secret_is_write_only_and_kept_when_left_empty(api: Api) -> None:
    csrf = await sign_in(api)
    form = current_form((await api.client.get("/console/settings")).text)
    secret = "s3cret-value-0123456789"
    form.update(push_webhook_url="http://127.0.0.1:9/hook", push_webhook_secret=secret)
    assert (await post(api, "/console/settings", {**form, "csrf": csrf})).status_code == 303
    page = await api.client.get("/console/settings")
    assert secret not in page.text and ">set<" in page.text
    form = current_form(page.text)
    form["discovery_quota"] = "123"
    assert (await post(api, "/console/settings", {**form, "csrf": csrf})).status_code == 303
    async with api.ctx.read() as tx:
        saved = await app_settings.load(tx)
    assert saved.push_webhook_secret == secret and saved.discovery_quota == 123


class Receiver:
    """A real local HTTP server standing in for the app's push webhook."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def test_send_test_posts_a_signed_payload(api: Api, receiver: Receiver) -> None:
    csrf = await sign_in(api)
    r = await post(api, "/console/settings/test", {"csrf": csrf})
    assert r.status_code == 200 and "Set the webhook URL and secret first" in r.text
    secret = "receiver-secret-0123456789"
    async with api.ctx.tx() as tx:
        await app_settings.update(
            tx, {"push_webhook_url": receiver.url, "push_webhook_secret": secret}
        )
    r = await post(api, "/console/settings/test", {"csrf": csrf})
    assert r.status_code == 200 and "answered 200" in r.text
    [(headers, body)] = receiver.requests
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-contactsync-signature"] == expected
    payload = json.loads(body)
    assert payload["test"] is True and payload["deliveries"] == []

    receiver.close()  # now nothing listens there
    r = await post(api, "/console/settings/test", {"csrf": csrf})
    assert r.status_code == 200 and "could not be reached" in r.text


async def test_overview_figures_and_chart(api: Api) -> None:
    _, ann = await api.user_with_token(ANN, "Ann")
    await api.create_user(BOB, "Bob")
    for n in range(3):
        await api.client.post(
            "/v1/addressbook", json={"contacts": [{"phone": f"+1415555030{n}"}]}, headers=ann
        )
    await sign_in(api)
    page = (await api.client.get("/console/overview")).text
    assert re.search(r'id="stat-users">2<', page)
    assert re.search(r'id="stat-entries">3<', page)
    assert re.search(r'<span class="n">3</span><span>uploads, last 24 h', page)
    assert re.search(r'<span class="n">2</span><span>joins, last 24 h', page)
    assert '<svg class="chart"' in page
    # The newest hour holds the traffic: its bars are drawn with a height.
    titles = re.findall(r'height="([\d.]+)"><title>[^<]*: (\d+) (uploads|joins)', page)
    assert len(titles) == 48
    assert ("3", "uploads") in [(n, s) for _, n, s in titles]
    assert all(float(h) > 0 for h, n, _ in titles if n != "0")


async def test_outbox_figures_appear_with_the_outbox_table(api: Api) -> None:
    ann = await api.create_user(ANN)
    await sign_in(api)
    async with api.ctx.read() as tx:
        existed = await outbox_counts(tx.conn) is not None
    if not existed:
        assert "outbox not installed" in await overview_text(api)
    async with api.ctx.tx() as tx:
        if not existed:
            # The push feature adds this table; stand in for its migration with its columns.
            await tx.conn.execute(
                sa.text(
                    "CREATE TABLE push_outbox (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, "
                    "seq BIGINT NOT NULL, state VARCHAR(8) NOT NULL, attempts INTEGER NOT NULL "
                    "DEFAULT 0, next_attempt_at BIGINT NOT NULL, last_error VARCHAR(200), "
                    "created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
                )
            )
        for seq, state in enumerate(("pending", "pending", "failed"), start=1):
            await tx.conn.execute(
                sa.text(
                    "INSERT INTO push_outbox (id, user_id, seq, state, attempts, next_attempt_at, "
                    "created_at, updated_at) VALUES (:i, :u, :s, :st, 0, 0, 0, 0)"
                ),
                {"i": seq, "u": ann["user_id"], "s": seq, "st": state},
            )
    page = await overview_text(api)
    assert re.search(r'id="stat-outbox">2<', page) and re.search(r'id="stat-failed">1<', page)


async def overview_text(api: Api) -> str:
    return (await api.client.get("/console/overview")).text


async def test_static_files_are_served(api: Api) -> None:
    r = await api.client.get("/console/static/console.css")
    assert r.status_code == 200 and "text/css" in r.headers["content-type"]
    assert (await api.client.get("/console/static/console.js")).status_code == 200
    assert (await api.client.get("/console/static/../routes.py")).status_code == 404


async def test_user_page_counts_relations(api: Api) -> None:
    ann, ann_token = await api.user_with_token(ANN, "Ann")
    bob = await api.create_user(BOB, "Bob")
    await sign_in(api)
    r = await api.client.put(
        f"/v1/relations/{bob['user_id']}", json={"contact": True}, headers=ann_token
    )
    assert r.status_code == 200, r.text
    page = await api.client.get(f"/console/users/{ann['user_id']}")
    assert "1 held, 0 by others" in page.text
    page = await api.client.get(f"/console/users/{bob['user_id']}")
    assert "0 held, 1 by others" in page.text
