"""The response cache shared between router replicas through Redis.

Each router keeps its own in-process index (lookups never touch Redis, so Redis adds nothing to
a request's latency); Redis carries the answers between replicas:

- an answer a router keeps is written as ``{prefix}cache:<route>:<exact key>`` with the route's
  TTL, and published on the channel ``{prefix}cache`` (the same record), in one pipeline, in
  the background;
- every router subscribes to that channel and puts the answers of other routers into its own
  index as they arrive;
- when it starts (and whenever the subscription is made again, after an outage, or a route
  turns its cache on) it reads the keys that are there with their remaining TTL (``SCAN`` and
  one pipeline of ``GET`` and ``PTTL`` per page), so a new replica starts warm.

Records are JSON (:func:`~inferscale.router.response_cache.encode_record`): the answer, its
question, its partition and its vector, with the encoder's name (another encoder's vector is
dropped and the answer kept for the exact layer).

Failure behaviour: Redis down, slow or answering errors never fails or delays a request. A
failed write is dropped (counted in ``inferscale_router_cache_redis_errors_total``; the
answer stays in this router's index); a broken subscription is logged once per outage and
made again every ``retry_seconds``, reading the keys again when it is back. A malformed record
is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from inferscale.router.response_cache import CachedAnswer, encode_record

log = logging.getLogger("inferscale.router")

SCAN_PAGE: Final = 500
"""Keys asked for per SCAN call at start."""


Deliver = Callable[[bytes, float | None], None]
"""Receives a record and its remaining TTL in seconds (``None``: the message's own)."""


class SharedCache:
    """Writes this router's answers to Redis and hands other routers' answers to ``deliver``."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        origin: str,
        retry_seconds: float,
    ) -> None:
        """``client`` is a ``redis.asyncio.Redis``; its errors are ``redis``'s."""
        import redis.exceptions

        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}cache"
        self.origin = origin
        self.retry_seconds = retry_seconds
        self.errors_caught: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self.failures = 0
        """Redis calls that failed, all told (a counter metric)."""
        self.down = False
        self.tasks: set[asyncio.Task[None]] = set()

    def key(self, route: str, exact: str) -> str:
        """The Redis key of one answer."""
        return f"{self.prefix}cache:{route}:{exact}"

    # -- writing --------------------------------------------------------------------------

    def publish(self, route: str, entry: CachedAnswer, ttl: float, encoder: str) -> None:
        """Write and announce ``entry`` (its vector by ``encoder``) in the background.

        Never waits, never raises.
        """
        record = encode_record(route, entry, encoder, self.origin)
        task = asyncio.get_running_loop().create_task(self._write(route, entry.key, record, ttl))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _write(self, route: str, exact: str, record: bytes, ttl: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key(route, exact), record, px=max(1, int(ttl * 1000)))
        pipe.publish(self.channel, record)
        try:
            await pipe.execute()
        except self.errors_caught as error:
            self.record_failure(error)

    # -- reading --------------------------------------------------------------------------

    async def load(self, routes: Iterable[str], deliver: Deliver) -> int:
        """Hand every answer stored for ``routes`` to ``deliver``; returns how many."""
        count = 0
        for route in routes:
            cursor: int = 0
            while True:
                cursor, keys = await self.client.scan(
                    cursor, match=self.key(route, "*"), count=SCAN_PAGE
                )
                if keys:
                    pipe = self.client.pipeline(transaction=False)
                    for key in keys:
                        pipe.get(key)
                        pipe.pttl(key)
                    replies = await pipe.execute()
                    for raw, pttl in zip(replies[::2], replies[1::2], strict=True):
                        if isinstance(raw, bytes) and isinstance(pttl, int) and pttl > 0:
                            deliver(raw, pttl / 1000)
                            count += 1
                if not cursor:
                    break
        return count

    async def run(
        self, routes: Callable[[], Iterable[str]], deliver: Deliver, stop: asyncio.Event
    ) -> None:
        """Subscribe, load what is stored, then deliver what others publish, until ``stop``."""
        while not stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                loaded = await self.load(routes(), deliver)
                if self.down:
                    log.info("response cache: Redis is back (%d answers read)", loaded)
                    self.down = False
                await self._listen(pubsub, deliver, stop)
            except self.errors_caught as error:
                self.record_failure(error)
            finally:
                try:
                    await pubsub.aclose()
                except self.errors_caught:
                    pass
            if not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.retry_seconds)
                except TimeoutError:
                    pass

    async def _listen(self, pubsub: Any, deliver: Deliver, stop: asyncio.Event) -> None:
        while not stop.is_set():
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            data = message.get("data")
            if isinstance(data, bytes):
                deliver(data, None)

    def record_failure(self, error: BaseException) -> None:
        self.failures += 1
        if not self.down:
            self.down = True
            log.warning(
                "response cache: Redis unreachable (%s): answers stay in this router until it "
                "is back",
                f"{type(error).__name__}: {error}"[:300],
            )

    def metric_lines(self) -> list[str]:
        """The failure counter."""
        return [
            "# HELP inferscale_router_cache_redis_errors_total Failed Redis calls of the cache.",
            "# TYPE inferscale_router_cache_redis_errors_total counter",
            f"inferscale_router_cache_redis_errors_total {self.failures}",
        ]

    async def close(self) -> None:
        """Let pending writes finish (bounded), then close the connection pool."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        await self.client.aclose()
