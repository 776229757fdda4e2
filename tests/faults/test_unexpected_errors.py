"""A bug is answered 500 `internal_error` and its trace logged once: not a second time by the
server the exception would otherwise escape to."""

from __future__ import annotations

import logging

import httpx
import pytest
from asgi_lifespan import LifespanManager

from contactsync.server.app import create_app
from contactsync.server.config import Settings
from contactsync.server.services.otp_senders import MemorySender


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_bug_is_a_500_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, otp_sender=MemorySender())

    @app.get("/v1/test-bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    async with LifespanManager(app) as manager:
        # raise_app_exceptions: an exception escaping the app would fail the request here,
        # as it would reach uvicorn, which logs it (again)
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.get("/v1/test-bug")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "a bug" not in r.text
    traces = [rec for rec in caplog.records if rec.exc_info]
    assert len(traces) == 1 and traces[0].levelno == logging.ERROR
