"""The pick stage under ``predictedTTFT``: cache hits win, unknown engines fall back."""

from __future__ import annotations

from typing import Any

import pytest

from inferscale.protocol.simtokens import block_hashes, render_chat, token_ids
from inferscale.protocol.table import RoutingTable
from inferscale.router.app import Router
from inferscale.router.settings import RouterSettings
from inferscale.router.stages import link
from inferscale.router.stages.pick import PickEndpoint
from tests.unit.router.stage_fakes import Next, context, endpoint, state, table

LONG = "Summarise the attached quarterly report for the board, section by section. " * 40
BODY: dict[str, Any] = {"model": "m1", "messages": [{"role": "user", "content": LONG}]}
HASHES = block_hashes(token_ids(render_chat([("user", LONG)])), 16)


def kv_endpoint(n: int, engine: str = "sim", events: bool = True) -> dict[str, Any]:
    ep = {**endpoint(n), "engine": engine}
    if events:
        ep["kvEvents"] = f"127.0.0.1:{5500 + n}"
    return ep


async def picks(made: Any, live: Any, body: dict[str, Any], times: int = 1) -> list[str]:
    chosen = []
    for _ in range(times):
        last = Next()
        ctx = context(name="m1", model=live.models["m1"], obj=body)
        await link(PickEndpoint(made), last)(ctx)
        chosen.append(last.seen[0].endpoint.address)
    return chosen


async def test_the_replica_that_holds_the_prefix_gets_the_prompt() -> None:
    eps = [kv_endpoint(n) for n in (1, 2, 3)]
    live = table({"m1": {"endpoints": eps, "route": {"strategy": "predictedTTFT"}}})
    made = state(live)
    made.kv.index.stored(eps[1]["address"], HASHES, "GPU")
    assert await picks(made, live, BODY, times=4) == [eps[1]["address"]] * 4
    # The pending prefill it added was only the uncached tail, and it is taken off again.
    assert all(e.pending_prompt_tokens == 0 and e.in_flight == 0 for e in live.endpoints())


async def test_without_a_cache_hit_idle_replicas_share_the_traffic() -> None:
    eps = [kv_endpoint(n) for n in (1, 2)]
    live = table({"m1": {"endpoints": eps, "route": {"strategy": "predictedTTFT"}}})
    made = state(live)
    assert set(await picks(made, live, BODY, times=4)) == {e["address"] for e in eps}


@pytest.mark.parametrize(
    "eps",
    [
        [kv_endpoint(1, "vllm"), kv_endpoint(2, "vllm")],  # an engine the router cannot hash
        [kv_endpoint(1, events=False), kv_endpoint(2, events=False)],  # no events
        [kv_endpoint(1), kv_endpoint(2, "vllm")],  # mixed engines
    ],
)
async def test_it_falls_back_to_least_prefill_where_it_cannot_hash(eps: list[Any]) -> None:
    live = table({"m1": {"endpoints": eps, "route": {"strategy": "predictedTTFT"}}})
    made = state(live)
    made.kv.index.stored(eps[1]["address"], HASHES, "GPU")
    # leastPrefill: the replica with less prefill queued, whatever the index says.
    live.models["m1"].endpoints[1].pending_prompt_tokens = 5_000
    assert await picks(made, live, BODY, times=2) == [eps[0]["address"]] * 2


async def test_a_body_without_a_prompt_falls_back_too() -> None:
    eps = [kv_endpoint(1), kv_endpoint(2)]
    live = table({"m1": {"endpoints": eps, "route": {"strategy": "predictedTTFT"}}})
    made = state(live)
    live.models["m1"].endpoints[0].pending_prompt_tokens = 5_000
    assert await picks(made, live, {"model": "m1", "messages": "bad"}) == [eps[1]["address"]]


async def test_a_first_token_teaches_the_pools_rate() -> None:
    made = state()
    made.kv.observe("m1", 20_000, 4.0)
    before = made.kv.rates["m1"].seconds_per_token
    made.kv.observe("m1", 20_000, 4.0)
    assert made.kv.rates["m1"].seconds_per_token > before
    made.kv.keep(["a"], ["m1"])
    assert set(made.kv.rates) == {"m1"}
    made.kv.keep(["a"], ["m2"])
    assert made.kv.rates == {}


async def test_blocks_are_in_flight_only_while_their_request_is() -> None:
    eps = [kv_endpoint(n) for n in (1, 2)]
    live = table({"m1": {"endpoints": eps, "route": {"strategy": "predictedTTFT"}}})
    made = state(live)
    seen: list[Any] = []

    class During(Next):
        async def __call__(self, ctx: Any) -> Any:
            # While the request is in flight, its blocks count as cached at its replica.
            seen.append(dict(made.kv.in_flight.get(ctx.endpoint.key) or {}))
            return await super().__call__(ctx)

    ctx = context(name="m1", model=live.models["m1"], obj=BODY)
    await link(PickEndpoint(made), During())(ctx)
    assert seen[0] is not None and set(seen[0]) == set(HASHES)
    assert made.kv.in_flight.get(eps[0]["address"]) is None
    assert made.kv.in_flight.get(eps[1]["address"]) is None


async def test_a_host_tier_hit_is_priced_as_a_load_and_teaches_the_host_ratio() -> None:
    eps = [kv_endpoint(n) for n in (1, 2)]
    live = table({"m1": {"endpoints": eps, "route": {"strategy": "predictedTTFT"}}})
    made = state(live)
    made.kv.index.stored(eps[1]["address"], HASHES, "CPU")
    seen: list[tuple[int, int, int]] = []

    class During(Next):
        async def __call__(self, ctx: Any) -> Any:
            seen.append((ctx.ttft_host, ctx.prefill_tokens, ctx.endpoint.pending_prompt_tokens))
            return await super().__call__(ctx)

    ctx = context(name="m1", model=live.models["m1"], obj=BODY)
    await link(PickEndpoint(made), During())(ctx)
    host, own, pending = seen[0]
    ratio = made.kv.rates["m1"].host_ratio
    # The host hit is loaded, not recomputed: the replica's pending work grows by the load's
    # prefill-token equivalents plus the prompt's tokens past its last full block.
    assert ctx.endpoint.address == eps[1]["address"] and host == len(HASHES) * 16
    assert pending == own > round(ratio * host) > 0
    made.kv.observe("m1", own, 10.0, host)  # slower than predicted: the load costs more
    assert made.kv.rates["m1"].host_ratio > ratio


async def test_the_router_subscribes_to_each_endpoints_events_as_the_table_changes() -> None:
    live = table()
    router = Router(RouterSettings(), live, None, admin_token=None, log_sink=None)
    await router.on_startup(None)  # type: ignore[arg-type]
    try:
        assert router.kv_subscriber is None  # no endpoint publishes: no ZMQ at all
        eps = [kv_endpoint(1), kv_endpoint(2), kv_endpoint(3, events=False)]
        live.replace(
            RoutingTable.model_validate({"version": 2, "models": {"m1": {"endpoints": eps}}})
        )
        sub = router.kv_subscriber
        assert sub is not None and set(sub.stats) == {eps[0]["address"], eps[1]["address"]}
        router.state.kv.index.stored(eps[1]["address"], HASHES, "GPU")
        router.state.kv.observe("gone", 20_000, 2.0)
        # The second endpoint leaves: its subscription and index entry go with it, and the
        # rate of a pool no longer in the table too.
        live.replace(
            RoutingTable.model_validate({"version": 3, "models": {"m1": {"endpoints": eps[:1]}}})
        )
        assert set(sub.stats) == {eps[0]["address"]}
        assert router.state.kv.index.blocks(eps[1]["address"]) == 0
        assert router.state.kv.rates == {}
    finally:
        await router.on_shutdown(None)  # type: ignore[arg-type]
        await router.on_cleanup(None)  # type: ignore[arg-type]
    assert router.kv_subscriber is None
