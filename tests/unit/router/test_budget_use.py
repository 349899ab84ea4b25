"""The budget report: which counters the policies set, read from the limiter that counts them."""

from __future__ import annotations

from collections.abc import Iterable

from inferscale.router.access import Access
from inferscale.router.budget_use import budget_counters, budget_report
from inferscale.router.limits import CountersUnavailable, Policy, extra_budgets
from tests.unit.router.test_limits import NOON, Clock, limiter

DAY, MONTH = "2025-03-14", "2025-03"


def member(client: str = "t/a") -> Policy:
    extra = extra_budgets(client, "t/research", (2.0, None), (None, 10_000), (None, 50.0))
    return Policy(client, tokens_per_day=1000, team="t/research", extra=extra)


def test_the_counters_are_the_budgets_a_policy_sets():
    counters = budget_counters(
        [member(), Policy("t/rpm", requests_per_minute=5), Policy("t/m", tokens_per_month=9)],
        DAY,
        MONTH,
    )
    assert counters == {
        ("t/a", DAY): "tokens_day",
        ("t/a", f"{DAY}$"): "micro_usd_day",
        ("team:t/research", MONTH): "tokens_month",
        ("team:t/research", f"{MONTH}$"): "micro_usd_month",
        ("t/m", MONTH): "tokens_month",
    }


class FakeShared:
    """A shared limiter whose counters read as given, or fail."""

    def __init__(self, values: list[int] | None, degraded: str | None = None) -> None:
        self.values = values
        self.why = degraded
        self.asked: list[tuple[str, str]] = []

    def degraded(self) -> str | None:
        return self.why

    async def read_counters(self, counters: Iterable[tuple[str, str]]) -> list[int]:
        self.asked = list(counters)
        if self.values is None:
            raise CountersUnavailable("ConnectionError: refused")
        return self.values


def access_with(shared: FakeShared | None) -> Access:
    access = Access(limiter(Clock()), shared)  # type: ignore[arg-type]
    access.policies = {"t/a": member(), "t/free": Policy("t/free")}
    return access


async def test_without_redis_the_report_is_this_routers_own_count():
    access = access_with(None)
    policy = access.policies["t/a"]
    _, charge = access.local.admit(policy, 40)
    assert charge is not None
    access.local.settle(policy, charge, 30, False, usd=0.25)
    report = await budget_report(access, "r1", NOON)
    assert (report.day, report.month, report.shared, report.problem) == (DAY, MONTH, False, None)
    assert report.holders["t/a"].tokens_day == 30
    assert report.holders["t/a"].micro_usd_day == 250_000
    assert report.holders["team:t/research"].tokens_month == 30
    assert "t/free" not in report.holders


async def test_with_redis_the_report_is_redis_and_says_when_it_could_not_read_it():
    shared = FakeShared([5, 6, 7, 8])
    report = await budget_report(access_with(shared), "r1", NOON)
    assert report.shared and report.problem is None
    assert len(shared.asked) == 4
    assert report.holders["team:t/research"].micro_usd_month == 8
    failing = await budget_report(access_with(FakeShared(None)), "r1", NOON)
    assert failing.problem == "Redis unreachable: ConnectionError: refused"
    assert failing.holders["t/a"].tokens_day == 0  # this router's own view: nothing yet
    degraded = await budget_report(access_with(FakeShared([1, 2, 3, 4], "down")), "r1", NOON)
    assert degraded.problem == "down"
