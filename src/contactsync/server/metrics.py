"""Prometheus metrics: `GET /metrics`, one registry per app (never the process-global one).

Three kinds of figure:

- Per-request, recorded by `edge.Edge`: `contactsync_http_requests_total{method,route,
  status}` and `contactsync_http_request_duration_seconds{method,route}` (a histogram). `route`
  is the route template (`/v1/admin/users/{user_id}`), or `<unmatched>`, so labels stay bounded.
- Counters the services bump, reached as `ctx.services.metrics` (a `Metrics`):

  ====================  =============================================  ==========================
  attribute             metric                                         call it
  ====================  =============================================  ==========================
  contacts_uploaded     contactsync_contacts_uploaded_total            `.inc(n)` per upload, n =
                                                                       contacts in the request
  matches               contactsync_matches_total                      `.inc(n)` registered
                                                                       contacts found (discovery)
  joins                 contactsync_joins_total                        `.inc()` per new user
  events_written        contactsync_events_written_total{type}         `.labels(type).inc(n)`
  events_delivered      contactsync_events_delivered_total{channel}    `.labels("ws"|"webhook"|
                                                                       "poll").inc(n)`
  live_sockets          contactsync_live_sockets (gauge)               `.inc()` on accept,
                                                                       `.dec()` on close
  webhook_failures      contactsync_webhook_failures_total             `.inc()` per failed POST
  ====================  =============================================  ==========================

  These count what this process did since it started (Prometheus' `rate()` and `sum()` across
  processes do the rest). Code that may run without an app (scripts, benchmarks) can use
  `metrics_of(ctx)`, which returns a detached `Metrics` when none is installed.
- Gauges read from the database at scrape time, where the database is the truth:
  `contactsync_users`, `contactsync_book_entries`, and `contactsync_outbox_events{state}` once
  the push outbox table exists. They are cached for `DB_GAUGE_TTL_S` so a tight scrape interval
  cannot turn into a stream of COUNT(*) queries on big tables.

`/metrics` needs a bearer credential: the admin key, or the scrape-only
`CONTACTSYNC_METRICS_TOKEN` when one is set (give Prometheus that one, not the admin key).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from contactsync.errors import Unauthorized
from contactsync.server.context import Context
from contactsync.server.services import admin, secrets
from contactsync.server.store.tables import book_entries, users

DB_GAUGE_TTL_S = 10.0
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The app's metrics and the registry they live in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "contactsync_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "contactsync_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.contacts_uploaded = Counter(
            "contactsync_contacts_uploaded",
            "Contacts received in address-book uploads.",
            registry=r,
        )
        self.matches = Counter(
            "contactsync_matches", "Uploaded contacts found to be registered users.", registry=r
        )
        self.joins = Counter("contactsync_joins", "Users registered.", registry=r)
        self.events_written = Counter(
            "contactsync_events_written", "Events appended to user logs.", ["type"], registry=r
        )
        self.events_delivered = Counter(
            "contactsync_events_delivered",
            "Events handed to a client, by channel (ws, webhook, poll).",
            ["channel"],
            registry=r,
        )
        self.live_sockets = Gauge(
            "contactsync_live_sockets", "WebSocket connections open in this process.", registry=r
        )
        self.webhook_failures = Counter(
            "contactsync_webhook_failures", "Push webhook POSTs that failed.", registry=r
        )
        self.users = Gauge("contactsync_users", "Registered users (from the database).", registry=r)
        self.book_entries = Gauge(
            "contactsync_book_entries", "Address-book entries (from the database).", registry=r
        )
        self.outbox = Gauge(
            "contactsync_outbox_events",
            "Push outbox rows by state (from the database; absent until the outbox exists).",
            ["state"],
            registry=r,
        )
        self._db_read_at = -DB_GAUGE_TTL_S

    def record(self, counts: dict[str, int]) -> None:
        """Add what a committed transaction counted (`Tx.counts`)."""
        for key, n in counts.items():
            if key.startswith("event:"):
                self.events_written.labels(key[6:]).inc(n)
            elif key in ("contacts_uploaded", "matches", "joins"):
                getattr(self, key).inc(n)

    async def refresh_from_db(self, ctx: Context, *, force: bool = False) -> None:
        """Set the database gauges, at most once per `DB_GAUGE_TTL_S` of the app's clock."""
        now = ctx.clock.now_ms() / 1000
        if not force and 0 <= now - self._db_read_at < DB_GAUGE_TTL_S:
            return
        figures = await db_figures(ctx)
        self.users.set(figures["users"])
        self.book_entries.set(figures["book_entries"])
        for state, count in (figures.get("outbox") or {}).items():
            self.outbox.labels(state).set(count)
        self._db_read_at = now

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def metrics_of(ctx: Context) -> Metrics:
    """The app's `Metrics`, or a detached one when the context has none (scripts, benchmarks)."""
    if ctx.services.metrics is None:
        ctx.services.metrics = Metrics()
    return ctx.services.metrics


async def table_exists(conn: Any, name: str) -> bool:
    """Whether a table is in the schema (for figures from tables other features add)."""
    return bool(await conn.run_sync(lambda sync: sa.inspect(sync).has_table(name)))


async def outbox_counts(conn: Any) -> dict[str, int] | None:
    """Push outbox rows by state, or None when this install has no outbox table."""
    if not await table_exists(conn, "push_outbox"):
        return None
    rows = await conn.execute(
        sa.text("SELECT state, COUNT(*) AS n FROM push_outbox GROUP BY state")
    )
    counts = {"pending": 0, "failed": 0}
    counts.update({str(row.state): int(row.n) for row in rows})
    return counts


async def db_figures(ctx: Context) -> dict[str, Any]:
    """Users, address-book entries and the outbox by state, read in one transaction."""
    async with ctx.read() as tx:
        user_count = await tx.conn.scalar(sa.select(sa.func.count()).select_from(users))
        entry_count = await tx.conn.scalar(sa.select(sa.func.count()).select_from(book_entries))
        outbox = await outbox_counts(tx.conn)
    return {"users": int(user_count or 0), "book_entries": int(entry_count or 0), "outbox": outbox}


router = APIRouter(tags=["operations"])


def _may_scrape(request: Request, ctx: Context) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return False
    token = getattr(ctx.settings, "metrics_token", None)
    if token is not None and secrets.same(token.get_secret_value(), value):
        return True
    key = ctx.services.admin_key
    return key is not None and admin.is_admin(key.key_hash, value)


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    if not _may_scrape(request, ctx):
        raise Unauthorized("Send the admin key or the metrics token as a bearer token.")
    metrics = metrics_of(ctx)
    await metrics.refresh_from_db(ctx)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
