"""SpendLedger: prices, UTC windows, other routers' spend, caps and Retry-After (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferscale.api.v1alpha1.inference_route import SpendCaps
from inferscale.protocol.spend import DAY, HOUR, ElsewhereSpend, window_start
from inferscale.router.spend import SpendLedger, cost

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 1_000_000, "completion_tokens": 500_000}, 0.15 + 0.30),
        ({"prompt_tokens": 2000}, 0.0003),
        ({"completion_tokens": True}, 0.0),
        ({"prompt_tokens": -5}, 0.0),
        (None, 0.0),
        ("junk", 0.0),
    ],
)
def test_cost(usage, expected):
    assert cost(usage, 0.15, 0.60) == pytest.approx(expected)


def test_windows_are_utc_hours_and_days():
    assert window_start(T0 + 3599, HOUR) == T0
    assert window_start(T0 + 3600, HOUR) == T0 + 3600
    assert window_start(T0 + DAY - 1, DAY) == T0


def test_spend_rolls_over_with_the_hour_and_the_day():
    ledger = SpendLedger()
    ledger.add("team/r", 1.0, T0 + 10)
    ledger.add("team/r", 2.0, T0 + 20)
    ledger.add("team/r", 0.0, T0 + 30)
    assert ledger.mine("team/r", T0 + 30) == (3.0, 3.0)
    assert ledger.mine("team/r", T0 + HOUR + 1) == (0.0, 3.0)  # a new hour, the same day
    ledger.add("team/r", 1.0, T0 + HOUR + 5)
    assert ledger.mine("team/r", T0 + HOUR + 5) == (1.0, 4.0)
    assert ledger.mine("team/r", T0 + DAY + 5) == (0.0, 0.0)
    assert ledger.mine("other/r", T0) == (0.0, 0.0)
    assert ledger.routes() == ["team/r"]


def test_caps_count_the_other_routers_in_the_same_windows():
    ledger = SpendLedger()
    caps = SpendCaps(max_per_hour=5)
    ledger.add("team/r", 2.0, T0 + 10)
    assert not ledger.capped("team/r", caps, T0 + 10)
    ledger.set_elsewhere(T0, T0, {"team/r": (3.0, 3.0)})
    assert ledger.total("team/r", T0 + 10) == (5.0, 5.0)
    assert ledger.capped("team/r", caps, T0 + 10)
    # The next hour: the other routers' old window no longer counts.
    assert not ledger.capped("team/r", caps, T0 + HOUR)
    assert not ledger.capped("team/r", SpendCaps(), T0 + 10)


def test_retry_after_is_until_the_capped_window_ends():
    ledger = SpendLedger()
    ledger.add("team/r", 10.0, T0 + 100)
    assert ledger.retry_after("team/r", SpendCaps(max_per_hour=5), T0 + 100) == HOUR - 100
    both = SpendCaps(max_per_hour=5, max_per_day=10)
    assert ledger.retry_after("team/r", both, T0 + 100) == DAY - 100


def test_elsewhere_document():
    doc = ElsewhereSpend.model_validate(
        {"hourStart": T0, "dayStart": T0, "routes": {"team/r": {"hour": 1.5, "day": 2}}}
    )
    assert doc.routes["team/r"].day == 2
    for bad in (
        {"hourStart": -1, "dayStart": 0},
        {"hourStart": 0},
        {"hourStart": 0, "dayStart": 0, "routes": {"r": {"hour": -1}}},
    ):
        with pytest.raises(ValidationError):
            ElsewhereSpend.model_validate(bad)
