"""A server's database connections at start and stop: a stop while background tasks hold
connections gives every one back whole (none is left half-reset for the driver to finish after
the event loop is gone), and a start holds no more than one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from contactsync.server.app import create_app
from contactsync.server.config import Settings
from tests.conftest import ADMIN_KEY, Api


async def test_stopping_returns_every_connection_whole(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each start sets off the trimmer, the push worker and private discovery's tagging, which
    # are still in transactions when the app stops at once: the moment a cancelled task used
    # to leave its connection's ROLLBACK half done ("Exception during reset or similar").
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
        for n in range(20):
            settings.data_dir = tmp_path / f"data{n}"
            app = create_app(settings)
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    r = await client.post(
                        "/v1/admin/users", json={"phone": f"+1415555{n:04d}"}, headers=admin
                    )
                    assert r.status_code in (200, 201), r.text
    assert not [r.getMessage() for r in caplog.records], "a connection was returned half reset"


async def test_a_start_and_requests_one_at_a_time_need_one_connection(api: Api) -> None:
    # The start's own work (migrations, keys, the trimmer's, push worker's and discovery's first
    # looks) runs one step after another, and background tasks that find nothing to do touch no
    # connection: a process opens connections for concurrent requests, not for starting. (On
    # PostgreSQL each is a server process of its own, whose catalog caches start cold.)
    _, headers = await api.user_with_token("+14155550101")
    await api.create_user("+14155550102")
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155550102"}]}, headers=headers
    )
    assert r.status_code == 200, r.text
    await api.events(headers)
    await asyncio.sleep(0.05)  # (a background task that did look would have by now)
    pool = api.ctx.db.engine.sync_engine.pool
    assert (pool.checkedin(), pool.checkedout()) == (1, 0)
