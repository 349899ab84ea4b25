"""Selecting routes compiled into the table: an entry of their own, candidates resolved."""

from __future__ import annotations

from typing import Any

from inferscale.protocol.spend import RouteReport, SpendReport
from inferscale.protocol.table import RoutingTable
from inferscale.reconcile.route_status import SpendBook, route_status
from inferscale.reconcile.routing import compile_routes
from tests.factories import model, route
from tests.unit.reconcile.test_route_status import NOW, conditions, inputs

CANDIDATES = [
    {"model": "small", "outputPricePerMillionTokens": 0.6},
    {"model": "big", "outputPricePerMillionTokens": 15, "tier": 1},
]


def selecting(name: str = "auto", candidates: list[dict[str, Any]] = CANDIDATES) -> dict[str, Any]:
    body = route(name, selection={"strongShare": 0.3, "candidates": candidates})
    del body["spec"]["backends"]
    return body


def test_a_selecting_route_is_an_entry_with_its_selection():
    compiled = compile_routes([model("small"), model("big")], [selecting()], [])
    assert compiled.problems == ()
    entry = compiled.models["auto"]
    assert entry.route.selection is not None and entry.route.selection.strong_share == 0.3
    assert [c.model for c in entry.route.selection.candidates] == ["small", "big"]
    assert entry.endpoints == [] and entry.backends == [] and entry.route_id == "team/auto"
    # What a router accepts (its own validator resolves the candidates again).
    RoutingTable(version=1, models=compiled.models)


def test_a_selecting_route_with_a_missing_candidate_is_left_out_and_reported():
    compiled = compile_routes([model("small")], [selecting()], [])
    assert "auto" not in compiled.models
    assert any("team/auto left out" in p and "'big'" in p for p in compiled.problems)


def test_a_selecting_route_cannot_take_a_served_name_or_select_a_selector():
    taken = compile_routes([model("small"), model("big")], [selecting("small")], [])
    assert any("already served" in p for p in taken.problems)
    chained = [*CANDIDATES[:1], {"model": "auto"}]
    compiled = compile_routes(
        [model("small"), model("big")], [selecting(), selecting("auto2", chained)], []
    )
    assert "auto2" not in compiled.models and "auto" in compiled.models


def test_a_selecting_route_is_ready_when_compiled_and_says_why_when_not():

    auto, models = selecting(), [model("small"), model("big")]
    status = route_status(auto, inputs(models, [auto], [], []))
    assert status is not None and conditions(status)["Ready"] == ("True", "Selecting")
    assert "small, big" in status["conditions"][0]["message"]
    status = route_status(auto, inputs(models[:1], [auto], [], []))
    assert status is not None and conditions(status)["Ready"] == ("False", "NotServed")
    assert conditions(status)["Degraded"] == ("True", "BackendUnavailable")


def test_a_selecting_routes_status_sums_every_routers_selections_and_savings():

    def seen(process: str, small: int, big: int, saved: float) -> SpendReport:
        route = RouteReport(selections={"small": small, "big": big}, cost_saved=saved)
        return SpendReport(
            process=process,
            now=NOW,
            hour_start=int(NOW // 3600 * 3600),
            day_start=int(NOW // 86400 * 86400),
            routes={"team/auto": route},
        )

    book = SpendBook()
    book.update([seen("a", 3, 1, 0.25), seen("b", 1, 0, 0.0000004)], NOW)
    assert book.selections("team/auto") == ({"small": 4, "big": 1}, 0.2500004)
    assert book.selections("team/other") == ({}, 0.0)
    auto = selecting()
    status = route_status(auto, inputs([model("small"), model("big")], [auto], [], [], book=book))
    assert status is not None
    assert status["selections"] == {"big": 1, "small": 4} and status["costSaved"] == 0.25
    plain = route("llama")
    status = route_status(plain, inputs([model()], [plain], [], [], book=book))
    assert status is not None and "selections" not in status and "costSaved" not in status


def test_a_router_without_its_difficulty_model_makes_a_selecting_route_degraded():
    report = SpendReport(
        process="a",
        now=NOW,
        hour_start=int(NOW // 3600 * 3600),
        day_start=int(NOW // 86400 * 86400),
        difficulty_error="cannot read difficulty.json: [Errno 2] No such file",
    )
    book = SpendBook()
    book.update([report], NOW)
    auto, models = selecting(), [model("small"), model("big")]
    status = route_status(auto, inputs(models, [auto], [], [], book=book))
    assert status is not None
    assert conditions(status)["Degraded"] == ("True", "DifficultyModelUnavailable")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "first candidate" in degraded["message"] and "difficulty.json" in degraded["message"]
    assert conditions(status)["Ready"] == ("True", "Selecting")  # still serving
    plain = route("llama")  # a route that does not select is not concerned
    status = route_status(plain, inputs([model()], [plain], [], [], book=book))
    assert status is not None and conditions(status)["Degraded"][0] == "False"
