"""Forward and relay: one attempt at the picked endpoint, the answer relayed to the client.

The body goes byte for byte (unknown fields untouched) with a few request headers (never the
client's ``Authorization``). Non-streaming answers are relayed whole, after their JSON is
checked and their ``usage`` counted; streams chunk by chunk as they arrive.

Failure behaviour:

- Before anything reached the client (connect errors, an engine that drops the connection
  before answering or before its first chunk, the route's ``retries.onStatus``) the attempt
  raises :class:`~inferscale.router.codec.AttemptFailed` and the pick stage retries elsewhere.
- ``timeouts.firstTokenSeconds`` bounds the wait for the engine's answer (and any stall between
  chunks), ``timeouts.totalSeconds`` the whole stream: past either, 504 (or an SSE error event
  once streaming). A wait for the first byte that runs out is retried on another endpoint
  when 504 is in ``retries.onStatus`` (the default), each attempt with its own wait. An answer
  that is not HTTP, or a 2xx JSON body that does not parse, is 502.
- Once a stream has started, a broken engine ends it with an SSE ``error`` event and no
  ``[DONE]``, so the client can tell the answer is incomplete.
- A client that disconnects cancels the handler, which closes the upstream connection: the
  engine sees the disconnect and frees the sequence. A stream whose client hung up at
  ``[DONE]`` is still counted from the usage it was sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

import aiohttp
from aiohttp import web

from inferscale.router.codec import (
    JSON,
    USAGE_TAIL_BYTES,
    AttemptFailed,
    AttemptFinal,
    error_response,
    loads,
    sse_error,
    stream_usage,
)
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointState, EndpointTable

FORWARDED: Final = ("Content-Type", "Accept", "X-Request-Id", "Traceparent")
"""Request headers passed on to engines; everything else (Authorization above all) stays here."""
_BROKEN: Final = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientPayloadError,
)
"""The engine went away mid-answer."""


class Forward(Stage):
    """Send the request to ``ctx.endpoint`` and relay its answer (the last stage)."""

    __slots__ = ("state", "timeouts")

    def __init__(self, state: RouterState) -> None:
        """Forward with ``state``'s session; per-route timeouts follow the table."""
        self.state = state
        self.timeouts: dict[str, aiohttp.ClientTimeout] = {}
        state.table.subscribe(self.on_table)
        self.on_table(state.table)

    def on_table(self, table: EndpointTable) -> None:
        """Rebuild the per-route timeouts after a swap."""
        # No ``total`` timer per request (a timer armed and cancelled per request costs more
        # than the rest of the bookkeeping): a non-streaming answer arrives in one piece, so
        # the read timeout bounds it; a stream is checked against its deadline at each chunk.
        connect = self.state.settings.connect_timeout_seconds
        self.timeouts = {
            name: aiohttp.ClientTimeout(
                total=None,
                sock_connect=connect,
                sock_read=min(m.route.timeouts.first_token_seconds, m.route.timeouts.total_seconds),
            )
            for name, m in table.models.items()
        }

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """One attempt; AttemptFailed when another endpoint should be tried."""
        state, endpoint, model = self.state, ctx.endpoint, ctx.model
        assert state.session is not None and endpoint is not None and model is not None
        route = model.route
        request = ctx.request
        headers = {k: v for k in FORWARDED if (v := request.headers.get(k)) is not None}
        try:
            async with state.session.post(
                endpoint.base_url + ctx.path,
                data=ctx.body,
                headers=headers,
                timeout=self.timeouts.get(ctx.name) or aiohttp.ClientTimeout(total=600),
            ) as up:
                status = up.status
                if status in route.retries.on_status:
                    raise AttemptFailed(f"HTTP {status}", status, await up.read())
                ctype = up.headers.get("Content-Type", JSON)
                if ctype.startswith("text/event-stream"):
                    return await self._relay_stream(ctx, endpoint, up, ctype)
                data = await up.read()
        except AttemptFailed:
            raise
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as error:
            raise AttemptFailed(
                f"cannot connect to {endpoint.pod}: {type(error).__name__}"
            ) from error
        except _BROKEN as error:
            raise AttemptFailed(
                f"{endpoint.pod} closed the connection: {type(error).__name__}"
            ) from error
        except TimeoutError:
            message = f"{endpoint.pod} did not answer within timeouts.firstTokenSeconds"
            if 504 in route.retries.on_status:
                # Nothing reached the client: a frozen or partitioned engine is retried
                # elsewhere, as its 504 would be (Envoy's retry_on 5xx counts a read timeout).
                raise AttemptFailed(message, 504) from None
            return await self._end(ctx, endpoint, 504, message)
        except aiohttp.ClientResponseError as error:
            message = f"the engine sent an invalid HTTP response ({error.message})"
            return await self._end(ctx, endpoint, 502, message)
        except aiohttp.ClientError as error:
            return await self._end(ctx, endpoint, 502, f"upstream error: {type(error).__name__}")
        return await self._answer(ctx, endpoint, status, ctype, data)

    async def _answer(
        self, ctx: RequestContext, endpoint: EndpointState, status: int, ctype: str, data: bytes
    ) -> web.StreamResponse:
        """Relay a whole (non-streaming) answer; count its usage."""
        state = self.state
        if status < 500:
            endpoint.record_success()
        else:
            state.endpoint_failed(endpoint)
        usage = None
        if 200 <= status < 300 and ctype.startswith(JSON):
            try:
                doc = loads(data)
            except (ValueError, RecursionError):
                return await self._end(ctx, endpoint, 502, "the engine answered invalid JSON")
            usage = doc.get("usage") if isinstance(doc, dict) else None
        if ctx.ttft_work and ctx.model is not None and isinstance(usage, dict):
            seconds = state.clock() - ctx.attempt_start
            tokens = usage.get("completion_tokens")
            state.kv.observe_answer(ctx.model.name, ctx.ttft_work, seconds, tokens, ctx.ttft_host)
            ctx.ttft_work = 0
        state.count_tokens(ctx, usage)
        committed = ctx.committed
        if committed is not None:  # a held stream asked for stream but got JSON: pass it as data
            await committed.write(b"data: " + data + b"\n\n")
            state.log.write(ctx, status, endpoint.pod)
            return committed
        state.log.write(ctx, status, endpoint.pod, usage)
        return web.Response(
            status=status,
            body=data,
            headers={"Content-Type": ctype, "X-Inferscale-Pod": endpoint.pod},
        )

    async def _relay_stream(
        self,
        ctx: RequestContext,
        endpoint: EndpointState,
        up: aiohttp.ClientResponse,
        ctype: str,
    ) -> web.StreamResponse:
        """Relay a stream chunk by chunk; its first chunk decides whether a retry is possible."""
        state = self.state
        chunks = up.content.iter_any()
        # The first chunk decides: nothing has reached the client yet, so a failure is retried.
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = b""
        except _BROKEN as error:
            raise AttemptFailed(
                f"{endpoint.pod} broke off before the first token: {type(error).__name__}"
            ) from error
        now = state.clock()
        state.metrics.ttft.observe((ctx.name,), now - ctx.start)
        if ctx.ttft_work and ctx.model is not None:
            state.kv.observe(ctx.model.name, ctx.ttft_work, now - ctx.attempt_start, ctx.ttft_host)
            ctx.ttft_work = 0
        ctx.prefilled(endpoint)
        resp = ctx.committed
        if resp is None:
            resp = await ctx.open_stream(
                up.status,
                {
                    "Content-Type": ctype,
                    "Cache-Control": "no-cache",
                    "X-Inferscale-Pod": endpoint.pod,
                },
            )
        assert ctx.model is not None
        deadline = ctx.start + ctx.model.route.timeouts.total_seconds
        return await self._relay_rest(ctx, endpoint, chunks, first, resp, up.status, deadline)

    async def _relay_rest(
        self,
        ctx: RequestContext,
        endpoint: EndpointState,
        chunks: aiohttp.streams.AsyncStreamIterator[bytes],
        first: bytes,
        resp: web.StreamResponse,
        status: int,
        deadline: float,
    ) -> web.StreamResponse:
        """Relay after the first chunk: errors now end the stream with an SSE error event."""
        state = self.state
        # The stream's last USAGE_TAIL_BYTES or more, for its usage event: an engine or a proxy
        # in between may split that event over any number of reads. Chunks are kept, not
        # joined, so a long stream copies nothing per chunk.
        tail: deque[bytes] = deque((first,))
        tail_bytes = len(first)
        tap = ctx.tap  # the response cache keeps a copy of the stream (None: nobody asked)
        if tap is not None:
            tap.add(first)
        try:
            if first:
                await resp.write(first)
            async for chunk in chunks:
                await resp.write(chunk)
                if tap is not None:
                    tap.add(chunk)
                tail.append(chunk)
                tail_bytes += len(chunk)
                while tail_bytes - len(tail[0]) >= USAGE_TAIL_BYTES:
                    tail_bytes -= len(tail.popleft())
                if state.clock() > deadline:
                    status = 504
                    await resp.write(
                        sse_error(504, "the request ran past timeouts.totalSeconds", "timeout")
                    )
                    break
        except _BROKEN:
            state.endpoint_failed(endpoint)
            status = 502
            await resp.write(
                sse_error(502, f"the engine {endpoint.pod} broke off the stream", "upstream_error")
            )
        except TimeoutError:
            state.endpoint_failed(endpoint)
            status = 504
            await resp.write(sse_error(504, "the engine stalled mid-stream", "timeout"))
        except asyncio.CancelledError:
            # The client hung up, which cancels this handler. A client may close as soon as it
            # has read [DONE], before the engine's end of stream reaches the router: it was
            # answered in full, and the usage it was sent is what it used (and what its limits
            # and budgets are charged; without it the estimate stays charged).
            usage = stream_usage(b"".join(tail))
            if usage is not None:
                state.count_tokens(ctx, usage)
                state.log.write(ctx, status, endpoint.pod, usage)
            raise
        else:
            if status != 504:
                endpoint.record_success()
        # A stream that broke off (502) after relaying the engine's usage event still delivered
        # those tokens: count them too. A 504 cut the stream short, so its usage is unknown.
        usage = stream_usage(b"".join(tail)) if status in (200, 502) else None
        state.count_tokens(ctx, usage)
        state.log.write(ctx, status, endpoint.pod, usage)
        return resp

    async def _end(
        self, ctx: RequestContext, endpoint: EndpointState, status: int, message: str
    ) -> web.StreamResponse:
        """A failure not retried on another endpoint: count it, then answer (or raise)."""
        self.state.endpoint_failed(endpoint)
        if ctx.fallible:
            raise AttemptFinal(f"{endpoint.pod}: {message}", status)
        self.state.log.write(ctx, status, endpoint.pod)
        committed = ctx.committed
        if committed is not None:
            await committed.write(sse_error(status, message))
            return committed
        return error_response(status, message)
