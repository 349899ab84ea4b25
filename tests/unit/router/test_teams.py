"""Teams and money budgets in the router: counted per key and per team, refused by name."""

from __future__ import annotations

from inferscale.protocol.credentials import ClientKey, RouterCredentials, key_digest
from inferscale.router.access import Access, Grant, Refusal
from inferscale.router.limits import LocalLimiter, Policy
from tests.unit.router.test_limits import Clock

KEY_A = "key-team-a-0123456789abcdef"
KEY_B = "key-team-b-0123456789abcdef"


def team_access(clock: Clock, budgets: dict[str, object], team: dict[str, object]) -> Access:
    access = Access(LocalLimiter(clock.monotonic, clock.wall))
    keys = [
        ClientKey.model_validate(
            {
                "digest": key_digest(key),
                "client": client,
                "budgets": budgets,
                "team": "t/research",
                "teamBudgets": team,
            }
        )
        for key, client in ((KEY_A, "t/a"), (KEY_B, "t/b"))
    ]
    access.replace(RouterCredentials(version=1, client_keys=keys))
    return access


def policy(access: Access, key: str) -> Policy:
    found = access.identify(f"Bearer {key}")
    assert isinstance(found, Policy)
    return found


def test_a_teams_token_budget_is_shared_by_its_clients():
    access = team_access(Clock(), {}, {"tokensPerDay": 100})
    a, b = policy(access, KEY_A), policy(access, KEY_B)
    assert a.team == "t/research"
    grant = access.admit_in_process(a, 10)
    assert isinstance(grant, Grant)
    access.settle(grant, {"total_tokens": 70}, 200)
    grant = access.admit_in_process(b, 10)
    assert isinstance(grant, Grant)
    access.settle(grant, {"total_tokens": 30}, 200)  # 100 spent by the team
    refused = access.admit_in_process(a, 10)
    assert isinstance(refused, Refusal) and refused.status == 429
    assert refused.code == "insufficient_quota"
    assert "team `t/research`" in refused.message and "tokens per day" in refused.message
    assert KEY_A not in refused.message and "t/a" not in refused.message


def test_a_money_budget_counts_what_answers_cost_and_names_itself():
    access = team_access(Clock(), {"usdPerDay": 0.5}, {})
    a, b = policy(access, KEY_A), policy(access, KEY_B)
    grant = access.admit_in_process(a, 10)
    assert isinstance(grant, Grant)
    access.settle(grant, {"total_tokens": 10}, 200, usd=0.49)
    grant = access.admit_in_process(a, 10)  # 0.49 < 0.50: still admitted
    assert isinstance(grant, Grant)
    access.settle(grant, {"total_tokens": 10}, 200, usd=0.02)
    refused = access.admit_in_process(a, 10)
    assert isinstance(refused, Refusal) and refused.status == 429
    assert "USD per day (limit $0.50) by client `t/a`" in refused.message
    assert refused.kind == "insufficient_quota"
    assert isinstance(access.admit_in_process(b, 10), Grant)  # b's own budget is untouched


def test_a_teams_money_budget_spans_its_clients_and_resets_the_next_day():
    clock = Clock()
    access = team_access(clock, {}, {"usdPerDay": 1.0, "usdPerMonth": 5.0})
    a, b = policy(access, KEY_A), policy(access, KEY_B)
    grant = access.admit_in_process(a, 10)
    assert isinstance(grant, Grant)
    access.settle(grant, None, 200, usd=1.0)
    refused = access.admit_in_process(b, 10)
    assert isinstance(refused, Refusal)
    assert "USD per day (limit $1.00) by team `t/research`" in refused.message
    assert int(refused.headers["Retry-After"]) > 0 if refused.headers else False
    clock.advance(86_400)
    assert isinstance(access.admit_in_process(b, 10), Grant)


def test_a_failed_request_costs_no_money_and_its_tokens_are_refunded():
    access = team_access(Clock(), {}, {"tokensPerDay": 15, "usdPerDay": 1.0})
    a = policy(access, KEY_A)
    for _ in range(3):
        grant = access.admit_in_process(a, 10)
        assert isinstance(grant, Grant)
        access.settle(grant, None, 502)
    assert isinstance(access.admit_in_process(a, 10), Grant)
