"""The usage ledger's store: records buffered off the hot path, written in batches.

Where the answer is known the access log hands each request's record to :meth:`UsageLedger.record`,
which only appends it to a list (no await, no I/O). A background loop writes what gathered every
``usage_flush_seconds``, one pipelined round trip per batch:

- with ``redis_url``: ``XADD`` to the stream ``<redis_key_prefix>usage`` (one field, ``r``: the
  record as JSON), trimmed once per batch (``MINID`` past ``usage_retention_days``, approximate,
  and at most ``usage_max_records`` records, approximate), so every router's records are in
  one place that outlives restarts. The entries are added by a script (:data:`WRITE_SCRIPT`),
  one call per :data:`WRITE_CHUNK` records, so the client packs and parses a few commands per
  batch rather than one per record;
- without Redis: a ring of the last ``usage_max_records`` records in this process.

Failure behaviour: the request never waits for the ledger and never fails because of it. While
Redis is down a batch that cannot be written is dropped and counted
(``inferscale_router_usage_records_total{outcome="dropped"}``); so are records past
``usage_buffer_records`` waiting for a write. Reports (:meth:`UsageLedger.read`) read at most
``usage_report_max_records`` records, newest last, and skip stream entries that are not records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from inferscale.router.codec import dumps
from inferscale.router.settings import RouterSettings
from inferscale.router.usage import RECORD_FIELD, Record, UsageRing, parse_record

log = logging.getLogger("inferscale.router")

DAY_MS: Final = 86_400_000
READ_PAGE: Final = 5000
"""Stream entries read per XRANGE call of a report."""
WRITE_CHUNK: Final = 500
"""Records per script call: a call runs alone in Redis, so a big batch goes as several."""

# KEYS: the stream. ARGV: the field name, the oldest id to keep (0: no age trim), the most
# records to keep (0: no count trim), then the records (JSON). Returns the entries added.
WRITE_SCRIPT: Final = """
local key, field = KEYS[1], ARGV[1]
for i = 4, #ARGV do
  redis.call('XADD', key, '*', field, ARGV[i])
end
if ARGV[2] ~= '0' then redis.call('XTRIM', key, 'MINID', '~', ARGV[2]) end
if ARGV[3] ~= '0' then redis.call('XTRIM', key, 'MAXLEN', '~', ARGV[3]) end
return #ARGV - 3
"""


class UsageUnavailable(Exception):
    """The ledger's store cannot be read now (Redis down): a 503."""


class UsageLedger:
    """One router's usage records: buffered, then written to Redis or kept in a ring."""

    def __init__(
        self,
        client: Any | None,
        key: str,
        *,
        max_records: int,
        ring_records: int,
        retention_days: float,
        buffer_records: int,
        flush_seconds: float,
        report_max_records: int,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Write with ``client`` (a ``redis.asyncio`` client; ``None``: the in-process ring)."""
        self.redis: Any = client
        self.key = key
        self.max_records = max_records
        self.retention_ms = int(retention_days * DAY_MS)
        self.buffer_records = buffer_records
        self.flush_seconds = flush_seconds
        self.report_max_records = report_max_records
        self.wall = wall
        self.ring = UsageRing(ring_records)
        self.pending: list[Record] = []
        self.written = 0
        self.dropped = 0
        self.failing = False
        self.errors_caught: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        """What a failing store raises (and ``redis``'s own errors with a client)."""
        if client is not None:
            import redis.exceptions

            self.errors_caught += (redis.exceptions.RedisError,)

    def record(self, record: Record) -> None:
        """Take one request's record (the hot path: an append, nothing else)."""
        if self.redis is None:
            self.ring.records.append(record)
            self.written += 1
        elif len(self.pending) < self.buffer_records:
            self.pending.append(record)
        else:
            self.dropped += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Write a batch every ``flush_seconds`` until ``stop``; then the last one."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        """Write what gathered in one round trip (counted as dropped when Redis fails)."""
        batch, self.pending = self.pending, []
        if not batch or self.redis is None:
            return
        min_id = f"{max(int(self.wall() * 1000) - self.retention_ms, 0)}-0"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                # One JSON field per entry, and a script call per chunk of entries: redis-py
                # packs each command and parses each reply in Python, so an XADD per record
                # (and before that a field per column) was a tenth of the router's CPU under
                # load. The last chunk trims, once per batch.
                for start in range(0, len(batch), WRITE_CHUNK):
                    chunk = batch[start : start + WRITE_CHUNK]
                    last = start + WRITE_CHUNK >= len(batch)
                    trims = (min_id, self.max_records) if last else (0, 0)
                    pipe.execute_command(
                        "EVAL", WRITE_SCRIPT, 1, self.key, RECORD_FIELD, *trims,
                        *[dumps(record) for record in chunk],
                    )  # fmt: skip
                await pipe.execute()
        except self.errors_caught as error:
            self.dropped += len(batch)
            if not self.failing:
                log.warning("usage ledger: Redis write failed: %s", type(error).__name__)
            self.failing = True
            return
        self.failing = False
        self.written += len(batch)

    async def close(self) -> None:
        """Write what is left (bounded: 2 s), then close the connection pool."""
        if self.redis is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), 2.0)
        await self.redis.aclose()

    async def read(self, since: float) -> list[Record]:
        """The records at or after epoch seconds ``since`` (at most ``report_max_records``)."""
        if self.redis is None:
            return self.ring.since(since)[-self.report_max_records :]
        try:
            return await self._read_stream(since)
        except self.errors_caught as error:
            raise UsageUnavailable(
                f"the usage ledger cannot be read: {type(error).__name__}"
            ) from error

    async def _read_stream(self, since: float) -> list[Record]:
        out: list[Record] = []
        start = f"{max(int(since * 1000), 0)}-0"
        while len(out) < self.report_max_records:
            page = await self.redis.xrange(self.key, min=start, max="+", count=READ_PAGE)
            out.extend(r for _, fields in page if (r := parse_record(fields)) is not None)
            if len(page) < READ_PAGE:
                break
            last = page[-1][0]
            last = last.decode() if isinstance(last, bytes) else str(last)
            start = "(" + last  # exclusive: the page after the last entry read
        return out[-self.report_max_records :]

    def metric_lines(self) -> Iterable[str]:
        """Records written and dropped."""
        yield "# HELP inferscale_router_usage_records_total Usage ledger records by outcome."
        yield "# TYPE inferscale_router_usage_records_total counter"
        yield f'inferscale_router_usage_records_total{{outcome="written"}} {self.written}'
        yield f'inferscale_router_usage_records_total{{outcome="dropped"}} {self.dropped}'


def redis_client(url: str, timeout_seconds: float) -> Any:
    """A ``redis.asyncio`` client of ``url`` (connects lazily)."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )


def open_ledger(settings: RouterSettings) -> UsageLedger:
    """The ledger ``settings`` ask for: on ``redis_url`` (connects lazily), else in process."""
    client = None
    if settings.redis_url:
        # A batch write may take longer than a limits call: the ledger is off the hot path.
        client = redis_client(settings.redis_url, max(settings.redis_timeout_seconds, 1.0))
    return UsageLedger(
        client,
        settings.redis_key_prefix + "usage",
        max_records=settings.usage_max_records,
        ring_records=settings.usage_ring_records,
        retention_days=settings.usage_retention_days,
        buffer_records=settings.usage_buffer_records,
        flush_seconds=settings.usage_flush_seconds,
        report_max_records=settings.usage_report_max_records,
    )
