"""Spend reports -> totals and what each router is sent; routes and providers -> status (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from inferscale.protocol.spend import ProviderReport, SpendReport
from inferscale.reconcile.credentials import KeyState
from inferscale.reconcile.route_status import (
    RouteInputs,
    SpendBook,
    failing,
    provider_status,
    route_status,
)
from inferscale.reconcile.routing import compile_routes
from tests.factories import model, pod, provider, route

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW = T0 + 1800
NOW_TEXT = "2026-01-01T00:30:00Z"


def report(
    process: str, at: float = NOW, **routes: tuple[float, float, float | None]
) -> SpendReport:
    return SpendReport.model_validate(
        {
            "process": process,
            "now": at,
            "hourStart": int(at // 3600) * 3600,
            "dayStart": int(at // 86400) * 86400,
            "routes": {
                r.replace("__", "/"): {"hour": h, "day": d, "lastSpillAt": s}
                for r, (h, d, s) in routes.items()
            },
        }
    )


def test_the_book_sums_processes_and_tells_each_what_the_others_spent():
    book = SpendBook()
    book.update(
        [report("a", team__r=(1.0, 5.0, NOW - 5)), report("b", team__r=(2.0, 2.0, None))], NOW
    )
    assert book.totals(NOW) == {"team/r": (3.0, 7.0)}
    elsewhere_a = book.elsewhere("a", NOW)
    assert elsewhere_a.routes["team/r"].hour == 2.0 and elsewhere_a.routes["team/r"].day == 2.0
    assert elsewhere_a.hour_start == T0 and elsewhere_a.day_start == T0
    # A new router (no report yet) is sent everything.
    assert book.elsewhere("new", NOW).routes["team/r"].day == 7.0
    assert book.last_spill("team/r") == NOW - 5
    assert book.last_spill("team/other") is None


def test_a_gone_process_counts_until_its_window_ends():
    book = SpendBook()
    book.update([report("old", at=T0 + 10, team__r=(4.0, 4.0, None))], T0 + 10)
    book.update([report("new", team__r=(1.0, 1.0, None))], NOW)  # the router restarted
    assert book.totals(NOW) == {"team/r": (5.0, 5.0)}
    # The next hour: the old process's hour is over, its day is not.
    assert book.totals(T0 + 3700) == {"team/r": (0.0, 5.0)}
    # The next day: both are forgotten.
    book.update([], T0 + 86400 + 5)
    assert book.reports == {} and book.totals(T0 + 86400 + 5) == {}


def test_provider_health_is_merged_and_failing_means_the_last_call_failed():
    book = SpendBook()
    a = report("a")
    a.providers["team/p"] = ProviderReport(
        failures={"auth": 2},
        last_error="refused",
        last_reason="auth",
        last_error_at=NOW - 10,
        last_ok_at=NOW - 100,
    )
    b = report("b")
    b.providers["team/p"] = ProviderReport(failures={"auth": 1, "timeout": 1}, last_ok_at=NOW - 50)
    book.update([a, b], NOW)
    merged = book.provider("team/p")
    assert merged is not None and merged.failures == {"auth": 3, "timeout": 1}
    assert merged.last_ok_at == NOW - 50 and merged.last_reason == "auth"
    assert failing(merged, NOW, 300)
    assert not failing(merged, NOW + 400, 300)  # too long ago
    recovered = merged.model_copy(update={"last_ok_at": NOW - 1})
    assert not failing(recovered, NOW, 300)
    assert not failing(None, NOW, 300) and book.provider("team/none") is None


def inputs(models, routes, pods, providers, keys=None, book=None, **kw: Any) -> RouteInputs:
    compiled = compile_routes(models, routes, pods, providers=providers)
    table_providers = {k: frozenset(v.models) for k, v in compiled.providers.items()}
    return RouteInputs(
        models=compiled.models,
        served=compiled.served,
        providers=table_providers,
        problems=compiled.problems,
        keys=keys or {},
        book=book or SpendBook(),
        now=kw.get("now", NOW),
        now_text=NOW_TEXT,
        spilling_window=30,
        health_window=300,
    )


SPILL = [
    {"inferenceModel": "llama"},
    {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
]
KEY_OK = KeyState(True, "KeyAccepted", "the API key reached the routers", 1)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_served_route_with_spend_and_spillover():
    book = SpendBook()
    book.update([report("a", team__llama=(1.5, 6.0, NOW - 10))], NOW)
    r = route(backends=SPILL, spend={"maxPerHour": 5, "maxPerDay": 100})
    r["metadata"]["generation"] = 3
    status = route_status(
        r, inputs([model()], [r], [pod("p")], [provider()], {"team/openai": KEY_OK}, book)
    )
    assert status is not None
    assert status["observedGeneration"] == 3
    assert status["readyBackends"] == 2
    assert status["spilling"] is True
    assert status["spend"] == {"lastHour": 1.5, "today": 6.0}
    assert conditions(status) == {
        "Ready": ("True", "PrimaryReady"),
        "Degraded": ("False", "AsExpected"),
        "SpendCapReached": ("False", "UnderCap"),
    }
    # The same world again: nothing to write.
    r["status"] = status
    assert (
        route_status(
            r, inputs([model()], [r], [pod("p")], [provider()], {"team/openai": KEY_OK}, book)
        )
        is None
    )


def test_a_cap_reached_and_spillover_long_ago():
    book = SpendBook()
    book.update([report("a", team__llama=(6.0, 6.0, NOW - 100))], NOW)
    r = route(backends=SPILL, spend={"maxPerHour": 5})
    status = route_status(
        r, inputs([model()], [r], [pod("p")], [provider()], {"team/openai": KEY_OK}, book)
    )
    assert status is not None and status["spilling"] is False
    cap = next(c for c in status["conditions"] if c["type"] == "SpendCapReached")
    assert (cap["status"], cap["reason"]) == ("True", "HourlyCapReached")
    assert (
        "spent 6.0000 of 5 this hour" in cap["message"] and "onCapReached: queue" in cap["message"]
    )


def test_a_missing_provider_key_says_so_without_the_key():
    missing = KeyState(False, "SecretNotFound", "Secret team/openai-key does not exist")
    r = route(backends=SPILL)
    status = route_status(
        r, inputs([model()], [r], [pod("p")], [provider()], {"team/openai": missing})
    )
    assert status is not None and status["readyBackends"] == 1
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ProviderKeyMissing"
    assert (
        "InferenceProvider team/openai: Secret team/openai-key does not exist"
        in degraded["message"]
    )


def test_a_model_at_zero_and_a_failing_provider():
    book = SpendBook()
    failing_report = report("a")
    failing_report.providers["team/openai"] = ProviderReport(
        failures={"status_5xx": 3},
        last_error="provider team/openai answered HTTP 500",
        last_reason="status_5xx",
        last_error_at=NOW - 5,
    )
    book.update([failing_report], NOW)
    r = route(backends=SPILL)
    status = route_status(
        r, inputs([model()], [r], [], [provider()], {"team/openai": KEY_OK}, book)
    )
    assert status is not None
    assert conditions(status)["Ready"] == ("False", "NoReadyReplica")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "spill over meanwhile" in ready["message"]
    assert conditions(status)["Degraded"] == ("True", "ProviderFailing")


@pytest.mark.parametrize(
    ("backends", "reason"),
    [
        ([{"provider": {"name": "nobody", "model": "x"}}], "NotServed"),
        (
            [
                {"inferenceModel": "llama"},
                {"provider": {"name": "nobody", "model": "x"}, "role": "fallback"},
            ],
            "PrimaryReady",
        ),
    ],
)
def test_problems_of_the_route_make_it_degraded(backends, reason):
    r = route(backends=backends)
    status = route_status(r, inputs([model()], [r], [pod("p")], [provider()]))
    assert status is not None
    assert conditions(status)["Ready"][1] == reason
    assert conditions(status)["Degraded"] == ("True", "BackendUnavailable")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "team/nobody does not exist" in degraded["message"]


def test_a_hosted_only_route_is_ready_with_a_key():
    r = route("chat", backends=[{"provider": {"name": "openai", "model": "gpt-4o-mini"}}])
    status = route_status(r, inputs([model()], [r], [], [provider()], {"team/openai": KEY_OK}))
    assert status is not None and conditions(status)["Ready"] == ("True", "PrimaryReady")
    assert "team/openai model gpt-4o-mini" in status["conditions"][0]["message"]


def test_provider_status_key_rotation_and_rejection():
    body = provider()
    body["metadata"]["generation"] = 2
    status = provider_status(
        body, KEY_OK, None, None, previous=None, now=NOW, now_text=NOW_TEXT, health_window=300
    )
    assert status is not None and status["observedGeneration"] == 2
    assert conditions(status) == {
        "Ready": ("True", "KeyAccepted"),
        "Degraded": ("False", "AsExpected"),
    }
    assert (
        provider_status(
            body, KEY_OK, None, None, previous=status, now=NOW, now_text=NOW_TEXT, health_window=300
        )
        is None
    )
    rotated = provider_status(
        body,
        KEY_OK,
        "2026-01-01T00:20:00Z",
        None,
        previous=status,
        now=NOW,
        now_text=NOW_TEXT,
        health_window=300,
    )
    assert (
        rotated is not None
        and "the key changed at 2026-01-01T00:20:00Z" in rotated["conditions"][0]["message"]
    )
    # lastTransitionTime is kept while the condition's status stays.
    assert (
        rotated["conditions"][0]["lastTransitionTime"]
        == status["conditions"][0]["lastTransitionTime"]
    )
    rejected = ProviderReport(
        failures={"auth": 4},
        last_error="refused (HTTP 401)",
        last_reason="auth",
        last_error_at=NOW - 1,
    )
    bad = provider_status(
        body, KEY_OK, None, rejected, previous=status, now=NOW, now_text=NOW_TEXT, health_window=300
    )
    assert bad is not None and conditions(bad)["Degraded"] == ("True", "KeyRejected")
    missing = KeyState(False, "KeyNotFound", "Secret team/openai-key has no key 'api-key'")
    gone = provider_status(
        body, missing, None, None, previous=None, now=NOW, now_text=NOW_TEXT, health_window=300
    )
    assert gone is not None and conditions(gone)["Ready"] == ("False", "KeyNotFound")
    pending = provider_status(
        body, None, None, None, previous=None, now=NOW, now_text=NOW_TEXT, health_window=300
    )
    assert pending is not None and conditions(pending)["Ready"] == ("Unknown", "CredentialsPending")


def test_an_ejected_provider_says_so_until_its_breaker_closes():
    body = provider()
    a, b = report("a"), report("b")
    a.providers["team/p"] = ProviderReport(
        failures={"status_5xx": 3},
        last_error="provider team/p answered HTTP 500",
        last_reason="status_5xx",
        last_error_at=NOW - 2,
        ejected_until=NOW + 5,
    )
    b.providers["team/p"] = ProviderReport(failures={"status_5xx": 1}, last_error_at=NOW - 20)
    book = SpendBook()
    book.update([a, b], NOW)
    merged = book.provider("team/p")
    assert merged is not None and merged.ejected_until == NOW + 5  # any router's ejection shows

    def degraded(at: float, health: ProviderReport) -> tuple[str, str]:
        status = provider_status(
            body, KEY_OK, None, health, previous=None, now=at, now_text=NOW_TEXT, health_window=300
        )
        assert status is not None
        return conditions(status)["Degraded"]

    assert degraded(NOW, merged) == ("True", "Ejected")
    # Past the ejection (the breaker is probing), the last call still failed: Failing.
    assert degraded(NOW + 6, merged) == ("True", "Failing")
    closed = merged.model_copy(update={"last_ok_at": NOW + 7, "ejected_until": None})
    assert degraded(NOW + 8, closed) == ("False", "AsExpected")


def test_a_cached_route_says_when_a_router_cannot_run_its_cache():
    r = route(cache={"enabled": True})
    book = SpendBook()
    book.update([report("a")], NOW)
    status = route_status(r, inputs([model()], [r], [pod("p")], [], book=book))
    assert status is not None and conditions(status)["CacheReady"] == ("True", "AsExpected")
    broken = report("b").model_copy(update={"cache_off": "OSError: model.zip missing"})
    book.update([broken], NOW)
    status = route_status(r, inputs([model()], [r], [pod("p")], [], book=book))
    assert status is not None
    cache = next(c for c in status["conditions"] if c["type"] == "CacheReady")
    assert (cache["status"], cache["reason"]) == ("False", "EmbeddingUnavailable")
    assert "b: OSError: model.zip missing" in cache["message"]
    assert conditions(status)["Ready"] == ("True", "PrimaryReady")  # never the route


def test_a_route_without_a_cache_has_no_cache_condition():
    r = route()
    status = route_status(r, inputs([model()], [r], [pod("p")], []))
    assert status is not None and "CacheReady" not in conditions(status)
