"""`contactsync admin …` against a real `contactsync serve` process on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from contactsync.cli import app
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("cli") / "data").start()
    yield process
    process.stop()


def run(
    server: ServerProcess, *args: str, key: str | None = ADMIN_KEY, stdin: str = ""
) -> tuple[int, str, str]:
    options = ["admin", "--url", server.url]
    if key is not None:
        options += ["--admin-key", key]
    result = CliRunner().invoke(app, [*options, *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_users_round_trip(server: ServerProcess) -> None:
    code, out, _ = run(server, "users", "create", "+1 415 555 0111", "--name", "Ann")
    assert code == 0, out
    user = json.loads(out)
    assert user["phone"] == "+14155550111" and user["name"] == "Ann"
    uid = str(user["user_id"])

    code, out, _ = run(server, "users", "token", uid, "phone-1")
    token = json.loads(out)["token"]
    me = httpx.get(server.url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200

    code, out, _ = run(server, "users", "set", uid, "--restricted", "--name", "Ann A.")
    assert (
        code == 0 and json.loads(out)["restricted"] is True and json.loads(out)["name"] == "Ann A."
    )
    code, out, _ = run(server, "users", "get", uid)
    assert json.loads(out)["restricted"] is True
    code, out, _ = run(server, "users", "devices", uid)
    assert [d["device_id"] for d in json.loads(out)["devices"]] == ["phone-1"]

    code, out, _ = run(server, "users", "revoke", uid)
    assert code == 0 and json.loads(out) == {"revoked": 1}
    me = httpx.get(server.url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401

    code, out, _ = run(server, "users", "delete", uid, stdin="n\n")
    assert code == 1  # declined: nothing deleted
    assert run(server, "users", "get", uid)[0] == 0
    code, out, _ = run(server, "users", "delete", uid, "--yes")
    assert code == 0 and json.loads(out) == {"deleted": int(uid)}
    code, _, err = run(server, "users", "get", uid)
    assert code == 1 and "error: not_found" in err


def test_refusals_are_clear_and_exit_non_zero(server: ServerProcess, tmp_path: Path) -> None:
    code, out, err = run(server, "users", "get", "1", key="csadmin_wrong")
    assert code == 1 and out == "" and "error: admin_required" in err
    code, _, err = run(server, "users", "create", "12")
    assert code == 1 and "error: invalid_phone" in err
    code, _, err = run(server, "users", "set", "1")
    assert code == 2 and "nothing to change" in err
    # No key anywhere: say where it was looked for.
    code, _, err = run(
        server, "--admin-key-file", str(tmp_path / "missing"), "users", "get", "1", key=None
    )
    assert code == 2 and "no admin key" in err
    # A key file works (what a generated key's server leaves in its data folder).
    key_file = tmp_path / "admin_key"
    key_file.write_text(ADMIN_KEY + "\n")
    code, out, _ = run(
        server, "--admin-key-file", str(key_file), "users", "create", "+14155550112", key=None
    )
    assert code == 0 and json.loads(out)["phone"] == "+14155550112"
    # Nobody listening: exit 2, not a traceback.
    result = CliRunner().invoke(
        app,
        [
            "admin",
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--admin-key",
            ADMIN_KEY,
            "users",
            "get",
            "1",
        ],
    )
    assert result.exit_code == 2 and "cannot reach" in result.stderr


def test_settings_get_and_set(server: ServerProcess) -> None:
    code, out, _ = run(server, "settings", "get")
    assert code == 0 and json.loads(out)["notify_contact_joined"] is True
    code, out, _ = run(
        server, "settings", "set", "notify_contact_joined=false", "discovery_quota=77"
    )
    assert code == 0
    assert (
        json.loads(out)["notify_contact_joined"] is False
        and json.loads(out)["discovery_quota"] == 77
    )
    code, out, _ = run(server, "settings", "get", "discovery_quota")
    assert code == 0 and json.loads(out) == 77
    code, out, _ = run(server, "settings", "get", "discovery_quota", "notify_contact_joined")
    assert json.loads(out) == {"discovery_quota": 77, "notify_contact_joined": False}
    # One bad value refuses the whole change.
    code, _, err = run(server, "settings", "set", "discovery_quota=5", "max_contacts_per_request=0")
    assert code == 1 and "invalid_request" in err
    assert json.loads(run(server, "settings", "get", "discovery_quota")[1]) == 77
    code, _, err = run(server, "settings", "set", "no_such_setting=1")
    assert code == 1
    code, _, err = run(server, "settings", "set", "oops")
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = run(server, "settings", "get", "nope")
    assert code == 1 and "unknown settings: nope" in err
    run(server, "settings", "set", "notify_contact_joined=true", "discovery_quota=50000")


def test_pairs(server: ServerProcess) -> None:
    a = json.loads(run(server, "users", "create", "+14155550131")[1])["user_id"]
    b = json.loads(run(server, "users", "create", "+14155550132")[1])["user_id"]
    code, out, _ = run(server, "pairs", "add", str(a), str(b))
    assert code == 0 and json.loads(out)["paired"] is True
    assert run(server, "pairs", "add", str(b), str(a))[0] == 0  # idempotent, either order
    code, out, _ = run(server, "pairs", "list", str(a))
    assert json.loads(out)["paired_with"] == [b]
    code, out, _ = run(server, "pairs", "remove", str(b), str(a))
    assert code == 0 and json.loads(out)["paired"] is False
    assert json.loads(run(server, "pairs", "list", str(a))[1])["paired_with"] == []
    code, _, err = run(server, "pairs", "add", str(a), str(a))
    assert code == 1 and "error:" in err


def test_settings_assignment_parsing() -> None:
    from contactsync.cli.admin import parse_assignment

    assert parse_assignment("a=true") == ("a", True)
    assert parse_assignment("a=5000") == ("a", 5000)
    assert parse_assignment("a=null") == ("a", None)
    assert parse_assignment('a=["x","y"]') == ("a", ["x", "y"])
    assert parse_assignment("url=http://h/x?a=b") == ("url", "http://h/x?a=b")
    assert parse_assignment("a=") == ("a", "")


def test_admin_uses_the_server_login_saved(server: ServerProcess, tmp_path: Path) -> None:
    """After `contactsync login`, `admin` talks to that server with no --server (issue 16.2)."""
    env = {"CONTACTSYNC_STATE_DIR": str(tmp_path / "state"), "CONTACTSYNC_SERVER": None}
    code, out, _ = run(server, "users", "create", "+1 415 555 0177")
    uid = str(json.loads(out)["user_id"])
    login = CliRunner().invoke(
        app,
        ["login", "--server", server.url, "--admin-key", ADMIN_KEY, "--user-id", uid],
        env=env,
    )
    assert login.exit_code == 0, login.output
    result = CliRunner().invoke(
        app, ["admin", "--admin-key", ADMIN_KEY, "users", "get", uid], env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["phone"] == "+14155550177"
