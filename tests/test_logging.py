"""Structured logs: JSON lines, request ids, and no phone numbers at INFO and above."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contactsync.server.logging import JsonFormatter, redact, request_id_var
from tests.conftest import ADMIN_KEY, Api
from tests.e2e.server import ServerProcess

NUMBER = "+14155550101"


class Lines(logging.Handler):
    """Keeps every record formatted as the server would write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # what `contactsync serve` runs at by default
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def record(level: int, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("contactsync.test", level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_one_json_object_per_record_with_request_id_and_extras() -> None:
    token = request_id_var.set("req-123")
    try:
        line = JsonFormatter().format(record(logging.INFO, "hello %s", "world", user_id=42))
    finally:
        request_id_var.reset(token)
    out = json.loads(line)
    assert out["msg"] == "hello world" and out["level"] == "info"
    assert out["logger"] == "contactsync.test" and out["request_id"] == "req-123"
    assert out["user_id"] == 42
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(out["ts"]))
    assert "\n" not in line


@pytest.mark.parametrize(
    "written",
    [NUMBER, "+1 415 555 0101", "(415) 555-0101", "4155550101", "+44 20 7946 0958"],
)
def test_numbers_are_masked_at_info_and_above(written: str) -> None:
    formatter = JsonFormatter()
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        out = formatter.format(
            record(level, "registered %s", written, extra_phone=written, nested={"p": [written]})
        )
        digits = re.sub(r"\D", "", written)
        assert digits not in re.sub(r"\D", "", out.replace('"ts"', "")), out
        assert "*" in json.loads(out)["msg"]
    debug = JsonFormatter().format(record(logging.DEBUG, "registered %s", written))
    assert written in json.loads(debug)["msg"]


def test_small_numbers_stay_readable() -> None:
    text = "uploaded 5000 contacts in 12 batches on port 8080 (HTTP 413), 2026"
    assert redact(text) == text
    assert redact(f"user {NUMBER} joined") == "user +14*******01 joined"


async def test_requests_get_an_id_and_one_access_line(api: Api, lines: Lines) -> None:
    r = await api.client.get("/healthz")
    generated = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    r = await api.client.get("/healthz", headers={"X-Request-ID": "from-the-lb.42"})
    assert r.headers["x-request-id"] == "from-the-lb.42"
    for bad in ("bad id\twith tab", "x" * 65, "14155550101"):
        r = await api.client.get("/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"]), bad
    access = [e for e in lines.json() if e["logger"] == "contactsync.access"]
    assert [e["request_id"] for e in access[:2]] == [generated, "from-the-lb.42"]
    assert access[0]["route"] == "/healthz" and access[0]["status"] == 200
    assert isinstance(access[0]["duration_ms"], float)


async def test_logs_carry_route_templates_never_numbers(api: Api, lines: Lines) -> None:
    user, headers = await api.user_with_token(NUMBER, "Ann")
    await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155550102"}]}, headers=headers
    )
    await api.client.get(f"/v1/admin/users/{user['user_id']}", headers=api.admin)
    await api.client.put(f"/v1/relations/{NUMBER}", headers=headers, json={"contact": True})
    await api.client.get(f"/v1/admin/users/{NUMBER}", headers=api.admin)
    await api.client.post("/v1/auth/otp/request", json={"phone": "+14155550103"})
    text = "\n".join(lines.lines)
    for number in ("4155550101", "4155550102", "4155550103"):
        assert number not in text
    routes = {e.get("route") for e in lines.json() if e["logger"] == "contactsync.access"}
    assert "/v1/admin/users/{user_id}" in routes and "/v1/addressbook" in routes


async def test_log_lines_of_one_request_share_its_id(api: Api, lines: Lines) -> None:
    form = await api.client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token
    r = await api.client.post(
        "/console/login",
        data={"key": "wrong", "csrf": token.group(1)},
        headers={"X-Request-ID": "login-try-1"},
    )
    assert r.status_code == 401
    tagged = [e for e in lines.json() if e.get("request_id") == "login-try-1"]
    assert {e["logger"] for e in tagged} == {"contactsync.console", "contactsync.access"}


@pytest.mark.slow
def test_serve_writes_json_logs_without_numbers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            user = client.post("/v1/admin/users", json={"phone": NUMBER}, headers=admin).json()
            token = client.post(
                f"/v1/admin/users/{user['user_id']}/tokens", json={"device_id": "d1"}, headers=admin
            ).json()["token"]
            r = client.post(
                "/v1/addressbook",
                json={"contacts": [{"phone": "+14155550102", "name": "Bob"}]},
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "upload-1"},
            )
            assert r.status_code == 200 and r.headers["x-request-id"] == "upload-1"
            client.get(f"/v1/relations/{NUMBER}")
            client.post("/v1/auth/otp/request", json={"phone": "+14155550103"})
    finally:
        server.stop()
    log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records, log
    assert any(
        r.get("request_id") == "upload-1" and r.get("route") == "/v1/addressbook" for r in records
    )
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines too
    for number in ("4155550101", "4155550102", "4155550103"):
        assert number not in log
    # Everything but the one-line banner on stdout is JSON.
    others = [line for line in log.splitlines() if line and not line.startswith("{")]
    assert len(others) <= 1 and all(line.startswith("contactsync on http") for line in others)
