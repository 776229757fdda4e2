"""A server that stops while its background tasks hold database connections gives every one
back whole: none is left half-reset for the driver to finish after the event loop is gone."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from contactsync.server.app import create_app
from contactsync.server.config import Settings
from tests.conftest import ADMIN_KEY


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
