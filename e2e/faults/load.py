"""An open-loop load that records every request it sends, on its own thread and event loop.

The scenario's thread injects faults while the load runs (kill a process, push a table) and
reads :meth:`Load.now` to stamp the fault on the load's clock. Requests alternate between the
entry points given (the routers), between streaming and non-streaming, and between short and
long answers, at a fixed rate with Poisson-free even spacing (the same schedule every run).

Bounded: ``rate * duration`` requests at most; each has the client's ``timeout``, after which
it is ``lost``; at most ``max_in_flight`` at once (past it a request is not sent and is
counted ``lost: not sent``, never queued); when the schedule ends the requests in flight get
their timeout to finish, then the thread ends. Traffic goes only to the URLs given (loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from e2e.faults.ledger import Record

PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Entry:
    """Where a share of the load goes: a router's base URL and a label for the table."""

    url: str
    label: str


@dataclass
class LoadShape:
    """What the load sends."""

    model: str
    rate: float = 10.0
    """Requests per second, all entry points together."""
    duration: float = 10.0
    timeout: float = 15.0
    """The client's limit for one whole request; past it the request is ``lost``."""
    short_tokens: int = 8
    long_tokens: int = 160
    """Every third request asks for this many tokens: the long streams a fault can cut."""
    streaming_share: int = 2
    """Every ``n``-th request does not stream (2: half of them)."""
    max_in_flight: int = 400
    api_key: str | None = None
    """Sent as ``Authorization: Bearer``, for routers that require a client key."""


def _body(shape: LoadShape, index: int) -> tuple[dict[str, Any], bool]:
    stream = index % shape.streaming_share != 0
    tokens = shape.long_tokens if index % 3 == 2 else shape.short_tokens
    body: dict[str, Any] = {
        "model": shape.model,
        "messages": [{"role": "user", "content": f"request {index}: say hello"}],
        "max_tokens": tokens,
    }
    if stream:
        body["stream"] = True
    return body, stream


def _error_code(data: bytes) -> str | None:
    """The code of an error document (``{"error": {...}}``), or None when it is not one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict) or not error.get("message"):
        return None
    return str(error.get("code") or error.get("type") or "error")


class _Attempt:
    """The mutable facts of one request while it runs."""

    def __init__(self, sent_at: float, stream: bool, source: str) -> None:
        self.sent_at, self.stream, self.source = sent_at, stream, source
        self.first_byte = False
        self.backend = ""


class Load:
    """Send ``shape`` to ``entries`` from a background thread; keep a :class:`Record` each."""

    def __init__(self, entries: list[Entry], shape: LoadShape) -> None:
        if not entries:
            raise ValueError("a load needs at least one entry point")
        self.entries = entries
        self.shape = shape
        self.records: list[Record] = []
        self._serving = tuple(entries)
        """The entries new requests go to: a retired one (a Service that dropped a pod that
        failed readiness) gets no more; the tuple is swapped whole, never edited."""
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start = 0.0
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)

    def now(self) -> float:
        """Seconds since the load began, on the load's own clock."""
        assert self._loop is not None
        return self._loop.time() - self._start

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        """Start the load; on leaving, wait for the schedule and the requests in flight."""
        self._thread.start()
        self._started.wait(10)
        try:
            yield self
        finally:
            self._thread.join(self.shape.duration + self.shape.timeout + 30)
            if self._thread.is_alive():
                raise RuntimeError("the load thread did not end within its bound")

    def retire(self, label: str) -> None:
        """Send no more requests to the entry ``label`` (what it has in flight goes on)."""
        left = tuple(e for e in self._serving if e.label != label)
        if not left:
            raise ValueError("retiring the last entry point would leave the load nowhere to go")
        self._serving = left

    def wait_until(self, at: float) -> None:
        """Block the caller until the load's clock reads ``at`` seconds (bounded by it)."""
        # Short sleeps: the load's clock is another loop's, read from this thread.
        while self.now() < at:
            threading.Event().wait(min(0.05, max(at - self.now(), 0.001)))

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._started.set()
        shape = self.shape
        connector = aiohttp.TCPConnector(limit=shape.max_in_flight, force_close=False)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            tasks: set[asyncio.Task[None]] = set()
            total = int(shape.rate * shape.duration)
            for index in range(total):
                await asyncio.sleep(max(index / shape.rate - self.now(), 0.0))
                if len(tasks) >= shape.max_in_flight:
                    self._keep(Record(self.now(), self.now(), True, "lost", "not sent"))
                    continue
                task = asyncio.create_task(self._one(session, index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=shape.timeout + 5)
            for task in list(tasks):
                task.cancel()

    def _keep(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    async def _one(self, session: aiohttp.ClientSession, index: int) -> None:
        serving = self._serving
        entry = serving[index % len(serving)]
        body, stream = _body(self.shape, index)
        attempt = _Attempt(self.now(), stream, entry.label)
        try:
            async with asyncio.timeout(self.shape.timeout):
                outcome, detail = await self._send(session, entry, body, attempt)
        except TimeoutError:
            outcome, detail = "lost", "timeout"
        except aiohttp.ClientConnectorError:
            outcome, detail = "dirty", "connect"
        except (aiohttp.ClientError, ConnectionError):
            outcome, detail = "dirty", "cut" if attempt.first_byte else "reset"
        self._keep(
            Record(
                attempt.sent_at,
                self.now(),
                stream,
                outcome,
                detail,
                attempt.first_byte,
                entry.label,
                attempt.backend,
            )
        )

    async def _send(
        self,
        session: aiohttp.ClientSession,
        entry: Entry,
        body: dict[str, Any],
        attempt: _Attempt,
    ) -> tuple[str, str]:
        key = self.shape.api_key
        auth = {"Authorization": f"Bearer {key}"} if key else None
        async with session.post(
            entry.url + PATH, data=orjson.dumps(body), headers=auth
        ) as response:
            headers = response.headers
            attempt.backend = (
                headers.get("X-Inferscale-Backend") or headers.get("X-Inferscale-Pod") or ""
            )
            served = "spilled" if attempt.backend.startswith("provider:") else "ok"
            if response.status != 200:
                code = _error_code(await response.content.read(64 * 1024))
                return ("clean" if code else "dirty"), f"http {response.status}"
            if not attempt.stream:
                try:
                    doc = orjson.loads(await response.read())
                except orjson.JSONDecodeError:
                    return "dirty", "bad answer"
                if not isinstance(doc, dict) or not doc.get("choices"):
                    return "dirty", "bad answer"
                attempt.first_byte = True
                return served, ""
            return await self._read_stream(response, attempt, served)

    async def _read_stream(
        self, response: aiohttp.ClientResponse, attempt: _Attempt, served: str
    ) -> tuple[str, str]:
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue  # separators and keep-alive comments
            data = line[5:].strip()
            if data == b"[DONE]":
                return served, ""
            code = _error_code(data)
            if code is not None:
                return "clean", f"sse {code}"
            attempt.first_byte = True
        return "dirty", "cut" if attempt.first_byte else "empty stream"
