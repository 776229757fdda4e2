"""A database that hangs, refuses or cuts connections: every request ends within the timeouts
with a 503 and a stable code (never a 500 or a trace), /readyz says so within 2 s, and the
server recovers by itself when the database answers again.

The database is the real PostgreSQL behind `tests/faults/proxy.py`; timeouts are 1 s (connect
and statement) and 0.5 s (pool wait) here instead of the defaults 5, 10 and 1 s.
"""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from contactsync.errors import StoreUnavailable
from contactsync.server.config import Settings
from tests.conftest import Api
from tests.faults.conftest import assert_overloaded, running
from tests.faults.proxy import Proxy
from tests.live import eventually

postgresql_only = pytest.mark.parametrize("backend", ["postgresql"])

# Checking a connection out (pool wait, ping, connect) is bounded by 0.5 + 1 s here.
CHECKOUT_BOUND = 0.5 + 1.0 + 0.5


async def _status(api: Api, path: str, headers: dict[str, str] | None = None) -> int:
    return (await api.client.get(path, headers=headers)).status_code


def no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@postgresql_only
async def test_a_hung_database_is_503_within_the_timeouts_and_recovers(
    api: Api, pg_proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    _, headers = await api.user_with_token("+14155550100")
    # (the event log, not /v1/me: the caller's session may be answered from the cache)
    assert await _status(api, "/v1/events", headers) == 200
    pg_proxy.set("pause")  # packets black-holed: nothing refused, nothing answered

    started = time.monotonic()
    r = await api.client.get("/v1/events", headers=headers)
    assert time.monotonic() - started < CHECKOUT_BOUND
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "store_unavailable"
    assert int(r.headers["Retry-After"]) >= 1

    started = time.monotonic()
    ready = await api.client.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "store_unavailable"
    assert await _status(api, "/healthz") == 200  # the process itself is alive

    pg_proxy.set("pass")  # the database answers again: no restart
    await eventually(lambda: _ok(api, "/readyz"), timeout=10)
    await eventually(lambda: _ok(api, "/v1/events", headers), timeout=10)
    no_error_logged(caplog)


async def _ok(api: Api, path: str, headers: dict[str, str] | None = None) -> bool:
    return await _status(api, path, headers) == 200


@postgresql_only
async def test_a_statement_left_unanswered_ends_within_the_command_timeout(
    api: Api, pg_proxy: Proxy
) -> None:
    db = api.ctx.db
    with pytest.raises(StoreUnavailable):
        async with db.read() as conn:
            pg_proxy.set("pause")  # mid-transaction
            started = time.monotonic()
            await conn.execute(sa.text("SELECT 1"))
    # 1 s command timeout, then the connection is dropped without a goodbye that would wait
    assert time.monotonic() - started < 1.0 + 0.5
    pg_proxy.set("pass")
    async with db.read() as conn:  # the pool replaced the connection
        assert await conn.scalar(sa.text("SELECT 1")) == 1


@postgresql_only
async def test_a_stopped_database_is_503_at_once_and_cut_connections_heal(
    api: Api, pg_proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    _, headers = await api.user_with_token("+14155550100")
    pg_proxy.set("refuse")
    pg_proxy.close()  # every pooled connection is cut, and new ones are refused
    started = time.monotonic()
    r = await api.client.get("/v1/events", headers=headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    assert time.monotonic() - started < 1.0
    pg_proxy.set("pass")
    assert await _status(api, "/v1/events", headers) == 200
    pg_proxy.close()  # cut again while idle: the pool's ping notices, the request never does
    assert await _status(api, "/v1/events", headers) == 200
    no_error_logged(caplog)


# (PostgreSQL only: SQLite waits for a pooled connection as long as for its file lock)
@postgresql_only
async def test_a_full_pool_is_503_overloaded_with_retry_after(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.db_pool_size, settings.db_max_overflow = 1, 0
    async with running(settings) as api:
        _, headers = await api.user_with_token("+14155550100")
        async with api.ctx.db.read():  # the only connection is busy
            started = time.monotonic()
            r = await api.client.get("/v1/events", headers=headers)
            assert time.monotonic() - started < 0.5 + 0.5
        assert_overloaded(r)
        assert await _status(api, "/v1/events", headers) == 200
    no_error_logged(caplog)
