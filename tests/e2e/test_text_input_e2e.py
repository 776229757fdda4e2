"""A real server answers NUL in text with 422 `invalid_text` and keeps the connection open:
the next request on the same socket is served (a 500 used to drop the keep-alive on
PostgreSQL, and its trace logged the contact names)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(lines[0].split()[1]), body[:length]


def test_nul_is_refused_and_the_connection_kept(tmp_path: Path, db_url: str) -> None:
    database_url = None if db_url.startswith("sqlite") else db_url
    server = ServerProcess(tmp_path / "data", database_url).start()
    try:
        payload = json.dumps({"phone": "+14155550100", "name": "Ann\u0000Archer"}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                f"POST /v1/admin/users HTTP/1.1\r\nHost: t\r\n"
                f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            status, answer = read_response(sock)
            assert status == 422, answer
            assert json.loads(answer)["error"]["code"] == "invalid_text"
            # The same socket serves the next request.
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
    finally:
        server.stop()
    log = server.log()
    assert "Archer" not in log and "Traceback" not in log
