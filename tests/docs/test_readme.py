"""The README's walkthrough, run as written against a real server.

Every ```sh block of README.md except the first (the set-up commands, `scripts/serve` and
`scripts/test`) is pasted, in order, into one bash script with `set -euo pipefail` and run in a
folder where `contactsync serve` keeps its data (`./data`), so `$(cat data/admin_key)` reads the
key the server generated. The only change made to the text is the port: the README's
`localhost:8080` becomes the test server's port.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def shell_blocks() -> list[str]:
    return _BLOCK.findall(README.read_text())


def test_the_setup_block_comes_first_and_the_walkthrough_follows() -> None:
    blocks = shell_blocks()
    assert blocks[0].split()[0] == "scripts/serve" and "scripts/test" in blocks[0]
    assert len(blocks) >= 2, "the README has no walkthrough to run"


@pytest.mark.slow
def test_readme_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", admin_key=None).start()
    try:
        script = "\n".join(shell_blocks()[1:])
        script = script.replace("localhost:8080", f"127.0.0.1:{server.port}")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path / "home"),
            "XDG_DATA_HOME": str(tmp_path / "home" / "share"),
        }
        for name in ("CONTACTSYNC_ADMIN_KEY", "CONTACTSYNC_TOKEN", "CONTACTSYNC_SERVER"):
            env.pop(name, None)
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    # GET /v1/me answered with Ann's account, not an error
    assert '"name":"Ann"' in result.stdout.replace(" ", ""), result.stdout
    assert '"error"' not in result.stdout, result.stdout
    # the CLI part: login saved the server, the sync uploaded Bob, and his joining arrived
    assert "Bob joined" in result.stdout, result.stdout
