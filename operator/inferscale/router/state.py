"""The router process's shared live state: what every stage and the admin API read and update.

One :class:`RouterState` per app (no module-level singletons): the live table, the client
access and limits, the spend ledger, the hold counters, the metrics and the access log, the
upstream session and the clocks. The stages hold a reference to it; none holds another stage's
state.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from inferscale.router.access import Access
from inferscale.router.access_log import AccessLog
from inferscale.router.context import RequestContext
from inferscale.router.metrics import RouterMetrics
from inferscale.router.provider_keys import KeyPool
from inferscale.router.settings import RouterSettings
from inferscale.router.spend import SpendLedger
from inferscale.router.table import EndpointState, EndpointTable
from inferscale.router.usage_ledger import UsageLedger

log = logging.getLogger("inferscale.router")


class RouterState:
    """Live state shared by the stages of one router."""

    def __init__(
        self,
        settings: RouterSettings,
        table: EndpointTable,
        access: Access,
        access_log: AccessLog,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        """Wire the collaborators; the upstream session is set at startup."""
        self.settings = settings
        self.table = table
        self.access = access
        self.log = access_log
        self.metrics: RouterMetrics = access_log.metrics
        self.clock = clock
        """Monotonic seconds: times requests and ejections."""
        self.wall = wall
        """Epoch seconds: dates spend windows and reports."""
        self.session: aiohttp.ClientSession | None = None
        self.random = random.Random()
        self.spend = SpendLedger()
        self.held: dict[str, int] = {}
        """Requests held per model now (the hold queue's length; the autoscaler reads it)."""
        self.ledger: UsageLedger | None = None
        """The usage ledger (set at startup unless ``usage_ledger`` is off)."""
        self.stop = asyncio.Event()
        """Set at shutdown: held requests answer and background loops end."""

    @property
    def id_prefix(self) -> str:
        """Identifies this router process in access lines and spend reports."""
        return self.log.id_prefix

    def provider_pool(self, provider_id: str) -> KeyPool | None:
        """The API keys of InferenceProvider ``<namespace>/<name>`` (``None``: none held)."""
        return self.access.provider_pool(provider_id)

    def endpoint_failed(self, endpoint: EndpointState) -> None:
        """Count a failure towards ``endpoint``'s circuit breaker; log an ejection."""
        s = self.settings
        if endpoint.record_failure(
            self.clock(),
            s.breaker_failures,
            s.breaker_ejection_seconds,
            s.breaker_max_ejection_seconds,
        ):
            self.metrics.bump(self.metrics.ejections, endpoint.pod)
            log.warning("endpoint ejected", extra={"endpoint": endpoint.pod})

    def count_tokens(self, ctx: RequestContext, usage: Any) -> None:
        """Keep the answer's ``usage`` on ``ctx`` and add its tokens to the model's counters."""
        if not isinstance(usage, dict):
            return
        ctx.usage = usage
        name = ctx.name
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int):
            self.metrics.bump(self.metrics.tokens_in, name, p)
        if isinstance(c, int):
            self.metrics.bump(self.metrics.tokens_out, name, c)
