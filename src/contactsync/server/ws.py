"""The WebSocket endpoint `/v1/events/ws?after=SEQ`: the caller's event log, replayed then live.

Protocol (JSON text frames; every frame has an `op`):
- Client authenticates with `Authorization: Bearer <token>` on the upgrade request, or, when
  the header is absent, with a first frame `{"op": "auth", "token": "<token>"}`.
- Server: `{"op": "ready", "user_id", "after", "last_seq", "heartbeat"}`, then one
  `{"op": "event", "seq", "type", "at", "data"}` per event in `seq` order, first the replay of
  everything after `after`, then live. `{"op": "ping"}` every `heartbeat` seconds of silence.
- Server: `{"op": "discovery.changed", "version", "key_version"}` when the private-discovery
  filter moved (a join or leave; a new key version); not an event of the log, no `seq`. The
  `ready` frame carries the filter's version at connect time as `discovery`.
- Client may send `{"op": "ping"}` (answered `{"op": "pong"}`); anything else is an error.
- Errors: a frame `{"op": "error", "error": {"code", "message", "details"}}`, then a close
  with code 4000 + the error's HTTP status (4400 invalid_frame, 4401 unauthorized,
  4409 after_beyond_end, 4410 events_trimmed, 4422 invalid_request, 4429 too_many_connections,
  4503 store_unavailable). A server going away
  closes with 1001 or 1012; the client reconnects with `after` = the last `seq` it got.

No gap, no duplicate: the connection subscribes to the bus before it reads the replay, and
every read (replay or wake-up) asks the database for `seq > last sent`; a user's events commit
in `seq` order (see services/events.py), so that read never skips one. A client that stops
reading blocks our send; after `ws_send_timeout_seconds` it is dropped (nothing is queued per
connection beyond one page), and it resumes from its last `seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from contactsync.errors import (
    AfterBeyondEnd,
    ApiError,
    InvalidFrame,
    InvalidRequest,
    SlowConsumer,
    TooManySockets,
    Unauthorized,
)
from contactsync.server.bus.base import BUS_RESUBSCRIBED, Watch
from contactsync.server.cache import SESSIONS_CHANGED
from contactsync.server.context import Context
from contactsync.server.services import events, private_discovery, retention, sessions
from contactsync.server.services.feed import Feed
from contactsync.server.services.sessions import Session

log = logging.getLogger("contactsync.ws")

router = APIRouter(tags=["events"])

MAX_AFTER = 2**63 - 1


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    REPLAYING = "replaying"
    LIVE = "live"
    CLOSING = "closing"
    CLOSED = "closed"


_NEXT: dict[ConnState, frozenset[ConnState]] = {
    ConnState.CONNECTING: frozenset({ConnState.AUTHENTICATING, ConnState.CLOSING}),
    ConnState.AUTHENTICATING: frozenset({ConnState.REPLAYING, ConnState.CLOSING}),
    ConnState.REPLAYING: frozenset({ConnState.LIVE, ConnState.CLOSING}),
    ConnState.LIVE: frozenset({ConnState.CLOSING}),
    ConnState.CLOSING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class _Gone(Exception):
    """The client went away (or was dropped); nothing more can be sent."""


class Hub:
    """This process's live connections and the batched log reader they share."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.feed = Feed(ctx)
        self.connections: set[Connection] = set()
        self.per_user: Counter[int] = Counter()
        # Moves on with every sessions.changed message: a socket that authenticated across
        # one re-checks its token once it is registered under its user.
        self.session_changes = 0
        # the private-discovery filter's (version, key version), pushed to every socket
        self.discovery = (0, 0)
        self._discovery_stale = False
        self._follower: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.connections)

    def on_control(self, kind: str, data: Mapping[str, Any]) -> None:
        """A bus control message: when a user's sessions changed (a token revoked, the user
        changed or deleted), every socket of that user here re-checks its token before it
        sends anything more; after a bus outage, every socket does."""
        if kind == SESSIONS_CHANGED:
            self.session_changes += 1
            user_id = data.get("user_id")
            for connection in self.connections:
                if connection.user_id == user_id:
                    connection.revalidate()
        elif kind == BUS_RESUBSCRIBED:
            self.session_changes += 1
            for connection in self.connections:
                connection.revalidate()

    async def start(self) -> None:
        self._discovery_stale = True  # read by the first socket, not by every start
        self._follower = asyncio.create_task(self._follow_discovery(), name="ws-discovery")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None

    async def current_discovery(self) -> tuple[int, int]:
        """The filter's (version, key version) for a socket's `ready` (which is among
        `connections` by then, so the follower reads for it from here on): read again when
        it moved while no socket here was following it. In a transaction of its own, begun
        after the move's commit (SQLite's snapshot is the transaction's). Versions only grow,
        so a read that finishes after a newer one changes nothing."""
        if self._discovery_stale:
            found = await self._read_discovery()
            self._discovery_stale = False
            self.discovery = max(self.discovery, found)
        return self.discovery

    async def _read_discovery(self) -> tuple[int, int]:
        async with self.ctx.read() as tx:
            now = await private_discovery.state(tx)
        return now.version, now.key_version

    async def _follow_discovery(self) -> None:
        """One watch per process on the filter's channel; when it moves, every connection
        is woken to send `discovery.changed` (a frame, not an event of the user's log)."""
        watch = self.ctx.bus.watch(private_discovery.WAKE)
        try:
            while True:
                if not await watch.wait(self.ctx.settings.ws_heartbeat_seconds):
                    continue
                if not self.connections:
                    # Nobody here to tell (a registration wakes this): the next socket's
                    # `ready` reads the filter's version itself (`current_discovery`).
                    self._discovery_stale = True
                    continue
                try:
                    found = await self._read_discovery()
                except ApiError:
                    continue  # the store is down: the next wake-up reads again
                if found > self.discovery:
                    self.discovery = found
                    for connection in list(self.connections):
                        if connection.watch is not None:
                            wake = getattr(connection.watch, "wake", None)
                            if wake is not None:
                                wake()
        finally:
            watch.close()


def close_code(error: ApiError) -> int:
    return 4000 + error.status


def parse_after(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    try:
        after = int(raw)
    except ValueError:
        after = -1
    if after < 0 or after > MAX_AFTER:
        raise InvalidRequest(
            "`after` must be a whole number >= 0.", details={"field": "after", "value": raw[:40]}
        )
    return after


def bearer_from_header(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be `Bearer <token>`.")
    return token.strip()


def _frame(message: Mapping[str, Any]) -> dict[str, Any]:
    """Parse one client message into a JSON object with a string `op`, or raise."""
    if message.get("type") == "websocket.disconnect":
        raise _Gone()
    text = message.get("text")
    if text is None:
        raise InvalidFrame("Binary frames are not accepted; send JSON text.")
    try:
        frame = json.loads(text)
    except ValueError:
        raise InvalidFrame("The frame is not valid JSON.") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        raise InvalidFrame('A frame must be a JSON object with an "op".')
    return frame


class Connection:
    def __init__(self, websocket: WebSocket, hub: Hub) -> None:
        self.ws = websocket
        self.hub = hub
        self.ctx = hub.ctx
        self.state = ConnState.CONNECTING
        self.user_id: int | None = None
        self.last_sent = 0
        self.watch: Watch | None = None
        settings = self.ctx.settings
        self.heartbeat = settings.ws_heartbeat_seconds
        self.send_timeout = settings.ws_send_timeout_seconds
        self.auth_timeout = settings.ws_auth_timeout_seconds
        self.reauth = settings.ws_reauth_seconds
        self.token = ""
        self.discovery_sent = (0, 0)
        self.checked_at = 0.0
        self.revalidate_due = False
        self.metrics = self.ctx.services.metrics

    def move(self, to: ConnState) -> None:
        if to not in _NEXT[self.state]:
            raise IllegalTransition(f"{self.state.value} -> {to.value}")
        self.state = to

    def revalidate(self) -> None:
        """Re-check the token before sending anything more (see `Hub.on_control`)."""
        self.revalidate_due = True
        if self.watch is not None:
            self.watch.wake()

    async def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.ws.send_text(text)
        except TimeoutError:
            raise SlowConsumer() from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise _Gone() from exc

    async def run(self) -> None:
        await self.ws.accept()
        self.hub.connections.add(self)
        self.move(ConnState.AUTHENTICATING)
        try:
            await self._serve()
        except _Gone:
            pass
        except SlowConsumer:
            # Its buffers are full, so no error frame can reach it: just let it go.
            log.info("ws: dropped a client that stopped reading (user %s)", self.user_id)
            self.move(ConnState.CLOSING)
        except ApiError as error:
            await self._fail(error)
        except Exception:
            # A bug, not the client's fault: log it, close as "internal error", never a trace.
            log.exception("ws: unexpected error (user %s)", self.user_id)
            self.move(ConnState.CLOSING)
            with contextlib.suppress(Exception):
                await self.ws.close(1011, "internal_error")
        finally:
            if self.watch is not None:
                self.watch.close()
            if self.user_id is not None:
                if self.metrics is not None:
                    self.metrics.live_sockets.dec()
                self.hub.per_user[self.user_id] -= 1
                if self.hub.per_user[self.user_id] <= 0:
                    del self.hub.per_user[self.user_id]
            self.hub.connections.discard(self)
            if self.state is not ConnState.CLOSING:
                self.move(ConnState.CLOSING)
            self.move(ConnState.CLOSED)

    async def _fail(self, error: ApiError) -> None:
        self.move(ConnState.CLOSING)
        with contextlib.suppress(_Gone, SlowConsumer):
            await self.send({"op": "error", **error.body()})
        with contextlib.suppress(Exception):
            await self.ws.close(close_code(error), error.code)

    async def _serve(self) -> None:
        after = parse_after(self.ws.query_params.get("after"))
        changes = self.hub.session_changes
        session = await self._authenticate()
        # A cap per user and process: one account cannot hold unbounded server memory.
        if self.hub.per_user[session.user_id] >= self.ctx.settings.ws_max_sockets_per_user:
            raise TooManySockets(details={"max": self.ctx.settings.ws_max_sockets_per_user})
        self.user_id = session.user_id
        if self.hub.session_changes != changes:
            self.revalidate_due = True  # a revocation may have crossed our authentication
        self.hub.per_user[session.user_id] += 1
        if self.metrics is not None:
            self.metrics.live_sockets.inc()
        # Subscribe before reading anything: an event committed from here on wakes us, and
        # the replay below will have seen everything committed before.
        self.watch = self.ctx.bus.watch(session.user_id)
        async with self.ctx.read() as tx:
            last = await events.last_seq(tx, session.user_id)
            if after <= last:
                await retention.check_replay(tx, session.user_id, after)
        if after > last:
            raise AfterBeyondEnd(details={"after": after, "last_seq": last})
        self.last_sent = after
        self.discovery_sent = await self.hub.current_discovery()
        await self.send(
            {
                "op": "ready",
                "user_id": session.user_id,
                "after": after,
                "last_seq": last,
                "heartbeat": self.heartbeat,
                "discovery": {
                    "version": self.discovery_sent[0],
                    "key_version": self.discovery_sent[1],
                },
            }
        )
        self.move(ConnState.REPLAYING)
        reader = asyncio.create_task(self._read_client())
        pump = asyncio.create_task(self._pump())
        try:
            done, _ = await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, pump):
                task.cancel()
            await asyncio.gather(reader, pump, return_exceptions=True)
        for task in (pump, reader):
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _authenticate(self) -> Session:
        token = bearer_from_header(self.ws.headers.get("authorization"))
        if token is None:
            try:
                async with asyncio.timeout(self.auth_timeout):
                    frame = _frame(await self.ws.receive())
            except TimeoutError:
                raise Unauthorized(
                    "No token: send it in the Authorization header or as "
                    'a first frame {"op": "auth", "token": ...}.'
                ) from None
            if frame["op"] != "auth" or not isinstance(frame.get("token"), str):
                raise Unauthorized('The first frame must be {"op": "auth", "token": ...}.')
            token = frame["token"]
        self.token = token
        self.checked_at = asyncio.get_running_loop().time()
        async with self.ctx.read() as tx:
            return await sessions.authenticate(tx, token)

    async def _recheck(self) -> None:
        """Every `ws_reauth_seconds` of idleness: a revoked token (logout, admin revoke,
        deleted user) ends the socket, and the log is read once more, so a wake-up the bus
        lost (a publisher that died between commit and publish, or lost its Redis link)
        delays an event by at most about that long instead of until the next event."""
        now = asyncio.get_running_loop().time()
        if now - self.checked_at < self.reauth:
            return
        self.checked_at = now
        self.revalidate_due = True
        await self._drain()

    async def _drain(self) -> None:
        """Send everything after `last_sent`, page by page, in order (after re-checking the
        token when that is due: a revoked one closes the socket with 4401 first)."""
        assert self.user_id is not None
        if self.revalidate_due:
            self.revalidate_due = False
            async with self.ctx.read() as tx:
                await sessions.authenticate(tx, self.token, cached=False)
        while True:
            page = await self.hub.feed.read(self.user_id, self.last_sent)
            for event in page.events:
                if event.seq <= self.last_sent:
                    continue  # already sent (a page asked for before the last one arrived)
                await self.send({"op": "event", **event.wire()})
                self.last_sent = event.seq
                if self.metrics is not None:
                    self.metrics.events_delivered.labels("ws").inc()
            if not page.more:
                return

    async def _pump(self) -> None:
        assert self.watch is not None
        await self._drain()
        self.move(ConnState.LIVE)
        while True:
            if await self.watch.wait(self.heartbeat):
                await self._send_discovery()
                await self._drain()
            else:
                await self._recheck()
                await self.send({"op": "ping"})

    async def _send_discovery(self) -> None:
        if self.hub.discovery != self.discovery_sent:
            self.discovery_sent = self.hub.discovery
            version, key_version = self.discovery_sent
            await self.send(
                {"op": "discovery.changed", "version": version, "key_version": key_version}
            )

    async def _read_client(self) -> None:
        while True:
            frame = _frame(await self.ws.receive())
            if frame["op"] == "ping":
                await self.send({"op": "pong"})
            elif frame["op"] == "pong":
                continue
            else:
                raise InvalidFrame(f"Unknown op {frame['op'][:40]!r}; expected ping.")


@router.websocket("/v1/events/ws")
async def events_ws(websocket: WebSocket) -> None:
    ctx: Context = websocket.app.state.ctx
    hub = ctx.services.ws
    assert hub is not None, "realtime.install wires the hub"
    await Connection(websocket, hub).run()
