"""Process settings: built once from CONTACTSYNC_* variables and command-line options.

These are the settings an operator gives a process (where the database is, which port). The
settings an app team changes at run time (notify_contact_joined, quotas, the push webhook) live
in the database instead: see `services/app_settings.py`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contactsync.phone import valid_region


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTACTSYNC_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    database_url: str | None = None
    admin_key: SecretStr | None = None
    redis_url: str | None = None
    default_region: str | None = None
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"
    # A scrape-only bearer token for GET /metrics (the admin key works too).
    metrics_token: SecretStr | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    # Every wait on the database is bounded (seconds): opening a connection, one statement
    # (a database that stops answering ends the request with 503 store_unavailable), and
    # waiting for a free connection of the pool (503 overloaded). Pool: size + overflow. The
    # pool keeps as many connections as requests may run at once (max_concurrent_requests):
    # an overflow connection is closed when it is given back, so a pool smaller than the
    # steady load opens and closes a connection (and a PostgreSQL backend) every few requests.
    db_connect_timeout_seconds: float = 5.0
    db_command_timeout_seconds: float = 10.0
    db_pool_timeout_seconds: float = 1.0
    db_pool_size: int = 16
    db_max_overflow: int = 8
    # How long a process may keep app settings and token sessions it read (changes reach
    # every process over the bus at once; this bounds a lost bus message). 0: no caching.
    cache_ttl_seconds: float = 5.0
    # Contact discovery: `stored` keeps address books (and tells holders "X joined");
    # `private` keeps none and serves the OPRF filter instead (docs/privacy.md). The OPRF key
    # file (`<data_dir>/discovery_keys` by default) must be the same for every process.
    discovery_mode: Literal["stored", "private"] = "stored"
    discovery_key_file: Path | None = None
    # At most this many HTTP requests are worked on at once in one process; one that gets no
    # slot within overload_wait_seconds is answered 503 overloaded with Retry-After (it
    # changed nothing), so accepted requests stay fast and the rest are refused at once.
    # 16 rather than 32 (bench/bench_throughput.py, 200 clients on 2 cores, alternating runs):
    # accepted p99 0.76-0.92 s against 1.0-1.55 s, same throughput and CPU per request.
    max_concurrent_requests: int = 16
    overload_wait_seconds: float = 0.5
    # Worker processes that read the phone numbers of a big request (2,000+ new numbers: a
    # first upload) on the other cores, so the event loop keeps serving the rest meanwhile
    # (server/number_workers.py). None: the machine's cores, at most 4 (none on one core),
    # shared among `serve --workers` processes; 0: always read in the request's process.
    number_workers: int | None = Field(default=None, ge=0, le=64)

    otp_sender: Literal["console", "webhook", "memory"] = "console"
    otp_webhook_url: str | None = None
    otp_webhook_secret: SecretStr | None = None
    # The key OTP codes are hashed with; default: made on first use in <data_dir>/otp_pepper.
    # Never stored in the database. Give every host the same one when several share a database.
    otp_pepper: SecretStr | None = Field(default=None, min_length=32)
    otp_ttl_seconds: int = 300
    otp_max_attempts: int = 5
    otp_per_phone_per_hour: int = 5
    otp_per_address_per_hour: int = 30
    # Reverse proxies whose X-Forwarded-For is believed: addresses or CIDR networks,
    # comma-separated. Default none: the connecting peer is the client, so a made-up header
    # cannot move a request to another address's limits (OTP, console sign-in).
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()

    # Real-time delivery (WebSocket and push webhooks).
    ws_heartbeat_seconds: float = 25.0
    ws_auth_timeout_seconds: float = 10.0
    ws_send_timeout_seconds: float = 10.0
    ws_reauth_seconds: float = 60.0
    ws_max_sockets_per_user: int = 20
    # How often each process trims events past `event_retention_days` (services/retention.py).
    event_trim_interval_seconds: float = 3600.0
    push_timeout_seconds: float = 10.0
    push_retry_base_seconds: float = 2.0
    push_retry_max_seconds: float = 900.0
    push_batch_size: int = 100
    push_concurrency: int = 4

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        out = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            try:
                if "/" in item:
                    out.append(str(ipaddress.ip_network(item, strict=False)))
                else:
                    out.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return tuple(out)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        region = valid_region(value)
        if region is None:
            raise ValueError(f"unknown region {value!r}")
        return region

    def resolved_discovery_key_file(self) -> Path:
        return self.discovery_key_file or self.data_dir / "discovery_keys"

    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: the embedded SQLite file unless a URL is given."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'contactsync.db').resolve()}"
        return async_url(self.database_url)


def async_url(url: str) -> str:
    """Map the usual database URLs to their async drivers."""
    for prefix, driver in (
        ("postgresql+asyncpg://", None),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite+aiosqlite://", None),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return url if driver is None else driver + url[len(prefix) :]
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")
