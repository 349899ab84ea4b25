"""Reads the engines' load from Prometheus, through prometheus-api-client, off the event loop.

prometheus-api-client is blocking (requests underneath), so every query runs in a worker
thread with a time limit; the operator's event loop never waits on Prometheus. One round is
three instant queries covering every model (see
:func:`~inferscale.autoscaler.signals.build_queries`), whatever the number of models; every
:data:`THROUGHPUT_INTERVAL_S` three more read the engines' token throughput (the cost-aware
mode's spill price) and one the routers' spilled tokens per served name (with the engines'
throughput, the spilled token share), and the last answers are handed on in between. Every
round also reads the requests each route's spend cap kept from spilling (the cost-aware mode's
scale-up gate); that read failing leaves them unknown, never fails the round. A
failed round is reported as a reason, never raised: the autoscaler then holds every model
whose load it cannot see. A failed throughput read only keeps the last answer (the mode's
price is not the load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from inferscale.autoscaler.signals import (
    ROUTER_MODEL_LABEL,
    ROUTER_ROUTE_LABEL,
    EngineReading,
    ModelKey,
    Queries,
    build_queries,
    parse_by_label,
    parse_vector,
    spend_capped_rate,
    spilled_token_share,
    throughputs,
)
from inferscale.autoscaler.spillprice import Throughput

log = logging.getLogger(__name__)

THROUGHPUT_INTERVAL_S: Final = 60.0
"""Seconds between two reads of the token throughput (it moves over minutes, not rounds)."""


@dataclass
class PrometheusRound:
    """What one round read: per-model readings, or why it could not."""

    readings: dict[ModelKey, EngineReading] = field(default_factory=dict)
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    """Series that were left out (missing labels, NaN values): logged, not fatal."""
    throughput: dict[ModelKey, Throughput] = field(default_factory=dict)
    """The last throughput read (see :data:`THROUGHPUT_INTERVAL_S`); empty before the first."""
    spilled_tokens: dict[str, float] = field(default_factory=dict)
    """Tokens per second spillover backends answered per served name, from the same read
    (empty: no router exports the counter, or none has spilled)."""
    spend_capped: dict[str, float] | None = None
    """Requests per second each route's spend cap kept from spilling, per route
    (``namespace/name``), this round; None: the read failed."""

    def spend_capped_rate(self, route: str | None) -> float | None:
        """The capped spill rate of the model's spill route (None: unknown or no route)."""
        return spend_capped_rate(self.spend_capped, route)

    def spilled_token_share(self, key: ModelKey, served: str) -> tuple[float | None, float | None]:
        """The model's spilled token share and token rate (None: unknown, the policy skips it)."""
        return spilled_token_share(self.spilled_tokens.get(served), self.throughput.get(key))


class PrometheusSource:
    """The engines' in-flight requests and KV-cache use per model, from one Prometheus."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        model_label: str,
        namespace_label: str,
        client: Any | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.monotonic = monotonic
        self.throughput: dict[ModelKey, Throughput] = {}
        self.spilled_tokens: dict[str, float] = {}
        self.throughput_at: float | None = None
        self.timeout = timeout
        self.model_label = model_label
        self.namespace_label = namespace_label
        self.queries: Queries = build_queries(model_label, namespace_label)
        # disable_ssl=False keeps certificate checks on for https URLs. No retries inside a
        # round: the next round (seconds later) is the retry, and a retry loop here would make
        # a down Prometheus slow instead of failed.
        # Our own session, so close() can release its sockets.
        self.session = requests.Session()
        self.client = client or PrometheusConnect(
            url=url, disable_ssl=False, retry=Retry(total=0), timeout=timeout, session=self.session
        )

    def close(self) -> None:
        """Release the HTTP connections (the operator is stopping)."""
        self.session.close()

    def _query(self, promql: str) -> object:
        # The HTTP time limit, and Prometheus' own (so it gives up on a slow query too).
        return self.client.custom_query(
            query=promql, params={"timeout": f"{self.timeout:g}s"}, timeout=self.timeout
        )

    async def _run(self, promql: str) -> object:
        return await asyncio.wait_for(asyncio.to_thread(self._query, promql), self.timeout + 1)

    async def read(self) -> PrometheusRound:
        """One round of queries; never raises for Prometheus' faults."""
        try:
            in_flight_raw, fresh_raw, kv_raw, capped = await asyncio.gather(
                self._run(self.queries.in_flight),
                self._run(self.queries.freshness),
                self._run(self.queries.kv_cache),
                self._read_capped(),
            )
        except TimeoutError:
            return PrometheusRound(error=f"Prometheus at {self.url} did not answer in time")
        except Exception as error:  # any client fault means "unknown", never a crash
            return PrometheusRound(error=f"Prometheus at {self.url} failed: {_short(error)}")
        labels = (self.model_label, self.namespace_label)
        in_flight, p1 = parse_vector(in_flight_raw, *labels)
        fresh, p2 = parse_vector(fresh_raw, *labels)
        kv, p3 = parse_vector(kv_raw, *labels)
        readings = {
            key: EngineReading(in_flight=value, sampled_at=fresh.get(key), kv_cache=kv.get(key))
            for key, value in in_flight.items()
        }
        problems = [*p1, *p2, *p3, *await self._read_throughput()]
        return PrometheusRound(
            readings=readings,
            problems=problems,
            throughput=self.throughput,
            spilled_tokens=self.spilled_tokens,
            spend_capped=capped,
        )

    async def _read_capped(self) -> dict[str, float] | None:
        """Each route's capped spill rate; None when the read fails (never raises)."""
        try:
            raw = await self._run(self.queries.spend_capped)
        except Exception as error:  # the gate's signal only: unknown, as before it existed
            log.debug("cannot read the routers' capped spill: %s", _short(error))
            return None
        if not isinstance(raw, list):
            return None
        return parse_by_label(raw, ROUTER_ROUTE_LABEL)

    async def _read_throughput(self) -> list[str]:
        """Refresh :attr:`throughput` when due; its problems (a failure keeps the last one)."""
        now = self.monotonic()
        if self.throughput_at is not None and now - self.throughput_at < THROUGHPUT_INTERVAL_S:
            return []
        self.throughput_at = now
        q = self.queries
        try:
            raw = await asyncio.gather(
                self._run(q.prompt_rate),
                self._run(q.output_rate),
                self._run(q.mean_in_flight),
                self._run(q.spilled_tokens),
            )
        except Exception as error:  # the mode's price only: the load was read
            log.warning("cannot read the engines' token throughput: %s", _short(error))
            return [f"token throughput: {_short(error)}"]
        labels = (self.model_label, self.namespace_label)
        parsed = [parse_vector(r, *labels) for r in raw[:3]]
        self.throughput = throughputs(parsed[0][0], parsed[1][0], parsed[2][0])
        self.spilled_tokens = parse_by_label(raw[3], ROUTER_MODEL_LABEL)
        return [p for _, ps in parsed for p in ps]


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
