"""Fault-injection fixtures: TCP proxies in front of the real PostgreSQL and Redis (never the
services themselves: they are shared), and settings that reach the database through one with
short timeouts, so a test of a hang takes about a second, not the production defaults."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url

from contactsync.server.app import create_app
from contactsync.server.config import Settings
from contactsync.server.services.otp_senders import MemorySender
from tests.conftest import ADMIN_KEY, Api
from tests.faults.proxy import Proxy

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
def pg_proxy(db_url: str) -> Iterator[Proxy]:
    """A proxy to the PostgreSQL server of this test's database (PostgreSQL tests only)."""
    url = make_url(db_url)
    with Proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy() -> Iterator[Proxy]:
    with Proxy(REDIS_HOST, REDIS_PORT) as proxy:
        yield proxy


def through(db_url: str, proxy: Proxy) -> str:
    """The same database, reached through the proxy."""
    return (
        make_url(db_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def settings(db_url: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Second-scale database timeouts; on PostgreSQL the database is reached through
    `pg_proxy`, so a test can make it hang, refuse or cut connections."""
    if backend == "postgresql":
        db_url = through(db_url, request.getfixturevalue("pg_proxy"))
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        admin_key=ADMIN_KEY,
        otp_sender="memory",
        db_connect_timeout_seconds=1.0,
        db_command_timeout_seconds=1.0,
        db_pool_timeout_seconds=0.5,
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    """The app on these settings, in process (for settings a test changes first)."""
    app = create_app(settings, otp_sender=MemorySender())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, app)


def assert_overloaded(response: httpx.Response) -> None:
    """503 `overloaded`, retry after a second, in the one error body and its header."""
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {
        "code": "overloaded",
        "message": response.json()["error"]["message"],
        "details": {"retry_after": 1},
    }
    assert response.headers["Retry-After"] == "1"
