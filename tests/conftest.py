"""Shared fixtures: a real database per test on SQLite and on PostgreSQL, the app, a client.

Each backend gets one migrated template per test session; every test then gets its own copy
(a file copy on SQLite, `CREATE DATABASE … TEMPLATE` on PostgreSQL), so tests are isolated and
fast, and the schema always comes from the Alembic migrations. A template is as a server's
first start leaves it (its private-discovery key made; the key file is copied into each test's
data folder), so each test's start finds its key as a restarted server does.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from contactsync.server.app import create_app
from contactsync.server.bus.memory import MemoryBus
from contactsync.server.clock import ManualClock, SystemClock
from contactsync.server.config import Settings
from contactsync.server.context import Context
from contactsync.server.services import private_discovery
from contactsync.server.services.otp_senders import MemorySender
from contactsync.server.store import migrate
from contactsync.server.store.database import Database
from tests import compile_cache

if os.environ.get("CONTACTSYNC_TEST_SHARE_COMPILED", "1") != "0":
    compile_cache.share()

ADMIN_KEY = "csadmin_test-key-0123456789abcdefghijklmnop"
PG_ADMIN_URL = os.environ.get(
    "CONTACTSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]
TESTS = Path(__file__).parent
# Tests that run real server processes, CLI subprocesses or a browser: left out of the fast
# loop (`scripts/test -m "not slow"`), which keeps the unit and in-process API tests.
SLOW_FOLDERS = ("e2e", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS).parts
        if parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


def pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _pg_exec(*statements: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(url: str, data_dir: Path | None = None) -> None:
    """Migrate; with `data_dir`, also what a server's first start there does to the database
    (its private-discovery key, kept in `data_dir`), which every test's start would otherwise
    do again."""
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
        if data_dir is not None:
            settings = Settings(data_dir=data_dir, admin_key=ADMIN_KEY, otp_sender="memory")
            ctx = Context(settings=settings, db=db, bus=MemoryBus(), clock=SystemClock())
            await private_discovery.ensure_key(ctx)
    finally:
        await db.dispose()


# Everything a test can leave in a database that a fresh copy would not have, once the rows
# are put back: the schema (a migration test may alter it).
_PG_SCHEMA = """
    SELECT md5(string_agg(c.relname || ':' || c.relkind::text || ':' || coalesce(a.cols, ''), ','
                          ORDER BY c.relname))
    FROM pg_class c
    LEFT JOIN LATERAL (
        SELECT string_agg(attname || ' ' || atttypid::text, ',' ORDER BY attnum) AS cols
        FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped
    ) a ON true
    WHERE c.relnamespace = 'public'::regnamespace
"""


async def _pg_reset_script(template: str) -> tuple[str, str]:
    """The SQL that puts a used copy of `template` back as it was made (its tables' rows and
    its sequences), and the template's schema fingerprint."""
    conn = await asyncpg.connect(pg_url(template))
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        lines = ["SET LOCAL session_replication_role = replica", "SET LOCAL lock_timeout = '2s'"]
        for table in tables:
            rows = await conn.fetchval(f"SELECT coalesce(json_agg(t), '[]') FROM \"{table}\" t")
            lines.append(f'DELETE FROM "{table}"')
            if rows != "[]":
                lines.append(
                    f'INSERT INTO "{table}" SELECT * FROM '
                    f'json_populate_recordset(NULL::"{table}", $seed${rows}$seed$)'
                )
        for r in await conn.fetch(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences "
            "WHERE schemaname = 'public'"
        ):
            value, called = (r["last_value"], "true") if r["last_value"] else (1, "false")
            lines.append(
                f'SELECT setval(\'"{r["schemaname"]}"."{r["sequencename"]}"\', {value}, {called})'
            )
        schema = await conn.fetchval(_PG_SCHEMA)
    finally:
        await conn.close()
    return "BEGIN;\n" + ";\n".join(lines) + ";\nCOMMIT;", str(schema)


class Templates:
    """Migrated template databases, made on first use and dropped at the end of the session.

    On PostgreSQL a fresh copy of the template costs the server about 40 ms to make, 70 ms to
    drop, and its first connections warm empty catalog caches (another ~60 ms of a test's
    time). So each worker keeps a few copies and reuses them: a copy given back is put back as
    it was made (every table's rows deleted and the template's seed rows inserted, sequences
    reset) by a thread of its own while the next test runs, and handed out again. A copy whose
    schema a test changed, or that cannot be reset (a connection still holds a lock), is
    dropped and replaced by a new copy. tests/test_test_databases.py checks that a reused copy
    is indistinguishable from a new one.
    """

    READY = 1

    def __init__(self, root: Path) -> None:
        self.root = root
        # The templates' data folder, as a server's first start leaves it (the discovery key
        # both templates use): a test's data folder starts as a copy (`start_data`).
        self.data = root / "data"
        self.sqlite: Path | None = None
        self.pg: str | None = None
        self.pg_reset = ""
        self.pg_schema = ""
        self.copies: set[str] = set()
        self._lock = threading.Lock()
        self._ready: queue.Queue[str] = queue.Queue()
        self._work: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def sqlite_template(self) -> Path:
        with self._lock:
            if self.sqlite is None:
                path = self.root / "template.db"
                asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}", self.data))
                self.sqlite = path
            return self.sqlite

    def pg_template(self) -> str:
        with self._lock:
            if self.pg is None:
                name = f"cs_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
                asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
                asyncio.run(
                    _migrate(
                        pg_url(name).replace("postgresql://", "postgresql+asyncpg://"), self.data
                    )
                )
                self.pg_reset, self.pg_schema = asyncio.run(_pg_reset_script(name))
                self.pg = name
            return self.pg

    def start_data(self, data_dir: Path) -> None:
        """Make `data_dir` what the templates' first start left (after a template is made)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        for item in self.data.iterdir():
            shutil.copy2(item, data_dir / item.name)

    def pg_database(self) -> str:
        """A database as fresh as a new copy of the template; give it back with `pg_release`."""
        template = self.pg_template()
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, args=(template,), name="pg-copies", daemon=True
                )
                self._worker.start()
                for _ in range(self.READY):
                    self._work.put("")  # "" asks for one more copy
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            self._work.put("")
            return self._ready.get(timeout=120)

    def pg_release(self, name: str) -> None:
        self._work.put(name)

    async def reset(self, name: str, conns: dict[str, asyncpg.Connection] | None = None) -> bool:
        """Put a used copy back as it was made; False when it cannot be (drop it then).
        `conns` keeps each copy's connection for its next reset (a new server process and
        its cold catalog caches cost more than the reset itself)."""
        kept = conns.pop(name, None) if conns is not None else None
        try:
            conn = kept or await asyncpg.connect(pg_url(name), timeout=30)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            await conn.execute(self.pg_reset)
            fresh = bool(await conn.fetchval(_PG_SCHEMA) == self.pg_schema)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            fresh = False
        if fresh and conns is not None:
            conns[name] = conn
        else:
            await conn.close()
        return fresh

    def _run(self, template: str) -> None:
        async def main() -> None:
            conn = await asyncpg.connect(PG_ADMIN_URL)
            kept: dict[str, asyncpg.Connection] = {}
            try:
                while (item := await asyncio.to_thread(self._work.get)) is not None:
                    if item and await self.reset(item, kept):
                        self._ready.put(item)
                        continue
                    if item:
                        self.copies.discard(item)
                        await conn.execute(f'DROP DATABASE IF EXISTS "{item}" WITH (FORCE)')
                    name = f"cs_t_{uuid.uuid4().hex[:12]}"
                    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    self.copies.add(name)
                    self._ready.put(name)
            finally:
                for kept_conn in kept.values():
                    await kept_conn.close()
                await conn.close()

        asyncio.run(main())

    def close(self) -> None:
        if self._worker is not None:
            self._work.put(None)
            self._worker.join(60)
            asyncio.run(
                _pg_exec(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in self.copies))
            )
        if self.pg is not None:
            asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{self.pg}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    t = Templates(tmp_path_factory.mktemp("templates"))
    yield t
    t.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(backend: str, templates: Templates, tmp_path: Path) -> AsyncIterator[str]:
    """An async SQLAlchemy URL to a fresh, migrated database of the test's backend."""
    if backend == "sqlite":
        path = tmp_path / "contactsync.db"
        shutil.copyfile(await asyncio.to_thread(templates.sqlite_template), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = await asyncio.to_thread(templates.pg_database)
    try:
        yield pg_url(name).replace("postgresql://", "postgresql+asyncpg://")
    finally:
        templates.pg_release(name)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SystemClock().now_ms())


@pytest.fixture
def otp_sender() -> MemorySender:
    return MemorySender()


@pytest.fixture(scope="session")
def settings_template() -> Settings:
    """The tests' settings but for each test's own folder and database, validated (and read
    from the environment, as a server's are) once a worker, not once a test (3 ms each)."""
    return Settings(
        data_dir=Path("data"),
        admin_key=ADMIN_KEY,
        otp_sender="memory",
        # Tests fire bursts of concurrent requests on a shared, loaded machine: let them wait
        # for a pooled connection (the 1 s default answers 503 overloaded: tests/faults/).
        db_pool_timeout_seconds=30,
        # Likewise a connection or a statement can take seconds when eight processes share two
        # cores; tests/faults sets the real, short timeouts where they are the point.
        db_connect_timeout_seconds=30,
        db_command_timeout_seconds=60,
        # and bursts of concurrent requests queue for a slot rather than being refused at once
        # (tests/test_overload.py sets the real, short wait).
        overload_wait_seconds=30,
        # numbers are read in process: a test app is made per test, and a pool of worker
        # processes per app would cost more than the tests' few big uploads
        # (tests/test_number_workers.py runs the pool)
        number_workers=0,
    )


@pytest.fixture
def settings(
    settings_template: Settings, db_url: str, tmp_path: Path, templates: Templates
) -> Settings:
    # The database is a copy of a template that a server has started on once; its data
    # folder (the discovery key) is a copy of that start's. (a copy: a test may change its
    # settings)
    templates.start_data(tmp_path / "data")
    return settings_template.model_copy(
        update={"data_dir": tmp_path / "data", "database_url": db_url}
    )


class Api:
    """A test client with the small helpers every API test needs."""

    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    async def create_user(
        self, phone: str, name: str | None = None, region: str | None = None, **more: Any
    ) -> dict[str, Any]:
        """POST /v1/admin/users; `more` are further fields (announce_join_to=…, …)."""
        body: dict[str, Any] = {"phone": phone, **more}
        if name is not None:
            body["name"] = name
        if region is not None:
            body["region"] = region
        response = await self.client.post("/v1/admin/users", json=body, headers=self.admin)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def token(self, user_id: int, device_id: str = "phone-1") -> dict[str, str]:
        response = await self.client.post(
            f"/v1/admin/users/{user_id}/tokens", json={"device_id": device_id}, headers=self.admin
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def user_with_token(
        self, phone: str, name: str | None = None, device_id: str = "phone-1"
    ) -> tuple[dict[str, Any], dict[str, str]]:
        user = await self.create_user(phone, name)
        return user, await self.token(user["user_id"], device_id)

    async def events(self, headers: dict[str, str], after: int = 0) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/events?after={after}&limit=1000", headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json()["events"])


OpenApp = Callable[..., Awaitable[Api]]
PEER = "203.0.113.7"  # the address the tests' client connects from


@pytest.fixture
async def open_app(settings: Settings, clock: ManualClock) -> AsyncIterator[OpenApp]:
    """Build apps with some settings changed (`open_app(name=value, ...)`), each with its
    client (connecting from PEER); all are stopped at the end of the test."""
    opened: list[LifespanManager] = []

    async def make(**changes: object) -> Api:
        app = create_app(
            settings.model_copy(update=changes), clock=clock, otp_sender=MemorySender()
        )
        manager = LifespanManager(app)
        await manager.__aenter__()
        opened.append(manager)
        transport = httpx.ASGITransport(app=manager.app, client=(PEER, 40000))
        return Api(httpx.AsyncClient(transport=transport, base_url="http://testserver"), app)

    yield make
    for manager in opened:
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def api(
    settings: Settings, clock: ManualClock, otp_sender: MemorySender
) -> AsyncIterator[Api]:
    app = create_app(settings, clock=clock, otp_sender=otp_sender)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, app)
