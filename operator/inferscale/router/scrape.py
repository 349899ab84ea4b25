"""Engine scraping: each endpoint's queue length and KV-cache use, for the load-aware pickers.

Every ``scrape_interval_seconds`` the router reads each endpoint's ``/metrics`` (the names of
its engine kind) into :class:`~inferscale.router.table.EndpointState`. Failure behaviour: an
engine that does not answer in time, answers garbage or has an unknown kind reads as 0 (no
queue, empty cache), so a scrape never ejects or favours an endpoint by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import aiohttp

from inferscale.router.state import RouterState
from inferscale.router.table import EndpointState

ENGINE_METRICS: Final = {
    # engine → (waiting requests, KV-cache use 0..1)
    "vllm": ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
    "sim": ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
    "sglang": ("sglang:num_queue_reqs", "sglang:token_usage"),
    "tgi": ("tgi_queue_size", ""),
    # llama-server exports no KV-cache gauge; requests waiting for a free slot are "deferred".
    "llamacpp": ("llamacpp:requests_deferred", ""),
    # TensorRT-LLM's trtllm-serve exports no Prometheus queue gauge: its endpoints count 0.
}


async def scrape_engines(state: RouterState) -> None:
    """Read each endpoint's queue and KV-cache use until shutdown; unknown or failed means 0."""
    every = state.settings.scrape_interval_seconds
    timeout = aiohttp.ClientTimeout(total=max(every, 0.5))

    async def one(e: EndpointState) -> None:
        names = ENGINE_METRICS.get(e.engine)
        if names is None or state.session is None:
            return
        try:
            async with state.session.get(e.base_url + "/metrics", timeout=timeout) as resp:
                text = (await resp.read()).decode("utf-8", "replace")
                e.queued, e.kv_usage = parse_engine_metrics(text, names)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            e.queued, e.kv_usage = 0, 0.0

    while not state.stop.is_set():
        await asyncio.gather(*(one(e) for e in list(state.table.endpoints())))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stop.wait(), every)


def parse_engine_metrics(text: str, names: tuple[str, str]) -> tuple[int, float]:
    """(waiting requests, KV-cache use) summed over the series of an engine's ``/metrics``."""
    waiting_name, kv_name = names
    waiting = 0.0
    kv = 0.0
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric == waiting_name:
            waiting += float(line.rsplit(" ", 1)[1])
        elif kv_name and metric == kv_name:
            kv = max(kv, float(line.rsplit(" ", 1)[1]))
    return int(waiting), kv
