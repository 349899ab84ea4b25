"""A sim publishing KV events over ZMQ, the router's subscriber feeding its index from them.

The index must equal what the sim's GPU and host tiers hold, and a restarted sim (a new
process on the same address, its sequence back at 0) must empty the entry before it refills.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from inferscale.protocol.kvevents import KvEventsConfig
from inferscale.protocol.simtokens import engine_block_hashes
from inferscale.router.kvsubscribe import KvEventSubscriber
from inferscale.router.ttft import CacheIndex
from inferscale.sim import CPU, GPU
from inferscale.sim.kvpublish import KvEventPublisher
from inferscale.sim.server import SIM_KEY
from tests.component.router.conftest import RunningRouter
from tests.component.sim.conftest import MODEL, RunningSim, make_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EventSim(RunningSim):
    """A sim with KV events on, exposing its model's tiers."""

    def __init__(self, zmq_port: int) -> None:
        config = KvEventsConfig(True, f"tcp://127.0.0.1:{zmq_port}", "kv-events")
        # 64 blocks of GPU cache and 64 on the host, so a few prompts evict into the host tier.
        settings = make_settings(
            kv_capacity_tokens=1024, max_model_len=1024, host_kv_capacity_tokens=1024
        )
        super().__init__(settings.model_copy(update={"kv_events_config": config.to_json()}))
        self.runner: Any = None

    async def start_server(self) -> tuple[Any, int]:
        self.runner, port = await super().start_server()
        return self.runner, port

    def tiers(self) -> dict[str, set[int]]:
        return self.runner.app[SIM_KEY].driver.model.cached_blocks()


def index_view(index: CacheIndex, key: str, tiers: dict[str, set[int]]) -> dict[str, set[int]]:
    every = tiers[GPU] | tiers[CPU]
    gpu = {h for h in every if index.match(key, [h]) == (1, 0)}
    host = {h for h in every if index.match(key, [h]) == (0, 1)}
    return {GPU: gpu, CPU: host}


async def complete(client: httpx.AsyncClient, base: str, words: int, seed: int) -> None:
    prompt = " ".join(f"w{seed}x{i}" for i in range(words))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 2}
    r = await client.post(base + "/v1/completions", content=json.dumps(body), timeout=10)
    assert r.status_code == 200, r.text


async def settle(index: CacheIndex, sim: EventSim, key: str, exact: bool) -> None:
    """Wait (bounded) until the index equals the sim's tiers, or is a part of them.

    A part, after a restart: the new process's first messages went out before the subscriber
    had reconnected, so the index may miss blocks, but never holds one the sim does not.
    """
    for _ in range(100):  # bounded: 5 s
        tiers = sim.tiers()
        view = index_view(index, key, tiers)
        whole = index.blocks(key) == len(view[GPU]) + len(view[CPU])
        if whole and (view == tiers or (not exact and view[GPU] <= tiers[GPU])):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"index {index.blocks(key)} blocks, sim {sim.tiers()}")


async def warm_up(client: httpx.AsyncClient, sim: EventSim, arrived: Callable[[], bool]) -> None:
    """ZMQ's slow joiner: send until the sim's events arrive (bounded)."""
    for i in range(100):
        await complete(client, sim.base_url, 40, 10_000 + i)
        await asyncio.sleep(0.05)
        if arrived():
            return
    raise AssertionError("no KV events arrived")


async def test_the_index_mirrors_the_sim_and_resyncs_after_a_restart():
    port = free_port()
    index = CacheIndex()
    subscriber = KvEventSubscriber(index, "kv-events")
    subscriber.sync({"sim": f"tcp://127.0.0.1:{port}"})
    try:
        async with httpx.AsyncClient() as client:
            with EventSim(port) as sim:
                await warm_up(client, sim, lambda: index.blocks("sim") > 0)
                for seed in range(12):  # 12 prompts of 6 blocks: some go to the host tier
                    await complete(client, sim.base_url, 100, seed)
                await settle(index, sim, "sim", exact=True)
                assert sim.tiers()[CPU], "the test meant to exercise the host tier"
                before = index.blocks("sim")
            stats = subscriber.stats["sim"]
            with EventSim(port) as again:
                # Until the new process's first message arrives the old entries stand; then
                # the sequence, back near 0, empties the entry before the message applies.
                await warm_up(client, again, lambda: stats.restarts + stats.gaps >= 1)
                for seed in range(100, 103):
                    await complete(client, again.base_url, 100, seed)
                for _ in range(100):  # bounded: 5 s; the subscriber reads every 50 ms
                    if index.blocks("sim") >= 18:
                        break
                    await asyncio.sleep(0.05)
                await settle(index, again, "sim", exact=False)
                assert 18 <= index.blocks("sim") < before
            assert stats.malformed == 0
    finally:
        await subscriber.close()


def test_a_second_publisher_on_the_same_port_is_refused_clearly():
    config = KvEventsConfig(True, f"tcp://127.0.0.1:{free_port()}", "")
    first = KvEventPublisher(config, 16)
    try:
        with pytest.raises(OSError, match="cannot bind"):
            KvEventPublisher(config, 16)
    finally:
        first.close()


def prompt_hashes(body: dict[str, Any]) -> tuple[int, ...]:
    hashes = engine_block_hashes("sim", body, 16)
    assert hashes
    return hashes


async def test_the_router_sends_a_repeated_prompt_to_the_replica_that_holds_it():
    # Under leastPrefill the same sequence alternates between the two idle replicas.
    ports = [free_port(), free_port()]
    with EventSim(ports[0]) as a, EventSim(ports[1]) as b, RunningRouter() as router:
        pods = {f"127.0.0.1:{s.port}": f"sim-{n}" for n, s in enumerate((a, b))}
        endpoints = [
            {"pod": pod, "address": addr, "engine": "sim", "kvEvents": f"127.0.0.1:{zmq}"}
            for (addr, pod), zmq in zip(pods.items(), ports, strict=True)
        ]
        assert router.push({MODEL: {"endpoints": endpoints}}).status_code == 200
        assert router.router is not None
        index = router.router.state.kv.index
        async with httpx.AsyncClient() as client:
            for sim in (a, b):  # ZMQ's slow joiner: each stream delivers before we measure
                key = f"127.0.0.1:{sim.port}"
                await warm_up(client, sim, lambda key=key: index.blocks(key) > 0)
            words = " ".join(f"doc{i}" for i in range(150))
            body = {"model": MODEL, "prompt": words, "max_tokens": 2}
            chosen = []
            for _ in range(6):
                r = await client.post(router.base_url + "/v1/completions", json=body, timeout=10)
                assert r.status_code == 200, r.text
                chosen.append(r.headers["X-Inferscale-Pod"])
                holder = next(a for a, p in pods.items() if p == chosen[0])
                for _ in range(100):  # bounded: until the holder's events reached the index
                    if index.match(holder, prompt_hashes(body))[0] > 0:
                        break
                    await asyncio.sleep(0.05)
            # Whole answers of two tokens teach the model's (the pool's) rate nothing; one of a
            # single token does, and so does a stream's first token.
            rate = router.router.state.kv.rates[MODEL]
            assert list(router.router.state.kv.rates) == [MODEL] and rate.base_seconds == 0.01
            one = {**body, "max_tokens": 1}
            r = await client.post(router.base_url + "/v1/completions", json=one, timeout=10)
            assert r.status_code == 200 and rate.base_seconds != 0.01
            learned = rate.base_seconds
            r = await client.post(
                router.base_url + "/v1/completions", json={**body, "stream": True}, timeout=10
            )
            assert r.status_code == 200 and r.headers["X-Inferscale-Pod"] == chosen[0]
            assert rate.base_seconds != learned
            metrics = (await client.get(router.base_url + "/metrics")).text
        assert chosen == [chosen[0]] * 6, chosen
        for pod in pods.values():
            assert f'inferscale_router_kv_index_blocks{{endpoint="{pod}"}} ' in metrics
        assert f'kv_stream_resyncs_total{{endpoint="{chosen[0]}",reason="gap"}} 0' in metrics
