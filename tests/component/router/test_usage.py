"""The usage ledger on real routers: one record per request, in process and in a real Redis.

Records are written off the hot path (a batch every ``usage_flush_seconds``), so tests poll
(bounded). Covers: a record per request of either API, refusals included, with client, route,
who served, tokens and a provider's cost, never the prompt; the admin report by groups as JSON
and CSV, and its refusals; two routers sharing one Redis stream, read by the admin endpoint and
by ``inferscale usage --redis-url``; Redis down: requests still succeed and records are counted
as dropped.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inferscale.cli.main import main
from inferscale.protocol.credentials import key_digest
from inferscale.router.usage import usage_record
from inferscale.router.usage_ledger import WRITE_CHUNK, UsageLedger, redis_client
from tests.component.router.conftest import MODEL, TOKEN, RunningRouter, address
from tests.component.router.mock_providers import KEY, MockOpenAI
from tests.redis_server import RedisServer

CLIENT_KEY = "key-usage-0123456789abcdef"
SECRET_PROMPT = "the-secret-prompt-text"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
OPENAI_ID = "team/openai"


def chat(router: RunningRouter, model: str = MODEL, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": model,
        "max_tokens": 3,
        "messages": [{"role": "user", "content": SECRET_PROMPT}],
    }
    return httpx.post(
        router.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=10
    )


def report(router: RunningRouter, **query: str) -> httpx.Response:
    return httpx.get(router.base_url + "/admin/v1/usage", params=query, headers=ADMIN, timeout=10)


def rows_when(router: RunningRouter, requests: int, **query: str) -> list[dict[str, Any]]:
    """The report's rows once they count ``requests`` requests (records are batched: 10 s)."""
    rows: list[dict[str, Any]] = []
    for _ in range(100):
        rows = report(router, **query).json()["rows"]
        if sum(r["requests"] for r in rows) >= requests:
            break
        time.sleep(0.1)
    return rows


def with_keys(router: RunningRouter) -> None:
    """A client key (not required) and the provider's key."""
    keys = [{"digest": key_digest(CLIENT_KEY), "client": "team/usage"}]
    doc = {"version": 1, "clientKeys": keys, "providerKeys": {OPENAI_ID: KEY}}
    resp = httpx.put(router.base_url + "/admin/v1/credentials", json=doc, headers=ADMIN)
    assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def mock_openai() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


def test_each_request_is_one_record_with_cost_and_never_the_prompt(sims, mock_openai):
    with RunningRouter(usage_flush_seconds=0.05) as router:
        provider = {
            "type": "openai-compatible",
            "baseURL": mock_openai.base_url + "/v1",
            "models": {
                "mini": {
                    "providerModel": "gpt-4o-mini",
                    "inputPricePerMillionTokens": 1_000_000,
                    "outputPricePerMillionTokens": 2_000_000,
                }
            },
        }
        hosted = {
            "routeId": "team/chat",
            "servesLocally": False,
            "weight": 0,
            "backends": [{"role": "primary", "model": "mini", "provider": OPENAI_ID}],
        }
        table = {MODEL: [address(sims[0])], "gpt": hosted}
        assert router.push(table, providers={OPENAI_ID: provider}).status_code == 200
        with_keys(router)
        assert chat(router, key=CLIENT_KEY).status_code == 200
        assert chat(router).status_code == 200
        assert chat(router, "gpt").status_code == 200
        assert chat(router, "no-such-model").status_code == 404
        messages = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(router.base_url + "/v1/messages", json=messages).status_code == 200
        rows = rows_when(router, 5, by="client,route,model,provider,status")
        assert router.router is not None and router.router.state.ledger is not None
        records = list(router.router.state.ledger.ring.records)
    assert sum(r["requests"] for r in rows) == 5 and len(records) == 5
    assert SECRET_PROMPT not in json.dumps(records) and CLIENT_KEY not in json.dumps(records)
    by_key = {(r["client"], r["model"], r["status"]): r for r in rows}
    mine = by_key[("team/usage", MODEL, "200")]
    assert mine["prompt_tokens"] > 0 and mine["completion_tokens"] == 3
    hosted_row = by_key[("", "gpt", "200")]
    # The mock answers 9 prompt and 2 completion tokens, priced at 1 and 2 per token.
    assert hosted_row["provider"] == OPENAI_ID and hosted_row["route"] == "team/chat"
    assert hosted_row["cost"] == pytest.approx(9 * 1 + 2 * 2)
    assert by_key[("", "no-such-model", "404")]["errors"] == 1
    assert by_key[("", MODEL, "200")]["requests"] == 2  # the OpenAI and the Messages request
    served = {r["served_by"] for r in records}
    assert f"provider:{OPENAI_ID}/mini" in served and "pod-" + str(sims[0].port) in served


def test_the_report_as_csv_by_day_and_its_refusals(routed_with_ledger):
    router = routed_with_ledger
    for _ in range(3):
        assert chat(router).status_code == 200
    rows_when(router, 3, by="day")
    text = report(router, by="model,day", format="csv").text
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["model"] == MODEL and row["requests"] == "3" and row["day"].count("-") == 2
    assert report(router, by="prompt").status_code == 400
    assert report(router, format="xml").status_code == 400
    assert report(router, since="soon").status_code == 400
    assert httpx.get(router.base_url + "/admin/v1/usage").status_code == 401
    future = report(router, since=str(time.time() + 3600)).json()
    assert future == {"by": ["client", "model", "day"], "rows": []}
    assert router.metric("inferscale_router_usage_records_total", outcome="written") == 3


@pytest.fixture
def routed_with_ledger(sims) -> Iterator[RunningRouter]:
    with RunningRouter(usage_flush_seconds=0.05) as router:
        assert router.push({MODEL: [address(sims[0])]}).status_code == 200
        yield router


def test_the_ledger_can_be_off(sims):
    with RunningRouter(usage_ledger=False) as router:
        assert router.push({MODEL: [address(sims[0])]}).status_code == 200
        assert chat(router).status_code == 200
        assert report(router).status_code == 404


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def on_redis(redis: RedisServer, sims) -> RunningRouter:
    router = RunningRouter(
        redis_url=redis.url,
        redis_retry_seconds=0.2,
        redis_timeout_seconds=0.5,
        usage_flush_seconds=0.05,
    )
    router.__enter__()
    assert router.push({MODEL: [address(sims[0])]}).status_code == 200
    return router


def test_two_routers_share_one_stream_read_by_the_cli(redis_server, sims, capsys):
    a = on_redis(redis_server, sims)
    try:
        b = on_redis(redis_server, sims)
        try:
            for router in (a, b, a, b, b):
                assert chat(router).status_code == 200
            rows = rows_when(a, 5, by="model")
        finally:
            b.__exit__(None, None, None)
    finally:
        a.__exit__(None, None, None)
    assert rows == [
        {
            "model": MODEL,
            "requests": 5,
            "errors": 0,
            "prompt_tokens": rows[0]["prompt_tokens"],
            "completion_tokens": 15,
            "cost": 0.0,
        }
    ]
    assert int(redis_server.command("XLEN", "inferscale:usage").split(b"\r\n")[0][1:]) == 5
    # Durable: both routers are gone, the CLI reads the stream itself.
    assert (
        main(["usage", "--redis-url", redis_server.url, "--by", "model", "--format", "json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["requests"] == 5 and out["rows"][0]["completion_tokens"] == 15
    assert main(["usage", "--redis-url", redis_server.url, "--by", "nonsense"]) == 2


def test_redis_down_the_request_succeeds_and_the_record_is_dropped(redis_server, sims):
    router = on_redis(redis_server, sims)
    try:
        assert chat(router).status_code == 200
        rows_when(router, 1, by="model")
        redis_server.kill()
        assert chat(router).status_code == 200
        dropped = 0.0
        for _ in range(100):
            dropped = router.metric("inferscale_router_usage_records_total", outcome="dropped")
            if dropped >= 1:
                break
            time.sleep(0.1)
        assert dropped == 1
        assert report(router).status_code == 503
    finally:
        router.__exit__(None, None, None)


def test_the_cli_reads_a_router_and_says_why_it_cannot(routed_with_ledger, tmp_path, capsys):
    router = routed_with_ledger
    assert chat(router).status_code == 200
    rows_when(router, 1)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    args = ["usage", "--router", router.base_url, "--admin-token-file", str(token)]
    assert main([*args, "--by", "client,model"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "client,model,requests,errors,prompt_tokens,completion_tokens,cost"
    assert lines[1].startswith(f",{MODEL},1,0,")
    token.write_text("wrong")
    assert main(args) == 2
    assert "HTTP 403" in capsys.readouterr().err
    assert main(["usage", "--router", "http://127.0.0.1:9", "--since", "2026-01-01"]) == 2
    assert main(["usage", "--router", router.base_url, "--since", "yesterday"]) == 2


def test_a_batch_larger_than_a_script_call_is_written_whole_and_in_order(redis_server):
    """A batch goes as several script calls (WRITE_CHUNK records each): none lost or reordered."""
    records = [
        usage_record(
            ts=1_700_000_000.0 + i, request_id=f"r-{i}", client="team/a", team="", route="",
            model=MODEL, served_by="sim-0", status=200,
            usage={"prompt_tokens": 1, "completion_tokens": i}, cost=0.0, ms=1.0,
        )
        for i in range(2 * WRITE_CHUNK + 7)
    ]  # fmt: skip

    async def write_and_read() -> list[Any]:
        ledger = UsageLedger(
            redis_client(redis_server.url, 2.0), "test:usage", max_records=100_000,
            ring_records=10, retention_days=36_500, buffer_records=10_000, flush_seconds=1,
            report_max_records=10_000,
        )  # fmt: skip
        for record in records:
            ledger.record(record)
        await ledger.flush()
        read = await ledger.read(0)
        await ledger.close()
        assert ledger.written == len(records) and ledger.dropped == 0
        return read

    assert asyncio.run(write_and_read()) == records
