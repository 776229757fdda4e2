"""Run real `contactsync serve` processes on loopback ports for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY
from tests.workers import free_port

SLOW_MACHINE = {
    "CONTACTSYNC_DB_CONNECT_TIMEOUT_SECONDS": "30",
    "CONTACTSYNC_DB_COMMAND_TIMEOUT_SECONDS": "60",
    "CONTACTSYNC_OVERLOAD_WAIT_SECONDS": "30",
    # no worker processes for the numbers of big requests (tests/test_number_workers.py)
    "CONTACTSYNC_NUMBER_WORKERS": "0",
}


class ServerProcess:
    """One server process; `url` is its base URL. Logs go to `<data_dir>/server.log`."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        *,
        admin_key: str | None = ADMIN_KEY,
        env: dict[str, str | None] | None = None,
        port: int | None = None,
        args: list[str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Generous database timeouts on a loaded test machine (see tests/conftest.py settings);
        # a test that is about timeouts passes its own in `env` (None: the server's default).
        merged = {**os.environ, **SLOW_MACHINE, **(env or {})}
        self.env = {name: value for name, value in merged.items() if value is not None}
        self.env["CONTACTSYNC_DATA_DIR"] = str(data_dir)
        if database_url:
            self.env["CONTACTSYNC_DATABASE_URL"] = database_url
        if admin_key:
            self.env["CONTACTSYNC_ADMIN_KEY"] = admin_key
        self.args = list(args or [])
        # its own process group (and session), as a server started from a terminal: a signal
        # to the group (Ctrl-C) reaches it and its helpers, not the tests
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "contactsync.cli",
                "serve",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.new_session,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not come up: " + self.log()[-2000:])

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
