"""A TCP proxy to put in front of the real PostgreSQL or Redis and make them misbehave.

It runs its own event loop in a thread, so it keeps working whichever loop (or process) the
clients live in. Modes, switched at any time with `set()`:
- "pass": bytes flow both ways;
- "pause": bytes are held, not lost (a server that stopped answering: packets black-holed);
  connections stay open and new ones are accepted but get no answer; "pass" lets the held
  bytes through;
- "drop": bytes are read and thrown away, both ways;
- "refuse": new connections are reset at once (a stopped server); open ones keep flowing.
`close()` closes every open connection at once (a restarted server or a cut network).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Literal

Mode = Literal["pass", "pause", "drop", "refuse"]


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.port = 0
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- from the test's thread ---------------------------------------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def set(self, mode: Mode) -> None:
        self._call(self._set(mode))

    def close(self) -> None:
        """Close every connection open through the proxy now (with a reset)."""
        self._call(self._close_all())

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # --- on the proxy's loop ------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self._close_all()
        await self._set("pass")  # held bytes go nowhere now: let the pipes end
        if self._server is not None:
            self._server.close()

    async def _set(self, mode: Mode) -> None:
        assert self._flowing is not None
        self.mode = mode
        if mode == "pause":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _close_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            _reset(writer)
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await src.read(65536):
                await self._flowing.wait()  # "pause": hold these bytes until "pass"
                if self.mode == "drop" or dst.is_closing():
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            _reset(dst)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dead peer or a firewall would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
