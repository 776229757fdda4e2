"""X-Forwarded-For is believed only from CONTACTSYNC_TRUSTED_PROXIES (default: none), so the
per-address limits (OTP requests, console sign-in) cannot be sidestepped with a made-up
header; from a trusted proxy the address it names is the client's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from contactsync.server.config import Settings
from tests.conftest import ADMIN_KEY, PEER, Api, OpenApp
from tests.e2e.server import ServerProcess
from tests.test_console import csrf_of

LIMIT = 3


@pytest.fixture
def open_app(open_app: OpenApp) -> OpenApp:
    """conftest's, with the per-address limit at LIMIT."""

    async def make(**changes: object) -> Api:
        return await open_app(otp_per_address_per_hour=LIMIT, **changes)

    return make


async def otp(api: Api, number: int, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    r = await api.client.post(
        "/v1/auth/otp/request", json={"phone": f"+1415555{number:04d}"}, headers=headers
    )
    return r.status_code


async def test_forwarded_for_is_ignored_by_default(open_app: OpenApp) -> None:
    api = await open_app()
    # Each request claims another address; all of them count against the real peer.
    codes = [await otp(api, 100 + i, f"198.51.100.{i}") for i in range(LIMIT + 1)]
    assert codes == [202] * LIMIT + [429]


async def test_forwarded_for_is_honoured_from_a_trusted_proxy(open_app: OpenApp) -> None:
    api = await open_app(trusted_proxies=("203.0.113.0/24",))
    # Through the proxy, each client has its own limit ...
    codes = [await otp(api, 100 + i, f"198.51.100.{i}") for i in range(LIMIT + 1)]
    assert codes == [202] * (LIMIT + 1)
    # ... and one client behind it is still limited, whatever the proxy's own address.
    codes = [await otp(api, 200 + i, "192.0.2.1") for i in range(LIMIT + 1)]
    assert codes == [202] * LIMIT + [429]
    # A client cannot pick its address by putting one before the proxy's: the address the
    # trusted proxy appended (the rightmost untrusted one) is the client's.
    assert await otp(api, 300, "198.51.100.77, 192.0.2.1") == 429


async def test_an_untrusted_proxy_is_not_believed(open_app: OpenApp) -> None:
    api = await open_app(trusted_proxies=("10.0.0.0/8",))
    codes = [await otp(api, 100 + i, f"198.51.100.{i}") for i in range(LIMIT + 1)]
    assert codes == [202] * LIMIT + [429]


async def wrong_sign_ins(api: Api, count: int, forwarded: list[str]) -> list[int]:
    codes = []
    for i in range(count):
        headers = {"X-Forwarded-For": forwarded[i % len(forwarded)]}
        form = await api.client.get("/console/login")
        r = await api.client.post(
            "/console/login",
            data={"key": "csadmin_wrong", "csrf": csrf_of(form.text)},
            headers=headers,
        )
        codes.append(r.status_code)
    return codes


async def test_console_sign_in_limit_ignores_a_made_up_address(open_app: OpenApp) -> None:
    from contactsync.server.console.sessions import LOGIN_ATTEMPTS

    api = await open_app()
    spoofed = [f"198.51.100.{i}" for i in range(LOGIN_ATTEMPTS + 1)]
    codes = await wrong_sign_ins(api, LOGIN_ATTEMPTS + 1, spoofed)
    assert codes == [401] * LOGIN_ATTEMPTS + [429]

    trusted = await open_app(trusted_proxies=(PEER,))
    codes = await wrong_sign_ins(trusted, LOGIN_ATTEMPTS + 1, spoofed)
    assert codes == [401] * (LOGIN_ATTEMPTS + 1)


def test_trusted_proxies_setting_reads_addresses_and_networks(tmp_path: Path) -> None:
    settings = Settings(trusted_proxies=" 10.0.0.1, 10.1.2.3/16,::1 ")  # type: ignore[arg-type]
    assert settings.trusted_proxies == ("10.0.0.1", "10.1.0.0/16", "::1")
    assert Settings().trusted_proxies == ()
    with pytest.raises(ValidationError):
        Settings(trusted_proxies="10.0.0.1,proxy.local")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [False, True])
def test_a_real_server_believes_forwarded_for_only_from_trusted_proxies(
    tmp_path: Path, trusted: bool
) -> None:
    """uvicorn's own proxy handling would believe any loopback peer: it must be off."""
    env = {"CONTACTSYNC_OTP_PER_ADDRESS_PER_HOUR": str(LIMIT), "CONTACTSYNC_OTP_SENDER": "console"}
    if trusted:
        env["CONTACTSYNC_TRUSTED_PROXIES"] = "127.0.0.1"
    server = ServerProcess(tmp_path / "data", admin_key=ADMIN_KEY, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            codes = [
                client.post(
                    "/v1/auth/otp/request",
                    json={"phone": f"+1415555{100 + i:04d}"},
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},
                ).status_code
                for i in range(LIMIT + 1)
            ]
    finally:
        server.stop()
    assert codes == ([202] * (LIMIT + 1) if trusted else [202] * LIMIT + [429])
