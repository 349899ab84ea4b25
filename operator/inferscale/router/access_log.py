"""The access log: one JSON line per request, and the request counters and latency it implies.

A line carries the request's id, method, path, model, status, endpoint (pod or backend label),
milliseconds, client and token usage, never prompt text or a key. Refusals before a model was
chosen are logged without a model (and not counted per model), so a caller cannot grow the
metrics' label sets with made-up names.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from inferscale.router.codec import dumps, error_response
from inferscale.router.context import RequestContext
from inferscale.router.metrics import RouterMetrics
from inferscale.router.usage import Record, milli, usage_record


class AccessLog:
    """Writes access lines to a sink and counts requests in the metrics."""

    __slots__ = ("clock", "id_prefix", "ledger", "metrics", "sink")

    def __init__(
        self,
        metrics: RouterMetrics,
        sink: Callable[[str], object] | None,
        clock: Callable[[], float],
        id_prefix: str,
    ) -> None:
        """Lines to ``sink`` (``None``: counters only); ``clock`` times the requests."""
        self.metrics = metrics
        self.sink = sink
        self.clock = clock
        self.id_prefix = id_prefix
        self.ledger: Callable[[Record], None] | None = None
        """Takes each request's usage record (the usage ledger, when one is kept)."""

    def write(
        self,
        ctx: RequestContext,
        status: int,
        pod: str,
        usage: object = None,
        attempts: int | None = None,
    ) -> None:
        """Record ``ctx``'s answer: ``status`` from ``pod`` (a backend label, or empty)."""
        ctx.status = status
        self._line(ctx, ctx.name, ctx.stream, ctx.client, status, pod, usage, attempts)

    def refuse(
        self,
        ctx: RequestContext,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        client: str = "",
    ) -> web.Response:
        """An OpenAI error answer for a request refused before it reached a backend, logged."""
        self.refused(ctx, status, client)
        return error_response(status, message, param=param, code=code, headers=headers)

    def refused(self, ctx: RequestContext, status: int, client: str = "") -> None:
        """Log a refusal that answers with its own body (logged without the model)."""
        ctx.status = status
        self._line(ctx, "", False, client, status, "", None, None)

    def _line(
        self,
        ctx: RequestContext,
        name: str,
        stream: bool,
        client: str,
        status: int,
        pod: str,
        usage: object,
        attempts: int | None,
    ) -> None:
        elapsed = self.clock() - ctx.start
        if name:
            self.metrics.count_request(name, pod, status)
            self.metrics.latency.observe((name,), elapsed)
        ledger, sink = self.ledger, self.sink
        if ledger is None and sink is None:
            return
        # Computed once for the record and the line (rounding a float to 3 places is not free).
        ts, ms, request_id = milli(time.time()), milli(elapsed * 1000), f"{self.id_prefix}-{ctx.id}"
        if ledger is not None:
            ledger(self._record(ctx, ts, request_id, name, client, status, pod, usage, ms))
        if sink is None:
            return
        request = ctx.request
        line: dict[str, object] = {
            "ts": ts,
            "id": request_id,
            "method": request.method,
            "path": request.path,
            "model": name,
            "stream": stream,
            "status": status,
            "endpoint": pod,
            "ms": ms,
        }
        if client:
            line["client"] = client
        if attempts is not None:
            line["attempts"] = attempts
        if isinstance(usage, dict):
            line["prompt_tokens"] = usage.get("prompt_tokens")
            line["completion_tokens"] = usage.get("completion_tokens")
        sink(dumps(line).decode() + "\n")

    def _record(
        self,
        ctx: RequestContext,
        ts: float,
        request_id: str,
        name: str,
        client: str,
        status: int,
        pod: str,
        usage: object,
        ms: float,
    ) -> Record:
        """The usage ledger's record of ``ctx`` (never its prompt)."""
        roles = ctx.model.roles if ctx.model is not None else None
        return usage_record(
            ts=ts,
            request_id=request_id,
            client=client or ctx.client,
            team=ctx.policy.team if ctx.policy is not None else "",
            route=roles.route_id if roles is not None else "",
            model=name or ctx.name,
            served_by=pod,
            status=status,
            usage=usage if usage is not None else ctx.usage,
            cost=ctx.cost,
            ms=ms,
        )
