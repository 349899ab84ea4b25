"""The sim's KV-events publisher: vLLM's ZMQ PUB stream of cache changes (``--kv-events-config``).

Each batch of changes the latency model records goes out as one multipart message
``[topic, seq, payload]`` (``protocol.kvevents``), ``seq`` counting from 0 in every process, so
a subscriber sees a restarted sim as a sequence that goes back. Sending never blocks the event
loop: a PUB socket drops messages for a subscriber that falls behind its high-water mark, and
that subscriber sees the gap in ``seq``. There is no replay socket: a subscriber resyncs by
clearing what it knew and learning again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import zmq

from inferscale.protocol.kvevents import KvEventsConfig, encode_batch, encode_seq
from inferscale.sim.model import KvEvent

HIGH_WATER_MARK = 100_000
"""Messages queued per subscriber before PUB drops (vLLM's default ``hwm``)."""


class KvEventPublisher:
    """A bound PUB socket and the message counter; used from the event loop's thread only."""

    def __init__(self, config: KvEventsConfig, block_size: int) -> None:
        """Bind ``config.endpoint`` (``tcp://*:PORT``); ``OSError`` naming it if it cannot."""
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.set_hwm(HIGH_WATER_MARK)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(config.endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"kv events: cannot bind {config.endpoint}: {e}") from None
        self._topic = config.topic.encode()
        self._block_size = block_size
        self.seq = 0

    @property
    def address(self) -> str:
        """The bound address (the real port when the endpoint asked for any)."""
        return str(self._sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def publish(self, events: Sequence[KvEvent]) -> None:
        """Send one batch now; dropped, not queued without bound, if nobody keeps up."""
        payload = encode_batch(time.time(), events, self._block_size)
        try:
            self._sock.send_multipart((self._topic, encode_seq(self.seq), payload), zmq.NOBLOCK)
        except zmq.Again:
            pass  # every subscriber is past its high-water mark: they will see the gap
        self.seq += 1

    def close(self) -> None:
        """Close the socket and its context."""
        self._sock.close(linger=0)
        self._ctx.term()
