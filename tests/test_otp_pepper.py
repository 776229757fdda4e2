"""The OTP pepper is kept outside the database (CONTACTSYNC_OTP_PEPPER or <data_dir>/otp_pepper,
mode 0600), so a database dump alone cannot be used to brute-force a live code."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine

from contactsync.server.app import create_app
from contactsync.server.clock import ManualClock
from contactsync.server.config import Settings
from contactsync.server.services import secrets
from contactsync.server.services.otp_senders import MemorySender
from contactsync.server.store import migrate
from contactsync.server.store.database import Database
from tests.conftest import Api

PHONE = "+14155550100"


async def dump(db_url: str) -> str:
    """Every row of every table as text: what someone holding a database dump holds."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            rows = []
            for name in names:
                found = await conn.execute(sa.text(f'SELECT * FROM "{name}"'))
                rows += [repr(tuple(row)) for row in found]
    finally:
        await engine.dispose()
    return "\n".join(rows)


async def login(api: Api, sender: MemorySender, phone: str = PHONE) -> httpx.Response:
    r = await api.client.post("/v1/auth/otp/request", json={"phone": phone})
    assert r.status_code == 202, r.text
    return await api.client.post(
        "/v1/auth/otp/verify", json={"phone": phone, "code": sender.codes[phone], "device_id": "d"}
    )


async def test_a_database_dump_does_not_hold_the_pepper(
    api: Api, otp_sender: MemorySender, settings: Settings, db_url: str
) -> None:
    r = await api.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    assert r.status_code == 202
    path = settings.data_dir / "otp_pepper"
    pepper = path.read_text().strip()
    assert len(pepper) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    dumped = await dump(db_url)
    # The dump holds the code's hash, but not the key it was made with.
    assert secrets.keyed_hash(pepper, f"{PHONE}:{otp_sender.codes[PHONE]}") in dumped
    assert pepper not in dumped
    assert "otp_pepper" not in dumped
    r = await api.client.post(
        "/v1/auth/otp/verify",
        json={"phone": PHONE, "code": otp_sender.codes[PHONE], "device_id": "d"},
    )
    assert r.status_code == 200, r.text


async def test_a_code_survives_a_restart(settings: Settings, clock: ManualClock) -> None:
    """The pepper file is read again by the next process, so a code it issued still works."""
    sender = MemorySender()

    async def client(app: Any) -> Any:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    first = create_app(settings, clock=clock, otp_sender=sender)
    async with LifespanManager(first) as manager, await client(manager.app) as c:
        assert (await c.post("/v1/auth/otp/request", json={"phone": PHONE})).status_code == 202
    second = create_app(settings, clock=clock, otp_sender=sender)
    async with LifespanManager(second) as manager, await client(manager.app) as c:
        body = {"phone": PHONE, "code": sender.codes[PHONE], "device_id": "d"}
        r = await c.post("/v1/auth/otp/verify", json=body)
        assert r.status_code == 200, r.text


async def test_a_pepper_given_as_a_setting_writes_no_file(
    settings: Settings, clock: ManualClock, db_url: str
) -> None:
    given = "pepper-from-the-environment-0123456789abcdef"
    sender = MemorySender()
    app = create_app(
        settings.model_copy(update={"otp_pepper": SecretStr(given)}), clock=clock, otp_sender=sender
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await login(Api(c, app), sender)
            assert r.status_code == 200, r.text
    assert not (settings.data_dir / "otp_pepper").exists()
    dumped = await dump(db_url)
    assert given not in dumped


def test_the_pepper_setting_must_be_long() -> None:
    with pytest.raises(ValueError):
        Settings(otp_pepper="short")  # type: ignore[arg-type]


def test_processes_starting_together_share_one_pepper(tmp_path: Path) -> None:
    path = tmp_path / "data" / "otp_pepper"
    made = iter(["first-" + "a" * 40, "second-" + "b" * 40])
    one = secrets.private_value(path, lambda: next(made))
    # A second process finding no file at its first look still ends with the same value.
    path_seen_missing = secrets.private_value(path, lambda: next(made))
    assert one == path_seen_missing == "first-" + "a" * 40
    assert sorted(p.name for p in path.parent.iterdir()) == ["otp_pepper"]


async def test_the_upgrade_removes_the_stored_pepper_and_the_codes_made_with_it(
    db_url: str,
) -> None:
    db = Database.from_url(db_url)
    try:
        from alembic import command

        def down(connection: sa.Connection) -> None:
            command.downgrade(migrate.alembic_config(connection), "0010")

        async with db.write() as conn:
            await conn.run_sync(down)
            await conn.execute(
                sa.text("INSERT INTO app_settings (key, value) VALUES ('secret.otp_pepper', :v)"),
                {"v": '"csadmin_old-pepper"'},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO otp_codes (phone, code_hash, expires_at, attempts, created_at)"
                    " VALUES ('+14155550100', 'x', 1, 0, 1)"
                )
            )
        await migrate.upgrade(db)
        async with db.read() as conn:
            keys = (await conn.execute(sa.text("SELECT key FROM app_settings"))).scalars().all()
            codes = await conn.scalar(sa.text("SELECT count(*) FROM otp_codes"))
        assert "secret.otp_pepper" not in keys
        assert codes == 0
    finally:
        await db.dispose()
