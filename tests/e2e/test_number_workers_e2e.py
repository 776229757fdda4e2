"""`contactsync serve` with its number workers (server/number_workers.py): they run beside the
server, a big upload is answered through them, and Ctrl-C in the server's terminal (SIGINT to
its process group) ends the server and them without a traceback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.server import ServerProcess
from tests.e2e.test_realtime import user_token


def helpers_of(pid: int) -> list[int]:
    """The server's child processes that run the number worker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"phone_worker.py" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_served_big_upload_and_ctrl_c(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server", env={"CONTACTSYNC_NUMBER_WORKERS": "2"}, new_session=True
    ).start()
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 30
        while len(helpers := helpers_of(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(helpers) == 2
        _, token = user_token(server.url, "+14155550100")
        contacts = [{"phone": f"(415) 555-{i:04d}", "name": f"F{i}"} for i in range(3000)]
        contacts.append({"phone": "call me"})
        r = httpx.post(
            server.url + "/v1/addressbook",
            json={"contacts": contacts, "region": "US"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 3000
        assert r.json()["invalid"] == [
            {"index": 3000, "phone": "call me", "reason": "not_a_number"}
        ]
        os.killpg(server.proc.pid, signal.SIGINT)
        server.proc.wait(30)
        deadline = time.monotonic() + 10
        while any(map(alive, helpers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(alive, helpers))
        assert "Traceback" not in server.log()
    finally:
        server.kill()
