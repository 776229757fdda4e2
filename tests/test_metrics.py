"""`GET /metrics`: who may scrape, and that the figures move with the traffic. Both databases."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from contactsync.server.app import create_app
from contactsync.server.clock import ManualClock
from contactsync.server.config import Settings
from contactsync.server.metrics import DB_GAUGE_TTL_S, Metrics
from tests.conftest import Api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await api.client.get("/metrics", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def requests(
    figures: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    method: str,
    route: str,
    status: str,
) -> float:
    key = (
        "contactsync_http_requests_total",
        (("method", method), ("route", route), ("status", status)),
    )
    return figures.get(key, 0.0)


async def test_scraping_needs_the_admin_key_or_the_metrics_token(api: Api) -> None:
    assert (await api.client.get("/metrics")).status_code == 401
    _, user = await api.user_with_token("+14155550101")
    r = await api.client.get("/metrics", headers=user)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = await api.client.get("/metrics", headers={"Authorization": "Bearer csadmin_nope"})
    assert r.status_code == 401
    assert (await api.client.get("/metrics", headers=api.admin)).status_code == 200


async def test_a_scrape_only_token_works_when_configured(tmp_path: Path, db_url: str) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    settings = Settings(
        data_dir=tmp_path / "d",
        database_url=db_url,
        admin_key="csadmin_metrics-test-key-0123456789abcdef",
        metrics_token="scrape-me-0123456789",
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.get(
                "/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"}
            )
            assert ok.status_code == 200 and "contactsync_users" in ok.text
            bad = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert bad.status_code == 401
            # The scrape token is not an admin key.
            r = await client.get(
                "/v1/admin/users/1", headers={"Authorization": "Bearer scrape-me-0123456789"}
            )
            assert r.status_code == 403


async def test_counters_move_with_traffic(api: Api, clock: ManualClock) -> None:
    before = await scrape(api)
    assert before[("contactsync_users", ())] == 0
    ann, ann_token = await api.user_with_token("+14155550101", "Ann")
    await api.create_user("+14155550102")
    await api.create_user("+14155550102")  # 200: already registered
    await api.client.get(f"/v1/admin/users/{ann['user_id']}", headers=api.admin)
    await api.client.get("/v1/admin/users/999999", headers=api.admin)
    await api.client.get("/no/such/path/+14155550101")
    r = await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": "+14155550102"}, {"phone": "+14155550103"}]},
        headers=ann_token,
    )
    assert r.status_code == 200
    cached = await scrape(api)
    # Database figures are read at most once per DB_GAUGE_TTL_S (COUNT(*) on big tables).
    assert cached[("contactsync_users", ())] == 0
    clock.advance(DB_GAUGE_TTL_S)
    after = await scrape(api)

    def moved(method: str, route: str, status: str) -> float:
        return requests(after, method, route, status) - requests(before, method, route, status)

    assert moved("POST", "/v1/admin/users", "201") == 2
    assert moved("POST", "/v1/admin/users", "200") == 1
    assert moved("GET", "/v1/admin/users/{user_id}", "200") == 1
    assert moved("GET", "/v1/admin/users/{user_id}", "404") == 1
    assert moved("POST", "/v1/addressbook", "200") == 1
    assert moved("GET", "<unmatched>", "404") == 1
    # Raw paths never become labels (they carry ids and numbers).
    assert not any("5550101" in str(labels) for _, labels in after)
    latency_key = (
        "contactsync_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/admin/users")),
    )
    assert after[latency_key] - before.get(latency_key, 0) == 3
    assert after[("contactsync_users", ())] == 2
    assert after[("contactsync_book_entries", ())] == 2


async def test_product_counters_move_with_real_actions(api: Api) -> None:
    _, ann = await api.user_with_token("+14155550101")
    r = await api.client.post(
        "/v1/addressbook",
        headers=ann,
        json={
            "contacts": [{"phone": "+14155550102"}, {"phone": "+14155550103"}, {"phone": "junk"}]
        },
    )
    assert r.status_code == 200
    await api.create_user("+14155550102")  # joins: Ann hears contact.joined
    refused = await api.client.post(
        "/v1/addressbook",
        headers=ann,
        json={"contacts": [{"phone": "+14155550104"}], "region": "ZZ"},
    )
    assert refused.status_code == 422  # a failed request counts nothing
    await api.events(ann)
    figures = await scrape(api)
    assert figures[("contactsync_contacts_uploaded_total", ())] == 3
    assert figures[("contactsync_joins_total", ())] == 2
    assert figures[("contactsync_matches_total", ())] == 0
    written = ("contactsync_events_written_total", (("type", "contact.joined"),))
    assert figures[written] == 1
    assert figures[("contactsync_events_delivered_total", (("channel", "poll"),))] == 1
    r = await api.client.post(
        "/v1/addressbook", headers=ann, json={"contacts": [{"phone": "+14155550102"}]}
    )
    assert len(r.json()["registered"]) == 1
    assert (await scrape(api))[("contactsync_matches_total", ())] == 1


async def test_service_counters_are_exposed_under_their_documented_names(api: Api) -> None:
    metrics: Metrics = api.ctx.services.metrics
    metrics.contacts_uploaded.inc(5)
    metrics.matches.inc(2)
    metrics.joins.inc()
    metrics.events_written.labels("contact.joined").inc(3)
    metrics.events_delivered.labels("ws").inc(4)
    metrics.live_sockets.inc()
    metrics.webhook_failures.inc()
    figures = await scrape(api)
    assert figures[("contactsync_contacts_uploaded_total", ())] == 5
    assert figures[("contactsync_matches_total", ())] == 2
    assert figures[("contactsync_joins_total", ())] == 1
    assert figures[("contactsync_events_written_total", (("type", "contact.joined"),))] == 3
    assert figures[("contactsync_events_delivered_total", (("channel", "ws"),))] == 4
    assert figures[("contactsync_live_sockets", ())] == 1
    assert figures[("contactsync_webhook_failures_total", ())] == 1


async def test_each_app_has_its_own_registry(api: Api, tmp_path: Path) -> None:
    other = create_app(Settings(data_dir=tmp_path / "other"))
    api.ctx.services.metrics.joins.inc(7)
    assert other.state.ctx.services.metrics.joins._value.get() == 0
    assert other.state.ctx.services.metrics.registry is not api.ctx.services.metrics.registry
