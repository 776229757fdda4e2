"""A cheap load generator: raw HTTP/1.1 with keep-alive over asyncio streams.

A throughput benchmark measures the server, so the client must cost far less than the server
per request: httpx spends about a millisecond of Python on each request and response, which
at 200 concurrent clients made the client the bottleneck on a 2-core machine. Here a request
is a few preformatted bytes and a response is its status line, its headers and a
Content-Length body (chunked too, for completeness); about 50 us a request, on uvloop when it
is installed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class Closed(ConnectionError):
    """The server closed the connection (or broke it) before a whole response came."""


class Connection:
    """One keep-alive connection; `request` reconnects when the last answer closed it."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        fixed = {"host": f"{host}:{port}", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body). `body` is sent as JSON."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self._fixed
        if body is not None:
            head += b"content-type: application/json\r\n"
        head += b"content-length: %d\r\n\r\n" % len(payload)
        for attempt in (1, 2):
            reused = self._writer is not None
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            try:
                self._writer.write(head + payload)
                status, headers, content = await self._response(self._reader)
                break
            except (OSError, asyncio.IncompleteReadError, Closed, ValueError) as exc:
                await self.close()
                # A kept-alive connection the server closed while it sat idle (uvicorn's
                # keep-alive timeout) ends before a byte of the answer: send again, once.
                stale = isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                if not (reused and stale and attempt == 1):
                    raise Closed(str(exc)) from exc
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, content

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            content = b"".join(p[:-2] for p in parts)
        else:
            raise Closed("a response without a length")
        return status, headers, content

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (the server's own), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the server extra installs it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
