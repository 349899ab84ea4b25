"""Token buckets, budgets and the access checks, on injected clocks (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inferscale.protocol.credentials import ClientKey, RouterCredentials, key_digest
from inferscale.router.access import (
    ANONYMOUS,
    Access,
    Grant,
    Refusal,
    estimate_tokens,
    policy_of,
    used_tokens,
)
from inferscale.router.limits import (
    LocalLimiter,
    Policy,
    bucket_admit,
    retry_after_header,
    windows,
)

NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, mono: float = 1000.0, wall: float = NOON) -> None:
        self.mono = mono
        self.wall_time = wall

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_time

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_time += seconds


def limiter(clock: Clock) -> LocalLimiter:
    return LocalLimiter(clock.monotonic, clock.wall)


def test_a_bucket_refills_continuously_up_to_its_capacity():
    # 60 per minute: one per second.
    assert bucket_admit(0.0, 0.0, 0.5, 60, 1) == (0.5, 0.5, 0.5)
    assert bucket_admit(0.0, 0.0, 1.0, 60, 1) == (0.0, 1.0, 0.0)
    assert bucket_admit(60.0, 0.0, 3600.0, 60, 1) == (59.0, 3600.0, 0.0)  # capped
    assert bucket_admit(-30.0, 0.0, 0.0, 60, 1) == (-30.0, 0.0, 31.0)  # debt waits it out


def test_requests_per_minute_burst_then_sustained_rate_and_exact_retry_after():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", requests_per_minute=60)
    admitted = sum(lim.admit(policy, 0)[0].allowed for _ in range(100))
    assert admitted == 60  # a full minute's burst, not one more
    verdict, charge = lim.admit(policy, 0)
    assert not verdict.allowed and charge is None
    assert verdict.limit == "requests" and verdict.limit_value == 60
    assert verdict.retry_after == pytest.approx(1.0)
    clock.advance(0.5)
    assert lim.admit(policy, 0)[0].retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert lim.admit(policy, 0)[0].allowed
    # Sustained: over the next 10 s exactly 10 more.
    got = 0
    for _ in range(100):
        clock.advance(0.1)
        got += lim.admit(policy, 0)[0].allowed
    assert got == 10


def test_tokens_per_minute_take_the_estimate_then_the_real_usage():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_minute=600)  # 10 tokens per second
    verdict, charge = lim.admit(policy, 500)
    assert verdict.allowed and charge is not None and charge.tokens == 500
    # The estimate leaves 100: a request estimated at 200 waits 10 s.
    refused, _ = lim.admit(policy, 200)
    assert refused.limit == "tokens" and refused.retry_after == pytest.approx(10.0)
    # The response used only 50: the difference comes back at once.
    assert lim.settle(policy, charge, 50, failed=False) == -450
    assert lim.admit(policy, 200)[0].allowed


def test_usage_above_the_estimate_is_debt_that_later_requests_wait_out():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_minute=600)
    _, charge = lim.admit(policy, 10)
    lim.settle(policy, charge, 1200, failed=False)  # 1190 more than estimated: -600 left
    verdict, _ = lim.admit(policy, 1)
    assert verdict.retry_after == pytest.approx(60.1)


def test_a_failed_request_is_refunded_and_unknown_usage_keeps_the_estimate():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_minute=100)
    _, charge = lim.admit(policy, 100)
    assert lim.settle(policy, charge, None, failed=True) == -100
    assert lim.admit(policy, 100)[0].allowed
    _, charge = lim.admit(Policy("t/b", tokens_per_minute=100), 100)
    assert lim.settle(policy, charge, None, failed=False) == 0


def test_an_estimate_above_the_bucket_waits_for_a_full_bucket_not_forever():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_minute=100)
    verdict, charge = lim.admit(policy, 5000)
    assert verdict.allowed and charge is not None and charge.tokens == 100


def test_a_request_refused_by_one_limit_uses_up_no_other():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", requests_per_minute=10, tokens_per_minute=100)
    verdict, charge = lim.admit(policy, 100)
    assert verdict.allowed and charge is not None
    for _ in range(5):
        assert lim.admit(policy, 100)[0].limit == "tokens"
    lim.settle(policy, charge, None, failed=True)  # the tokens come back, not the request
    allowed = sum(lim.admit(policy, 1)[0].allowed for _ in range(20))
    assert allowed == 9  # the refused requests did not use the request bucket


def test_budgets_per_utc_day_and_month_with_retry_after_to_the_window_end():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_day=1000, tokens_per_month=1500)
    _, charge = lim.admit(policy, 10)
    assert charge is not None and (charge.day, charge.month) == ("2025-03-14", "2025-03")
    lim.settle(policy, charge, 1000, failed=False)
    verdict, _ = lim.admit(policy, 1)
    assert verdict.limit == "tokens_per_day" and verdict.limit_value == 1000
    assert verdict.retry_after == pytest.approx(12 * 3600)  # to midnight UTC
    clock.advance(12 * 3600)  # the next day: the day budget is fresh
    _, charge = lim.admit(policy, 10)
    lim.settle(policy, charge, 500, failed=False)
    verdict, _ = lim.admit(policy, 1)
    assert verdict.limit == "tokens_per_month"
    assert verdict.retry_after == pytest.approx(
        datetime(2025, 4, 1, tzinfo=UTC).timestamp() - clock.wall()
    )


def test_a_budget_counts_from_the_shared_floor():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_day=1000)
    lim.shared[("t/a", "2025-03-14")] = 995
    assert lim.admit(policy, 10)[0].allowed
    assert lim.admit(policy, 10)[0].limit == "tokens_per_day"
    assert lim.take_budget_counts() == {("t/a", "2025-03-14"): 10}
    assert lim.take_budget_counts() == {}
    lim.add_budget_counts({("t/a", "2025-03-14"): 3})
    assert lim.take_budget_counts() == {("t/a", "2025-03-14"): 3}


def test_shared_floors_of_past_windows_are_pruned():
    # Days of syncs leave the current day's and month's floors only (bounded memory).
    lim = limiter(Clock())
    for day in range(1, 29):
        for holder in ("t/a", "team:t/x"):
            lim.set_counter(holder, f"2025-02-{day:02d}", day, 0)
            lim.set_counter(holder, f"2025-02-{day:02d}$", day, 0)
            lim.set_counter(holder, "2025-02", day, 0)
    assert len(lim.shared) == 6
    lim.set_counter("t/a", "2025-03-01", 7, 0)
    assert lim.shared == {("t/a", "2025-03-01"): 7}
    # A sync that straddled midnight reports the day before: its floor is not kept again.
    lim.set_counter("t/a", "2025-02-28", 99, 0)
    lim.set_counter("t/a", "2025-02", 99, 0)
    assert lim.shared == {("t/a", "2025-03-01"): 7}
    lim.set_counter("t/a", "2025-03", 8, 0)
    assert lim.shared[("t/a", "2025-03")] == 8


@pytest.mark.parametrize(
    ("wall", "day", "month", "day_left"),
    [
        (datetime(2024, 12, 31, 23, 59, tzinfo=UTC), "2024-12-31", "2024-12", 60),
        (datetime(2024, 2, 29, 0, 0, tzinfo=UTC), "2024-02-29", "2024-02", 86_400),
    ],
)
def test_windows_roll_at_midnight_and_month_ends(wall, day, month, day_left):
    at = windows(wall.timestamp())
    assert (at.day, at.month) == (day, month)
    assert at.day_left == pytest.approx(day_left)
    assert at.month_left >= at.day_left


def test_retry_after_rounds_up_to_whole_seconds_at_least_one():
    assert retry_after_header(0.0) == "1"
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.01) == "2"
    assert retry_after_header(43_200) == "43200"


def test_estimates_and_usage():
    assert estimate_tokens(400, {"max_tokens": 50}) == 150
    assert estimate_tokens(400, {"max_completion_tokens": 20, "max_tokens": 50}) == 120
    assert estimate_tokens(400, {"max_tokens": True}) == 100
    assert estimate_tokens(400, {"max_tokens": -5}) == 100
    assert used_tokens({"prompt_tokens": 3, "completion_tokens": 4}) == 7
    assert used_tokens({"total_tokens": 9, "prompt_tokens": 3}) == 9
    assert used_tokens({"prompt_tokens": 3}) == 3
    assert used_tokens({}) is None and used_tokens(None) is None


KEY = "client-key-0123456789"


def access(**key: object) -> Access:
    a = Access(LocalLimiter(Clock().monotonic, Clock().wall))
    client = ClientKey.model_validate({"digest": key_digest(KEY), "client": "t/app", **key})
    a.replace(RouterCredentials(version=1, client_keys=[client], require_client_key=True))
    return a


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Bearer ", "missing_api_key"),
        ("Basic abc", "missing_api_key"),
        ("Bearer wrong-key-0123456789", "invalid_api_key"),
        (f"Bearer {KEY}x", "invalid_api_key"),
    ],
)
def test_identify_refuses_missing_and_unknown_keys_with_401(header, code):
    refusal = access().identify(header)
    assert isinstance(refusal, Refusal) and refusal.status == 401 and refusal.code == code
    assert refusal.headers and "WWW-Authenticate" in refusal.headers


def test_identify_finds_the_clients_policy_and_is_case_insensitive_about_bearer():
    a = access(limits={"requestsPerMinute": 5})
    for header in (f"Bearer {KEY}", f"bearer {KEY}", f"Bearer  {KEY} "):
        policy = a.identify(header)
        assert isinstance(policy, Policy) and policy.client == "t/app"
        assert policy.requests_per_minute == 5 and policy.limited


def test_without_required_keys_unknown_callers_are_anonymous():
    a = access()
    a.replace(
        RouterCredentials(
            version=2,
            client_keys=[ClientKey(digest=key_digest(KEY), client="t/app")],
            require_client_key=False,
        )
    )
    assert a.active and not a.required
    assert a.identify("Bearer unused") is ANONYMOUS
    assert a.identify(None) is ANONYMOUS
    assert not ANONYMOUS.limited


def test_authorize_and_visible_follow_allowed_models():
    a = access(allowedModels=["llama", "qwen"])
    policy = a.identify(f"Bearer {KEY}")
    assert isinstance(policy, Policy)
    assert a.authorize(policy, "llama") is None
    refusal = a.authorize(policy, "gpt-4o")
    assert refusal is not None and refusal.status == 403 and refusal.code == "model_not_allowed"
    assert a.visible(policy, ["gpt-4o", "llama", "qwen"]) == ["llama", "qwen"]
    assert a.visible(policy_of(ClientKey(digest=key_digest(KEY), client="t/b")), ["x"]) == ["x"]


async def test_admit_answers_429_with_retry_after_and_openai_types():
    a = access(limits={"requestsPerMinute": 1}, budgets={"tokensPerDay": 10})
    policy = a.identify(f"Bearer {KEY}")
    assert isinstance(policy, Policy)
    grant = await a.admit(policy, 5)
    assert isinstance(grant, Grant)
    refusal = await a.admit(policy, 5)
    assert isinstance(refusal, Refusal) and refusal.status == 429
    assert refusal.code == "rate_limit_exceeded" and refusal.kind == "requests"
    assert refusal.headers == {"Retry-After": "60"}
    a.settle(grant, {"total_tokens": 10}, 200)
    a.local.clients["t/app"].requests = None  # a fresh request bucket: only the budget is left
    refusal = await a.admit(policy, 5)
    assert isinstance(refusal, Refusal) and refusal.code == "insufficient_quota"
    assert "tokens per day" in refusal.message
    assert a.refused[("requests", "t/app")] == 1
    assert a.refused[("tokens_per_day", "t/app")] == 1
    assert any('reason="requests"' in line for line in a.metric_lines())


@pytest.mark.parametrize(
    ("limits", "limited", "budgeted"),
    [
        ({}, False, False),
        ({"requests_per_minute": 1}, True, False),
        ({"tokens_per_minute": 1}, True, False),
        ({"tokens_per_day": 1}, True, True),
        ({"tokens_per_month": 1}, True, True),
    ],
)
def test_a_policy_knows_once_whether_it_is_limited_and_budgeted(limits, limited, budgeted):
    policy = Policy("t/a", **limits)
    assert (policy.limited, policy.budgeted) == (limited, budgeted)
    assert policy == Policy("t/a", **limits) and hash(policy) == hash(Policy("t/a", **limits))


async def test_in_process_admission_is_admit_without_a_coroutine():
    a = access(limits={"requestsPerMinute": 2}, budgets={"tokensPerDay": 100})
    b = access(limits={"requestsPerMinute": 2}, budgets={"tokensPerDay": 100})
    policy = a.identify(f"Bearer {KEY}")
    assert isinstance(policy, Policy)
    for _ in range(3):
        got, expected = a.admit_in_process(policy, 10), await b.admit(policy, 10)
        assert type(got) is type(expected)
        if isinstance(got, Grant) and isinstance(expected, Grant):
            assert got.charge == expected.charge
        else:
            assert got == expected
    assert a.refused == b.refused == {("requests", "t/app"): 1}


def test_in_process_admission_refuses_to_bypass_a_shared_store():
    a = access(limits={"requestsPerMinute": 2})
    a.shared = object()  # type: ignore[assignment]
    policy = a.identify(f"Bearer {KEY}")
    assert isinstance(policy, Policy)
    with pytest.raises(RuntimeError, match="shared"):
        a.admit_in_process(policy, 1)


def test_a_new_day_drops_the_old_days_count_and_keeps_the_month():
    clock = Clock()
    lim = limiter(clock)
    policy = Policy("t/a", tokens_per_day=100, tokens_per_month=1000)
    assert lim.admit(policy, 60)[0].allowed
    clock.advance(86_400)  # 2025-03-15
    assert lim.admit(policy, 60)[0].allowed  # a new day's budget
    clock.advance(86_400)  # 2025-03-16: the 14th is dropped, the month kept
    verdict, charge = lim.admit(policy, 60)
    assert verdict.allowed and charge is not None
    assert lim.clients["t/a"].budgets == {"2025-03-16": 60, "2025-03": 180}
    assert lim.used("t/a", lim.clients["t/a"], "2025-03") == 180
