"""The router's KV-events subscriber: one ZMQ SUB per endpoint, feeding the cache index.

For every endpoint whose engine publishes KV events (vLLM's ``--kv-events-config``, or the
sim's), a task reads ``[topic, seq, payload]`` messages and applies them to
``ttft.CacheIndex`` under the endpoint's key. The stream is trusted only while it is whole:

- a **gap** in ``seq`` (the publisher dropped messages for us, or we missed some) and a
  **restart** (``seq`` goes back: a new engine process) both clear that endpoint's entry, and
  learning starts again from the message at hand: the index under-reports a cache for a while,
  never claims blocks that are gone;
- a **malformed** message is counted and clears the entry too (what it said is unknown);
- an endpoint that leaves the table (:meth:`KvEventSubscriber.sync`) has its task stopped and
  its entry dropped, so the picker scores it, if it comes back, without a cache.

A busy stream is read in bursts (:data:`COALESCE_SECONDS`): the event loop wakes once per
50 ms for all the batches queued meanwhile, not once per batch; one turn of the loop applies
at most :data:`DRAIN_MESSAGES` messages and :data:`APPLY_EVENTS` events, so a big batch is
applied over several turns, in order (requests in between see part of it applied). Nothing
here raises into the request path: the picker only ever reads the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import zmq
import zmq.asyncio

from inferscale.protocol.kvevents import (
    CacheEvent,
    KvEventFormatError,
    decode_batch,
    decode_seq,
)
from inferscale.router.ttft import CacheIndex

log = logging.getLogger(__name__)

APPLY_EVENTS = 512
"""Events one stream applies per turn of the event loop at most. An engine step that stores and
evicts many blocks publishes them in one batch: through the router with 4 sims
(bench/routing/README.md) a batch held ~1,100 events on average and up to 18,000, ~3 us each,
so one batch held the loop (and every request behind it) for up to 55 ms of CPU. In slices of
512 a turn costs ~1.5 ms."""

DRAIN_MESSAGES = 64
"""Queued messages one stream reads per turn of the event loop at most (their events are applied
:data:`APPLY_EVENTS` at a time), so a backlog of small batches never holds up requests for long."""

COALESCE_SECONDS = 0.05
"""After a stream's queue is drained, how long it lets the next messages queue before it reads
again. A busy engine publishes a batch per step (every 10-30 ms), and waking the event loop
for each one cost far more than applying it (bench/gateway/README.md: ~200 us of the router's
CPU per wake-up against ~21 us to decode and apply a batch); read every 50 ms, a wake-up
applies several. The index lags the engine by that much more, which costs nothing: the blocks
of the router's own prompts in flight count as cached at once (``ttft.InFlightBlocks``). An
idle stream waits on its socket, so no timer runs while nothing is published."""


@dataclass(slots=True)
class StreamStats:
    """Per endpoint: what its stream did (for logs, metrics and tests)."""

    batches: int = 0
    events: int = 0
    gaps: int = 0
    restarts: int = 0
    malformed: int = 0
    last_seq: int | None = None


def apply(index: CacheIndex, key: str, stats: StreamStats, seq: int, payload: bytes) -> None:
    """Apply one message to the index, resyncing on a gap, a restart or a malformed payload."""
    events = accept(index, key, stats, seq, payload)
    if events is not None:
        stats.events += index.apply(key, events)


def accept(
    index: CacheIndex, key: str, stats: StreamStats, seq: int, payload: bytes
) -> Sequence[CacheEvent] | None:
    """:func:`apply` up to the events: resync on a gap or a restart, decode; ``None``: malformed.

    The caller applies the events returned (in order, all of them) to ``index``.
    """
    last = stats.last_seq
    if last is not None and seq != last + 1:
        if seq <= last:
            stats.restarts += 1
        else:
            stats.gaps += 1
        index.cleared(key)
    stats.last_seq = seq
    try:
        batch = decode_batch(payload)
    except KvEventFormatError as e:
        stats.malformed += 1
        index.cleared(key)
        log.warning("kv events from %s: %s; its cache is forgotten", key, e)
        return None
    stats.batches += 1
    return batch.events


class KvEventSubscriber:
    """SUB sockets for a set of endpoints, kept in step with the routing table."""

    def __init__(self, index: CacheIndex, topic: str = "") -> None:
        """Feed ``index``; subscribe to ``topic`` (vLLM's default is every topic, ``""``)."""
        self.index = index
        self.topic = topic.encode()
        self.stats: dict[str, StreamStats] = {}
        self._ctx = zmq.asyncio.Context()
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}

    def sync(self, addresses: Mapping[str, str]) -> None:
        """Subscribe to ``key -> tcp://host:port`` exactly; stop and forget the others."""
        for key, (address, task) in list(self._tasks.items()):
            if addresses.get(key) != address:
                task.cancel()
                del self._tasks[key]
                self.index.cleared(key)
                self.stats.pop(key, None)
        for key, address in addresses.items():
            if key not in self._tasks:
                stats = self.stats[key] = StreamStats()
                task = asyncio.create_task(self._read(key, address, stats), name=f"kv:{key}")
                self._tasks[key] = (address, task)

    async def close(self) -> None:
        """Stop every task and close the sockets."""
        tasks = [t for _, t in self._tasks.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        self._ctx.term()

    async def _read(self, key: str, address: str, stats: StreamStats) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, self.topic)
        sock.connect(address)  # ZMQ reconnects by itself when the publisher comes back
        # The same socket without asyncio: what is already queued is read with no future and
        # no loop round trip per message (measured: the asyncio wake-up cost ~10x the decode).
        queued: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        try:
            while True:
                applied = await self._handle(key, stats, await sock.recv_multipart(), 0)
                for _ in range(DRAIN_MESSAGES):
                    try:
                        frames = queued.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        await asyncio.sleep(COALESCE_SECONDS)  # drained: let more queue
                        break
                    applied = await self._handle(key, stats, frames, applied)
                else:
                    await asyncio.sleep(0)  # more queued: let requests run first
        finally:
            sock.close(linger=0)

    async def _handle(self, key: str, stats: StreamStats, frames: list[bytes], applied: int) -> int:
        """Apply one message; ``applied``: events applied since the loop last ran others.

        Returns the same count after this message (:data:`APPLY_EVENTS` per turn at most).
        """
        if len(frames) != 3:
            stats.malformed += 1
            self.index.cleared(key)
            return applied
        try:
            seq = decode_seq(frames[1])
        except KvEventFormatError:
            stats.malformed += 1
            self.index.cleared(key)
            return applied
        events = accept(self.index, key, stats, seq, frames[2])
        start = 0
        while events is not None and start < len(events):
            if applied >= APPLY_EVENTS:
                await asyncio.sleep(0)  # a big batch: let requests run between slices
                applied = 0
            part = events[start : start + APPLY_EVENTS - applied]
            stats.events += self.index.apply(key, part)
            applied += len(part)
            start += len(part)
        return applied


def metric_lines(
    subscriber: KvEventSubscriber | None, pods: Iterable[tuple[str, str]]
) -> Iterator[str]:
    """``/metrics`` lines per subscribed endpoint (``(key, pod)`` pairs): blocks, resyncs.

    What an operator (and e2e) reads to see the index follow the engines.
    """
    blocks, resyncs = "inferscale_router_kv_index_blocks", "inferscale_router_kv_stream_resyncs"
    yield f"# HELP {blocks} Block hashes indexed per endpoint."
    yield f"# TYPE {blocks} gauge"
    subscribed = []
    if subscriber is not None:
        subscribed = [(k, pod, subscriber.stats[k]) for k, pod in pods if k in subscriber.stats]
    for key, pod, _ in subscribed:
        assert subscriber is not None
        yield f'{blocks}{{endpoint="{pod}"}} {subscriber.index.blocks(key)}'
    yield f"# HELP {resyncs}_total KV-event streams emptied and relearned, by why."
    yield f"# TYPE {resyncs}_total counter"
    for _, pod, stats in subscribed:
        why = (("gap", stats.gaps), ("restart", stats.restarts), ("malformed", stats.malformed))
        for reason, n in why:
            yield f'{resyncs}_total{{endpoint="{pod}",reason="{reason}"}} {n}'
