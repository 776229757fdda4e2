"""The bus across server processes, on Redis pub/sub, plus presence for push decisions.

Every process publishes "user U has events up to seq S" on one channel and wakes the sockets it
holds when a message arrives; the sockets then read the events from the database. Nothing but
wake-ups and small control messages (a cached value changed) travel through Redis, so a lost
message costs latency, never an event: after any (re)subscription every local socket is woken
once and every cache dropped, because messages may have been missed while the subscription was
down; while it is down, `coherent` is false and nothing is served from a cache.

Redis failing never sits on the request path. `publish()` wakes local sockets at once and
hands the rest to a background publisher (a bounded set of pending wake-ups, coalesced per
user; after a failure it waits `retry_seconds` before trying again, and keeps what is pending).
The subscription pings Redis every `health_interval`; no answer within another interval and
the bus counts as down (so does a failed publish): while it is down every local socket re-reads
its log every `poll_interval`, so an event written through another process arrives within
about two seconds without Redis. When Redis answers again the subscription is renewed, every
local socket re-reads once, and the polling stops.

Presence: each process keeps the set of users it holds a socket for in a Redis set with a TTL
(`<ns>:presence:<process>`) and lists itself in a sorted set of live processes scored by
expiry (`<ns>:procs`). A process that dies simply stops refreshing, and its entries vanish
within the TTL. `online()` asks every live process's set; if Redis cannot be asked, it answers
for this process alone (a push may then go to a user who is online elsewhere: a duplicate
wake-up notice, never a lost event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from contactsync.server.bus.base import BUS_RESUBSCRIBED
from contactsync.server.bus.memory import MemoryBus, MemoryWatch

log = logging.getLogger("contactsync.bus")

_ERRORS = (RedisError, OSError, ConnectionError, TimeoutError)
_USERS_PER_MESSAGE = 1000


class RedisBus(MemoryBus):
    """Local watchers as in `MemoryBus`; publishing and presence also go through Redis."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "contactsync",
        presence_ttl: float = 15.0,
        retry_seconds: float = 1.0,
        health_interval: float = 1.0,
        poll_interval: float = 1.0,
        max_pending: int = 10_000,
    ) -> None:
        super().__init__()
        self.url = url
        self.namespace = namespace
        self.process_id = uuid.uuid4().hex[:12]
        self.presence_ttl = presence_ttl
        self.retry_seconds = retry_seconds
        self.health_interval = health_interval
        self.poll_interval = poll_interval
        self.max_pending = max_pending
        self._redis: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty: set[int] = set()
        self._dirty_event = asyncio.Event()
        self._pending: dict[int, int] = {}  # wake-ups the publisher has not sent yet
        self._pending_event = asyncio.Event()
        self._controls: list[str] = []  # control messages the publisher has not sent yet
        self._publish_down_until = 0.0
        self._publish_warned_until = 0.0
        self._presence_warned_until = 0.0
        self.subscribed = asyncio.Event()
        self.polls = 0  # log re-reads while the bus was down (tests, metrics)

    # --- keys ----------------------------------------------------------------------------

    @property
    def channel(self) -> str:
        return f"{self.namespace}:events"

    @property
    def procs_key(self) -> str:
        return f"{self.namespace}:procs"

    def presence_key(self, process_id: str) -> str:
        return f"{self.namespace}:presence:{process_id}"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        # Short timeouts: a Redis that hangs must not hold up requests for long.
        self._redis = aioredis.Redis.from_url(
            self.url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._tasks = [
            asyncio.create_task(self._listen(), name="bus-listen"),
            asyncio.create_task(self._publisher(), name="bus-publish"),
            asyncio.create_task(self._poll_while_down(), name="bus-poll"),
            asyncio.create_task(self._presence_loop(), name="bus-presence"),
        ]

    @property
    def down(self) -> bool:
        """Whether wake-ups from other processes may not be reaching this one now."""
        return not self.subscribed.is_set() or time.monotonic() < self._publish_down_until

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, *_ERRORS):
                await task
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(*_ERRORS):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.presence_key(self.process_id))
                    pipe.zrem(self.procs_key, self.process_id)
                    await pipe.execute()
            with contextlib.suppress(*_ERRORS):
                await self._redis.aclose()
            self._redis = None
        await super().stop()

    # --- publishing ----------------------------------------------------------------------

    async def publish(self, latest: Mapping[int, int]) -> None:
        # Local sockets first and directly: they need no round trip through Redis. The rest
        # goes out in the background: a slow or silent Redis must not hold up the request.
        self.deliver_local(latest)
        if self._redis is None:
            return
        pending = self._pending
        for user_id, seq in latest.items():
            if seq > pending.get(user_id, 0):
                pending[user_id] = seq
        if len(pending) > self.max_pending:
            # Redis has been failing for a while: the other processes know (their own pings
            # go unanswered) and read their sockets' logs meanwhile.
            pending.clear()
        self._pending_event.set()

    async def _publisher(self) -> None:
        assert self._redis is not None
        while True:
            await self._pending_event.wait()
            wait = self._publish_down_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._pending_event.clear()
            batch, self._pending = self._pending, {}
            items = list(batch.items())
            try:
                while self._controls:
                    await self._redis.publish(self.channel, self._controls[0])
                    self._controls.pop(0)
                for i in range(0, len(items), _USERS_PER_MESSAGE):
                    chunk = items[i : i + _USERS_PER_MESSAGE]
                    message = json.dumps({"p": self.process_id, "u": chunk})
                    await self._redis.publish(self.channel, message)
            except _ERRORS as exc:
                # Keep what was not sent (newer seqs win) and try again after a pause.
                for user_id, seq in batch.items():
                    if seq > self._pending.get(user_id, 0):
                        self._pending[user_id] = seq
                self._publish_down_until = time.monotonic() + self.retry_seconds
                self._pending_event.set()
                if time.monotonic() >= self._publish_warned_until:
                    self._publish_warned_until = time.monotonic() + 30
                    log.warning("bus: publish failed (%s); retrying", type(exc).__name__)

    async def _poll_while_down(self) -> None:
        """While the bus is down, every local socket re-reads its log now and then (one
        batched statement for all of them, see services/feed.py)."""
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.down and self._watches:
                self.polls += 1
                self.deliver_local(dict.fromkeys(self.watched_users(), 0))

    async def control(self, kind: str, data: Mapping[str, Any]) -> None:
        # Here at once; to the others through the background publisher, ahead of wake-ups.
        self.deliver_control(kind, data)
        if self._redis is None:
            return
        self._controls.append(json.dumps({"p": self.process_id, "c": kind, "d": dict(data)}))
        if len(self._controls) > self.max_pending:
            del self._controls[: -self.max_pending]
        self._pending_event.set()

    @property
    def coherent(self) -> bool:
        return not self.down

    async def _listen(self) -> None:
        delay = self.retry_seconds
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1.0)
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(self.health_interval + 1.0):
                    await pubsub.subscribe(self.channel)
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except _ERRORS as exc:
                if self.subscribed.is_set():
                    self.subscribed.clear()
                    delay = self.retry_seconds
                    log.warning("bus: subscription lost (%s); retrying", type(exc).__name__)
                    # the sockets here read their logs at once, then every poll_interval
                    self.deliver_local(dict.fromkeys(self.watched_users(), 0))
                else:
                    delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(*_ERRORS, RuntimeError):
                    async with asyncio.timeout(1.0):
                        await pubsub.aclose()
                with contextlib.suppress(*_ERRORS, RuntimeError):
                    async with asyncio.timeout(1.0):
                        await client.aclose()
            await asyncio.sleep(delay)

    async def _receive(self, pubsub: PubSub) -> None:
        """Messages until Redis goes silent: a ping every `health_interval`, and nothing heard
        for two of them (not even the pong) ends the subscription."""
        loop = asyncio.get_running_loop()
        heard = next_ping = loop.time()
        while True:
            now = loop.time()
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + self.health_interval
            if now - heard > 2 * self.health_interval:
                raise TimeoutError("Redis did not answer the subscription's ping")
            message = await pubsub.get_message(timeout=self.health_interval / 4)
            if message is None:
                continue
            heard = loop.time()
            kind = message.get("type")
            if kind == "subscribe":
                self._subscribed()
            elif kind == "message":
                self._on_message(message["data"])

    def _subscribed(self) -> None:
        self.subscribed.set()
        # Messages may have been missed while we were not subscribed: everyone here re-reads
        # the log once, and whatever was cached is dropped.
        self.deliver_control(BUS_RESUBSCRIBED, {})
        self.deliver_local(dict.fromkeys(self.watched_users(), 0))

    def _on_message(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            if message.get("p") == self.process_id:
                return
            if "c" in message:
                kind, control = str(message["c"]), message.get("d") or {}
                if not isinstance(control, dict):
                    raise TypeError("control data must be an object")
                self.deliver_control(kind, control)
                return
            latest = {int(u): int(s) for u, s in message["u"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("bus: ignoring a malformed message")
            return
        self.deliver_local(latest)

    # --- presence ------------------------------------------------------------------------

    def watch(self, user_id: int) -> MemoryWatch:
        first = not self._watches.get(user_id)
        watch = super().watch(user_id)
        if first:
            self._mark(user_id)
        return watch

    def _remove(self, watch: MemoryWatch) -> None:
        super()._remove(watch)
        if watch.user_id not in self._watches:
            self._mark(watch.user_id)

    def _mark(self, user_id: int) -> None:
        self._dirty.add(user_id)
        self._dirty_event.set()

    async def _presence_loop(self) -> None:
        refresh = self.presence_ttl / 3
        full = True
        next_full = 0.0
        while True:
            if not full:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_full - time.monotonic())):
                        await self._dirty_event.wait()
                full = time.monotonic() >= next_full
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await self._write_presence(full, dirty)
                full = False
                next_full = time.monotonic() + refresh
            except _ERRORS as exc:
                log.debug("bus: presence not written (%s)", type(exc).__name__)
                full = True
                await asyncio.sleep(self.retry_seconds)

    async def _write_presence(self, full: bool, dirty: set[int]) -> None:
        assert self._redis is not None
        key = self.presence_key(self.process_id)
        ttl_ms = int(self.presence_ttl * 1000)
        now_ms = int(time.time() * 1000)
        watched = self.watched_users()
        async with self._redis.pipeline(transaction=True) as pipe:
            if full:
                pipe.delete(key)
                if watched:
                    pipe.sadd(key, *watched)
            else:
                added = [u for u in dirty if u in watched]
                removed = [u for u in dirty if u not in watched]
                if added:
                    pipe.sadd(key, *added)
                if removed:
                    pipe.srem(key, *removed)
            pipe.pexpire(key, ttl_ms)
            pipe.zadd(self.procs_key, {self.process_id: now_ms + ttl_ms})
            pipe.zremrangebyscore(self.procs_key, "-inf", now_ms)
            await pipe.execute()

    async def online(self, user_ids: Collection[int]) -> set[int]:
        here = await super().online(user_ids)
        rest = [u for u in user_ids if u not in here]
        if not rest or self._redis is None or self.down:
            return here  # (asked inside write transactions: never wait on a Redis that is down)
        try:
            now_ms = int(time.time() * 1000)
            procs = await self._redis.zrangebyscore(self.procs_key, now_ms, "+inf")
            names = [p.decode() if isinstance(p, bytes) else str(p) for p in procs]
            others = [p for p in names if p != self.process_id]
            if not others:
                return here
            async with self._redis.pipeline(transaction=False) as pipe:
                for process_id in others:
                    pipe.smismember(self.presence_key(process_id), rest)
                answers = await pipe.execute()
        except _ERRORS as exc:
            if time.monotonic() >= self._presence_warned_until:
                # Once in a while, not per push batch, while Redis stays down.
                self._presence_warned_until = time.monotonic() + 30
                log.warning("bus: presence unknown (%s); this process only", type(exc).__name__)
            return here
        for flags in answers:
            here.update(u for u, flag in zip(rest, flags, strict=True) if flag)
        return here
