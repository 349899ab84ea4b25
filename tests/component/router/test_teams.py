"""A team's money budget on a real router, priced from a hosted provider's answers.

The router prices each provider answer as it prices the routes' spend caps (the mock answers 9
prompt and 2 completion tokens; at 1 and 2 USD a token that is 13 USD), counts it against the
client's and its team's money budgets, and refuses past them with OpenAI's error shape and a
message that names the budget and the team, never the key. The usage ledger records the team.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from inferscale.protocol.credentials import key_digest
from tests.component.router.conftest import TOKEN, RunningRouter
from tests.component.router.mock_providers import KEY, MockOpenAI
from tests.component.router.test_usage import OPENAI_ID, rows_when

KEY_A = "key-team-a-0123456789abcdef"
KEY_B = "key-team-b-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def mock_openai() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


def priced_router(router: RunningRouter, mock: MockOpenAI) -> None:
    provider = {
        "type": "openai-compatible",
        "baseURL": mock.base_url + "/v1",
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
    assert router.push({"gpt": hosted}, providers={OPENAI_ID: provider}).status_code == 200
    team = {"team": "team/ml", "teamBudgets": {"usdPerDay": 20}}
    keys = [
        {"digest": key_digest(KEY_A), "client": "team/a", **team},
        {"digest": key_digest(KEY_B), "client": "team/b", **team},
    ]
    doc = {"version": 1, "clientKeys": keys, "providerKeys": {OPENAI_ID: KEY}}
    resp = httpx.put(router.base_url + "/admin/v1/credentials", json=doc, headers=ADMIN)
    assert resp.status_code == 200, resp.text


def test_a_teams_money_budget_refuses_with_openais_error_and_the_ledger_has_the_team(
    mock_openai,
):
    with RunningRouter(usage_flush_seconds=0.05) as router:
        priced_router(router, mock_openai)
        a = openai.OpenAI(base_url=router.base_url + "/v1", api_key=KEY_A, max_retries=0)
        b = openai.OpenAI(base_url=router.base_url + "/v1", api_key=KEY_B, max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        a.chat.completions.create(model="gpt", messages=messages)  # 13 USD of 20
        b.chat.completions.create(model="gpt", messages=messages)  # 26: spent
        with pytest.raises(openai.RateLimitError) as raised:
            a.chat.completions.create(model="gpt", messages=messages)
        body = raised.value.body
        assert isinstance(body, dict) and body["code"] == "insufficient_quota"
        assert "USD per day (limit $20.00) by team `team/ml`" in body["message"]
        assert KEY_A not in json.dumps(body)
        assert int(raised.value.response.headers["retry-after"]) >= 1
        rows = rows_when(router, 3, by="team,client,status")
    by = {(r["team"], r["client"], r["status"]): r for r in rows}
    assert by[("team/ml", "team/a", "200")]["cost"] == pytest.approx(13)
    assert by[("team/ml", "team/b", "200")]["cost"] == pytest.approx(13)
    assert by[("team/ml", "team/a", "429")]["requests"] == 1
