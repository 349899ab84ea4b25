"""Each request stage alone, with a fake context and a fake next stage."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

import inferscale.router.app as app_module
from inferscale.protocol.credentials import RouterCredentials, key_digest
from inferscale.protocol.table import RoutingTable
from inferscale.router.access import ANONYMOUS, Access
from inferscale.router.app import Pipeline, Router
from inferscale.router.codec import AttemptFailed, AttemptFinal
from inferscale.router.difficulty import DifficultyModelUnavailable, load_difficulty_model
from inferscale.router.settings import RouterSettings
from inferscale.router.stages import ByRoute, Stage, link
from inferscale.router.stages.account import Account
from inferscale.router.stages.admit import Admit
from inferscale.router.stages.authenticate import Authenticate
from inferscale.router.stages.authorize import Authorize
from inferscale.router.stages.cache import CacheLookup
from inferscale.router.stages.forward import Forward
from inferscale.router.stages.hold import Hold
from inferscale.router.stages.parse import Parse
from inferscale.router.stages.pick import PickEndpoint
from inferscale.router.stages.select_model import SelectModel
from inferscale.router.table import EndpointTable
from tests.unit.router.stage_fakes import (
    FakeRequest,
    Next,
    WordEncoder,
    context,
    endpoint,
    logged,
    state,
    table,
)
from tests.unit.router.test_selection import HARD

KEY = "sk-stage-test-0123456789"
BODY = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}).encode()


def keyed_access(**key_fields) -> Access:
    access = Access()
    entry = {"digest": key_digest(KEY), "client": "team/app", **key_fields}
    access.replace(
        RouterCredentials.model_validate(
            {"version": 1, "requireClientKey": True, "clientKeys": [entry]}
        )
    )
    return access


def error_of(resp: web.StreamResponse) -> dict:
    assert isinstance(resp, web.Response) and resp.body is not None
    return json.loads(resp.body)["error"]


# -- the chain ------------------------------------------------------------------------------


async def test_link_hands_each_stage_on_to_the_next_in_order():
    last = Next()
    first = link(CacheLookup(state()), CacheLookup(state()), last)
    resp = await first(context())
    assert resp.status == 299 and len(last.seen) == 1


async def test_a_bare_stage_has_no_behaviour_to_inherit():
    with pytest.raises(NotImplementedError):
        await Stage()(context())


async def test_by_route_sends_plain_models_and_models_with_backends_apart():
    live = table(
        {
            "plain": {"endpoints": [endpoint(1)]},
            "hosted": {
                "endpoints": [endpoint(2)],
                "backends": [{"role": "spillover", "model": "plain"}],
            },
        }
    )
    plain, backends = Next(), Next()
    branch = ByRoute(plain, backends)
    await branch(context(model=live.models["plain"]))
    await branch(context(model=live.models["hosted"]))
    assert len(plain.seen) == 1 and len(backends.seen) == 1


# -- authenticate ---------------------------------------------------------------------------


async def test_authenticate_is_a_no_op_without_client_keys():
    made, last = state(), Next()
    resp = await link(Authenticate(made.access, made.log), last)(context())
    assert resp.status == 299 and last.seen[0].policy is ANONYMOUS


async def test_authenticate_refuses_a_missing_key_before_reading_anything():
    made = state(access=keyed_access())
    request = FakeRequest(ValueError("the body must not be read"))
    resp = await link(Authenticate(made.access, made.log), Next())(context(request))
    assert resp.status == 401 and error_of(resp)["code"] == "missing_api_key"
    assert logged(made)[0]["model"] == "" and logged(made)[0]["status"] == 401


async def test_authenticate_sets_the_callers_policy_and_client():
    made, last = state(access=keyed_access()), Next()
    request = FakeRequest(headers={"Authorization": f"Bearer {KEY}"})
    await link(Authenticate(made.access, made.log), last)(context(request))
    assert last.seen[0].client == "team/app" and last.seen[0].policy.client == "team/app"


# -- parse ----------------------------------------------------------------------------------


async def test_parse_sets_the_body_the_model_and_stream():
    made, last = state(), Next()
    body = json.dumps({"model": "m1", "stream": True, "extra": 1}).encode()
    await link(Parse(1.0, made.log), last)(context(FakeRequest(body)))
    ctx = last.seen[0]
    assert (ctx.body, ctx.name, ctx.stream, ctx.obj["extra"]) == (body, "m1", True, 1)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{nope", 400, "the request body is not valid JSON"),
        (b"[1]", 400, "the request body must be a JSON object"),
        (b'{"model": ""}', 400, "model: a non-empty string is required"),
        (b'{"model": 3}', 400, "model: a non-empty string is required"),
        (b'{"model": "m1", "stream": "yes"}', 400, "stream: must be a boolean"),
        (b'{"model": "m1", "stream_options": []}', 400, "stream_options: must be an object"),
        (web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2), 413, "request body too large"),
    ],
)
async def test_parse_refuses_what_it_cannot_route(body, status, message):
    made, last = state(), Next()
    resp = await link(Parse(1.0, made.log), last)(context(FakeRequest(body)))
    assert resp.status == status and error_of(resp)["message"] == message
    assert not last.seen and logged(made)[0]["status"] == status


async def test_parse_refuses_a_declared_length_over_the_limit_before_reading_it():
    made = state()
    request = FakeRequest(AssertionError("the body was read"))
    request.content_length = request.client_max_size + 1
    resp = await link(Parse(1.0, made.log), Next())(context(request))
    assert resp.status == 413 and resp.keep_alive is False


async def test_parse_gives_up_on_a_body_that_does_not_come():
    made = state()
    resp = await link(Parse(0.01, made.log), Next())(context(FakeRequest(BODY, delay=5)))
    assert resp.status == 408


# -- authorize, select model ----------------------------------------------------------------


async def test_authorize_refuses_a_model_the_key_may_not_use():
    access = keyed_access(allowedModels=["other"])
    made = state(access=access)
    policy = access.identify(f"Bearer {KEY}")
    resp = await link(Authorize(access, made.log), Next())(context(policy=policy, name="m1"))
    assert resp.status == 403 and logged(made)[0]["client"] == "team/app"


async def test_authorize_lets_an_anonymous_caller_through():
    made, last = state(), Next()
    await link(Authorize(made.access, made.log), last)(context(name="m1"))
    assert len(last.seen) == 1


async def test_select_model_finds_the_routes_entry_or_answers_404():
    live = table({"m1": {"endpoints": []}})
    made, last = state(live), Next()
    stage = link(SelectModel(live, made.log), last)
    await stage(context(name="m1"))
    assert last.seen[0].model is live.models["m1"]  # at zero replicas: selected, not 404
    resp = await stage(context(name="m2"))
    assert resp.status == 404 and error_of(resp)["code"] == "model_not_found"


SELECTING = {
    "small": {"endpoints": [endpoint(1)]},
    "big": {"endpoints": [endpoint(2)]},
    "auto": {
        "route": {
            "selection": {
                "candidates": [
                    {"model": "small", "outputPricePerMillionTokens": 1},
                    {"model": "big", "outputPricePerMillionTokens": 10, "tier": 1},
                ]
            }
        }
    },
}
HARD_CHAT = {"model": "auto", **HARD}


async def test_select_model_picks_a_candidate_and_rewrites_the_request():
    live = table(SELECTING)
    made, last = state(live), Next()
    stage = link(SelectModel(live, made.log, load_difficulty_model(), made.clock), last)
    request = FakeRequest()
    await stage(context(request, name="auto", obj=HARD_CHAT, body=json.dumps(HARD_CHAT).encode()))
    seen = last.seen[0]
    assert seen.model is live.models["big"] and seen.name == "big"
    assert json.loads(seen.body)["model"] == "big" and seen.obj["model"] == "big"
    assert seen.selected == "big"
    assert made.log.metrics.selections == {("auto", "big"): 1}


async def test_select_model_skips_an_ejected_candidate_and_refuses_when_none_is_left():
    live = table(SELECTING)
    made, last = state(live), Next()
    stage = link(SelectModel(live, made.log, load_difficulty_model(), made.clock), last)
    live.models["big"].ready[0].ejected_until = made.clock() + 60
    await stage(context(name="auto", obj=HARD_CHAT))
    assert last.seen[0].name == "small"
    live.models["small"].ready[0].ejected_until = made.clock() + 60
    resp = await stage(context(name="auto", obj=HARD_CHAT))
    assert resp.status == 503 and "No candidate of `auto`" in error_of(resp)["message"]


async def test_select_model_skips_a_provider_candidate_over_its_spend_cap():
    live = EndpointTable()
    gpt = {
        "route": {"spend": {"maxPerHour": 1.0}},
        "routeId": "team/gpt",
        "servesLocally": False,
        "backends": [{"role": "primary", "provider": "team/openai", "model": "mini"}],
    }
    selection = {"candidates": [{"model": "small"}, {"model": "gpt", "tier": 1}]}
    live.replace(
        RoutingTable.model_validate(
            {
                "version": 1,
                "models": {
                    "small": {"endpoints": [endpoint(1)]},
                    "gpt": gpt,
                    "auto": {"route": {"selection": selection}},
                },
                "providers": {
                    "team/openai": {
                        "type": "openai",
                        "baseURL": "https://api.openai.com/v1",
                        "models": {"mini": {"providerModel": "gpt-4o-mini"}},
                    }
                },
            }
        )
    )
    made, last = state(live), Next()
    stage = SelectModel(live, made.log, load_difficulty_model(), made.clock, made.spend, made.wall)
    link(stage, last)
    await stage(context(name="auto", obj=HARD_CHAT))
    assert last.seen[0].name == "gpt"  # under its cap: the strong candidate
    made.spend.add("team/gpt", 2.0, made.wall())
    await stage(context(name="auto", obj=HARD_CHAT))
    assert last.seen[1].name == "small"  # capped: skipped, never a 429


async def test_select_model_without_a_difficulty_model_serves_the_first_candidate():
    live = table(SELECTING)
    made, last = state(live), Next()
    await link(SelectModel(live, made.log, None, made.clock), last)(
        context(name="auto", obj=HARD_CHAT)
    )
    assert last.seen[0].name == "small"  # never an error


# -- admit, account, cache ------------------------------------------------------------------


async def test_admit_charges_a_limited_client_and_refuses_past_its_rate():
    access = keyed_access(limits={"requestsPerMinute": 1})
    made, last = state(access=access), Next()
    policy = access.identify(f"Bearer {KEY}")
    stage = link(Admit(access, made.log), last)
    await stage(context(policy=policy, body=BODY, obj=json.loads(BODY)))
    assert last.seen[0].grant is not None
    resp = await stage(context(policy=policy, body=BODY, obj=json.loads(BODY)))
    assert resp.status == 429 and "Retry-After" in resp.headers


async def test_admit_is_free_for_a_caller_without_limits():
    made, last = state(), Next()
    await link(Admit(made.access, made.log), last)(context())
    assert last.seen[0].grant is None


class Settled(Access):
    def __init__(self) -> None:
        super().__init__()
        self.settled: list[tuple[object, object, int, float]] = []

    def settle(self, grant, usage, status, usd=0.0):
        self.settled.append((grant, usage, status, usd))


@pytest.mark.parametrize("fails", [False, True])
async def test_account_settles_the_grant_with_the_answers_usage_whatever_happens(fails):
    access = Settled()
    usage = {"prompt_tokens": 3, "completion_tokens": 4}

    class Answer(Stage):
        async def __call__(self, ctx):
            ctx.usage, ctx.status, ctx.cost = usage, 200, 0.25
            if fails:
                raise asyncio.CancelledError
            return web.Response(status=200)

    grant = object()
    stage = link(Account(access), Answer())
    if fails:
        with pytest.raises(asyncio.CancelledError):
            await stage(context(grant=grant))
    else:
        await stage(context(grant=grant))
    assert access.settled == [(grant, usage, 200, 0.25)]  # the cost, for money budgets


async def test_account_settles_nothing_without_a_grant():
    access = Settled()
    await link(Account(access), Next())(context())
    assert access.settled == []


async def test_the_cache_lookup_passes_every_request_through_unchanged():
    last = Next(web.Response(status=200, text="from the route"))
    ctx = context(name="m1", body=BODY)
    resp = await link(CacheLookup(state()), last)(ctx)
    assert last.seen == [ctx] and resp is last.answer


ANSWER = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "sunny"}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}


def cached_stage(**cache):
    live = table({"m1": {"route": {"cache": {"enabled": True, **cache}}}})
    stage = CacheLookup(state(live))
    stage.encoder = WordEncoder()
    stage.on_table(live)
    return stage


def chat_context(question, client="team/a"):
    body = {"model": "m1", "messages": [{"role": "user", "content": question}], "temperature": 0}
    return context(name="m1", obj=body, client=client)


async def test_the_cache_keeps_answers_apart_per_client_key_by_default():
    stage = cached_stage()
    last = Next(web.json_response(ANSWER))
    link(stage, last)
    await stage(chat_context("weather?", client="team/a"))
    hit = await stage(chat_context("weather?", client="team/a"))
    assert hit.headers["X-Inferscale-Cache"] == "hit" and len(last.seen) == 1
    last.answer = web.json_response(ANSWER)
    other = await stage(chat_context("weather?", client="team/b"))
    assert other.headers["X-Inferscale-Cache"] == "miss" and len(last.seen) == 2


async def test_a_shared_cache_answers_every_client_key():
    stage = cached_stage(scope="shared")
    link(stage, Next(web.json_response(ANSWER)))
    await stage(chat_context("weather?", client="team/a"))
    hit = await stage(chat_context("weather?", client="team/b"))
    assert hit.headers["X-Inferscale-Cache"] == "hit"


@pytest.mark.parametrize(
    "answer",
    [
        web.Response(status=500, text="boom"),
        web.json_response({"error": {"message": "x"}}),
        web.Response(status=200, body=b"not json", content_type="application/json"),
        web.json_response({"object": "chat.completion", "choices": []}),
    ],
)
async def test_the_cache_keeps_only_whole_successful_completions(answer):
    stage = cached_stage()
    link(stage, Next(answer))
    await stage(chat_context("weather?"))
    assert len(stage.caches["m1"].store) == 0


async def test_an_exact_only_cache_never_embeds():
    stage = cached_stage(threshold=1.0)
    link(stage, Next(web.json_response(ANSWER)))
    await stage(chat_context("weather?"))
    await stage(chat_context("weather?"))
    assert stage.encoder is not None and stage.encoder.calls == 0  # type: ignore[attr-defined]


# -- hold -----------------------------------------------------------------------------------


async def test_hold_hands_a_ready_model_on_at_once():
    live = table({"m1": {"endpoints": [endpoint(1)]}})
    made, last = state(live), Next()
    await link(Hold(made), last)(context(name="m1", model=live.models["m1"]))
    assert len(last.seen) == 1 and made.held == {}


async def test_hold_refuses_when_its_queue_is_full():
    live = table({"m1": {"endpoints": [], "route": {"holdQueue": {"maxRequests": 0}}}})
    made = state(live)
    resp = await link(Hold(made), Next())(context(name="m1", model=live.models["m1"]))
    assert resp.status == 503 and error_of(resp)["code"] == "model_unavailable"
    assert made.metrics.held_total[("m1", "full")] == 1


async def test_hold_raises_instead_of_answering_when_other_backends_follow():
    live = table({"m1": {"endpoints": [], "route": {"holdQueue": {"maxWaitSeconds": 0}}}})
    made = state(live)
    with pytest.raises(AttemptFinal) as failed:
        await link(Hold(made), Next())(context(name="m1", model=live.models["m1"], fallible=True))
    assert failed.value.status == 503 and failed.value.headers == {"Retry-After": "1"}


async def test_hold_releases_a_request_when_a_table_gives_its_model_a_ready_endpoint():
    live = table({"m1": {"endpoints": []}})
    made, last = state(live), Next()
    waiting = asyncio.ensure_future(
        link(Hold(made), last)(context(name="m1", model=live.models["m1"]))
    )
    for _ in range(100):  # bounded: the hold registers within a few loop turns
        if made.held.get("m1"):
            break
        await asyncio.sleep(0)
    assert made.held["m1"] == 1
    live.replace(
        RoutingTable.model_validate({"version": 2, "models": {"m1": {"endpoints": [endpoint(1)]}}})
    )
    resp = await asyncio.wait_for(waiting, 5)
    assert resp.status == 299 and last.seen[0].model is live.models["m1"]
    assert made.held["m1"] == 0 and made.metrics.held_total[("m1", "served")] == 1


async def test_hold_answers_503_when_its_model_is_removed_while_requests_wait():
    live = table({"m1": {"endpoints": []}, "m2": {"endpoints": [endpoint(1)]}})
    made = state(live)
    waiting = asyncio.ensure_future(
        link(Hold(made), Next())(context(name="m1", model=live.models["m1"]))
    )
    for _ in range(100):  # bounded: the hold registers within a few loop turns
        if made.held.get("m1"):
            break
        await asyncio.sleep(0)
    assert made.held["m1"] == 1
    live.replace(
        RoutingTable.model_validate({"version": 2, "models": {"m2": {"endpoints": [endpoint(1)]}}})
    )
    resp = await asyncio.wait_for(waiting, 5)
    # Never 404 for a request that was held: the model existed when it came.
    assert resp.status == 503 and error_of(resp)["code"] == "model_removed"
    assert "was removed" in error_of(resp)["message"]
    assert made.held["m1"] == 0 and made.metrics.held_total[("m1", "removed")] == 1


async def test_an_adapters_held_requests_count_toward_its_base_model():
    live = table({"m1": {"endpoints": [], "adapters": ["sql"]}})
    made, last = state(live), Next()
    waiting = asyncio.ensure_future(
        link(Hold(made), last)(context(name="sql", model=live.models["sql"]))
    )
    for _ in range(100):  # bounded: the hold registers within a few loop turns
        if made.held.get("m1"):
            break
        await asyncio.sleep(0)
    assert made.held == {"m1": 1}  # the autoscaler wakes m1 for it
    doc = {"m1": {"endpoints": [endpoint(1)], "adapters": ["sql"]}}
    live.replace(RoutingTable.model_validate({"version": 2, "models": doc}))
    resp = await asyncio.wait_for(waiting, 5)
    assert resp.status == 299 and last.seen[0].model is live.models["sql"]
    assert made.held == {"m1": 0} and made.metrics.held_total[("sql", "served")] == 1


async def test_pick_sends_an_adapter_to_the_endpoints_that_hold_it():
    one, two = endpoint(1), endpoint(2)
    two["adapters"] = ["sql"]
    live = table({"m1": {"endpoints": [one, two], "adapters": ["sql"]}})
    made = state(live)
    for _ in range(4):
        last = Next()
        await link(PickEndpoint(made), last)(context(name="sql", model=live.models["sql"]))
        assert last.seen[0].endpoint.address == two["address"]


@pytest.mark.parametrize(("strategy", "distinct"), [("leastInFlight", 1), ("roundRobin", 3)])
async def test_pick_keeps_an_adapter_on_one_replica_under_the_default_strategies(
    strategy, distinct
):
    eps = [endpoint(n) for n in (1, 2, 3)]
    route = {"strategy": strategy}
    live = table({"m1": {"endpoints": eps, "adapters": ["sql"], "route": route}})
    made = state(live)
    chosen = set()
    for _ in range(6):  # one at a time: each finds every replica idle
        last = Next()
        await link(PickEndpoint(made), last)(context(name="sql", model=live.models["sql"]))
        chosen.add(last.seen[0].endpoint.address)
    assert len(chosen) == distinct


async def test_pick_counts_every_adapter_of_a_base_model_in_one_share_and_keeps_within_it():
    eps = [endpoint(n) for n in (1, 2)]
    live = table({"m1": {"endpoints": eps, "adapters": ["sql", "chat"]}})
    made = state(live)
    stage = PickEndpoint(made)
    chosen = []
    for name in ["sql", "chat"] * 6:  # one at a time: each finds every replica idle
        last = Next()
        await link(stage, last)(context(name=name, model=live.models[name]))
        chosen.append(last.seen[0].endpoint.address)
    assert set(stage.adapter_shares) == {"m1"}  # one count per base model, not per adapter
    assert sum(stage.adapter_shares["m1"].counts.values()) == 12
    # Idle replicas would all look alike to in-flight counts; the shares keep each within
    # ceil(1.25 * 12 / 2) = 8 of the 12.
    assert max(chosen.count(e["address"]) for e in eps) <= 8


# -- pick -----------------------------------------------------------------------------------


async def test_pick_retries_another_endpoint_after_a_failed_attempt():
    live = table({"m1": {"endpoints": [endpoint(1), endpoint(2)]}})
    made = state(live)

    class FailFirst(Stage):
        def __init__(self):
            self.tried = []

        async def __call__(self, ctx):
            self.tried.append(ctx.endpoint.pod)
            assert ctx.endpoint.in_flight == 1
            if len(self.tried) == 1:
                raise AttemptFailed("HTTP 503", 503)
            return web.Response(status=200)

    forward = FailFirst()
    resp = await link(PickEndpoint(made), forward)(context(name="m1", model=live.models["m1"]))
    assert resp.status == 200 and len(set(forward.tried)) == 2
    assert all(e.in_flight == 0 and e.pending_prompt_tokens == 0 for e in live.endpoints())
    assert made.metrics.retries == {"m1": 1}


async def test_pick_answers_the_engines_last_answer_when_every_attempt_failed():
    live = table({"m1": {"endpoints": [endpoint(1)]}})
    made = state(live)
    failing = Next(AttemptFailed("HTTP 503", 503, b'{"error": "busy"}'))
    resp = await link(PickEndpoint(made), failing)(context(name="m1", model=live.models["m1"]))
    assert resp.status == 503 and resp.body == b'{"error": "busy"}'
    assert logged(made)[0]["attempts"] == 1 and logged(made)[0]["endpoint"] == "pod-1"


async def test_pick_without_a_candidate_raises_for_a_fallible_caller():
    live = table({"m1": {"endpoints": [endpoint(1, ready=False)]}})
    made = state(live)
    with pytest.raises(AttemptFailed) as failed:
        await link(PickEndpoint(made), Next())(
            context(name="m1", model=live.models["m1"], fallible=True)
        )
    assert "no replica of `m1`" in failed.value.reason


# -- forward --------------------------------------------------------------------------------


class FakeUpstream:
    """An engine's answer as aiohttp's client response shows it."""

    def __init__(self, status=200, body=b"", ctype="application/json", error=None):
        self.status = status
        self.body = body
        self.headers = {"Content-Type": ctype}
        self.error = error

    async def __aenter__(self):
        if self.error is not None:
            raise self.error
        return self

    async def __aexit__(self, *_):
        return None

    async def read(self):
        return self.body


class FakeSession:
    def __init__(self, answer: FakeUpstream) -> None:
        self.answer = answer
        self.sent: list[tuple[str, bytes, dict]] = []

    def post(self, url, *, data, headers, timeout):
        self.sent.append((url, data, headers))
        return self.answer


def forwarding(answer: FakeUpstream):
    live = table({"m1": {"endpoints": [endpoint(1)]}})
    made = state(live)
    made.session = FakeSession(answer)  # type: ignore[assignment]
    model = live.models["m1"]
    request = FakeRequest(BODY, {"Authorization": "Bearer secret", "X-Request-Id": "r1"})
    ctx = context(request, name="m1", model=model, endpoint=model.ready[0], body=BODY)
    return Forward(made), made, ctx


async def test_forward_sends_the_body_as_it_is_and_counts_the_answers_usage():
    usage = {"prompt_tokens": 5, "completion_tokens": 7}
    stage, made, ctx = forwarding(FakeUpstream(body=json.dumps({"usage": usage}).encode()))
    resp = await stage(ctx)
    assert resp.status == 200 and resp.headers["X-Inferscale-Pod"] == "pod-1"
    ((url, data, headers),) = made.session.sent  # type: ignore[union-attr]
    assert url == "http://127.0.0.1:9001/v1/chat/completions" and data == BODY
    assert headers == {"X-Request-Id": "r1"}  # never the client's Authorization
    assert ctx.usage == usage and logged(made)[0]["completion_tokens"] == 7


async def test_forward_raises_for_a_retryable_status_with_the_engines_answer():
    stage, _, ctx = forwarding(FakeUpstream(status=503, body=b"busy"))
    with pytest.raises(AttemptFailed) as failed:
        await stage(ctx)
    assert failed.value.status == 503 and failed.value.body == b"busy"


async def test_forward_raises_when_the_engine_cannot_be_reached():
    error = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None), OSError()
    )
    stage, _, ctx = forwarding(FakeUpstream(error=error))
    with pytest.raises(AttemptFailed, match="cannot connect to pod-1"):
        await stage(ctx)


async def test_forward_answers_502_for_a_2xx_that_is_not_json_and_counts_the_failure():
    stage, made, ctx = forwarding(FakeUpstream(body=b"<html>"))
    resp = await stage(ctx)
    assert resp.status == 502 and "invalid JSON" in error_of(resp)["message"]
    assert ctx.endpoint is not None and ctx.endpoint.failures == 1


# -- the pipeline ---------------------------------------------------------------------------


def chain_of(stage) -> list[str]:
    names = [type(stage).__name__]
    while hasattr(stage, "next"):
        stage = stage.next
        names.append(type(stage).__name__)
    return names


def test_the_pipeline_links_every_stage_in_order_and_skips_access_without_keys():
    pipeline = Pipeline(state())
    common = ["CacheLookup", "ByRoute"]
    assert chain_of(pipeline.checked) == [
        "Authenticate",
        "Parse",
        "Authorize",
        "SelectModel",
        "Admit",
        "Account",
        *common,
    ]
    assert chain_of(pipeline.open) == ["Parse", "SelectModel", *common]
    assert chain_of(pipeline.dispatcher.replicas) == ["Hold", "PickEndpoint", "Forward"]
    assert chain_of(pipeline.dispatcher.other_models) == ["PickEndpoint", "Forward"]


def test_a_router_whose_difficulty_model_fails_to_load_says_why_in_its_report(monkeypatch):

    def broken() -> None:
        raise DifficultyModelUnavailable("cannot read difficulty.json: corrupt")

    monkeypatch.setattr(app_module, "load_difficulty_model", broken)
    router = Router(RouterSettings(), EndpointTable(), None, admin_token=None, log_sink=None)
    assert router.state.difficulty_error == "cannot read difficulty.json: corrupt"
    report = router.pipeline.dispatcher.report(1_700_000_000.0)
    assert report.difficulty_error == "cannot read difficulty.json: corrupt"
