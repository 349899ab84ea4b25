"""InferenceClient usage in status: the reporter against FakeKubeApi, the real credentials
publisher (which writes Ready beside it) and two routers' budget reports (httpx.MockTransport).
"""

from __future__ import annotations

from typing import Any

import httpx

from inferscale.config import AccessSettings
from inferscale.controller.client_usage import ClientUsageReporter
from inferscale.controller.credentials import CredentialSources, CredentialsPublisher
from tests.component.operator.test_route_status import API, SETTINGS, World
from tests.factories import client, key_secret

DAY = "2026-01-01"


class BudgetWorld(World):
    """World with an InferenceClient that has budgets and a team, and budget reports."""

    def __init__(self) -> None:
        super().__init__()
        self.budgets: dict[str, Any] = {}
        """Router IP -> its budget report (absent: that router answers 503)."""
        self.api.put(key_secret("app-key", "sk-client-key-0123456789", namespace="team"))
        obj = client(
            budgets={"tokensPerDay": 1000, "usdPerDay": 2.0},
            team={"name": "research", "budgets": {"tokensPerMonth": 10_000}},
        )
        obj["metadata"]["generation"] = 1
        self.api.put(obj)
        inner = self.routers.handler

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path != "/admin/v1/budgets":
                return inner(request)
            report = self.budgets.get(request.url.host)
            if report is None:
                return httpx.Response(503, json={"error": {"message": "starting"}})
            return httpx.Response(200, json=report)

        self.client._transport = httpx.MockTransport(handler)
        self.credentials = CredentialsPublisher(
            self.api,
            SETTINGS,
            AccessSettings(),
            "inferscale-system",
            lambda: CredentialSources([self.provider], [self.stored()], self.routers_pods),
            client=self.client,
        )
        self.memo["credentials"].publisher = self.credentials
        self.reporter.usage = ClientUsageReporter(self.api, SETTINGS, lambda: [self.stored()])

    def stored(self) -> dict[str, Any]:
        """The client as the index shows it (with its status)."""
        return self.api.objects[(API, "InferenceClient", "team", "app")]

    def report(self, ip: str, holders: dict[str, Any], shared: bool = True, **kw: Any) -> None:
        self.budgets[ip] = {
            "process": ip,
            "day": DAY,
            "month": DAY[:7],
            "shared": shared,
            "holders": holders,
            **kw,
        }


def usage_condition(status: dict[str, Any]) -> tuple[str, str] | None:
    for c in status.get("conditions") or []:
        if c["type"] == "UsageReported":
            return c["status"], c["reason"]
    return None


async def test_the_clients_usage_against_its_budgets_beside_ready_and_through_bad_data():
    world = BudgetWorld()
    try:
        holders = {
            "team/app": {"tokensDay": 250, "microUsdDay": 500_000},
            "team:team/research": {"tokensMonth": 9_000},
        }
        for ip in ("10.9.0.1", "10.9.0.2"):
            world.report(ip, holders)
        for _ in range(3):
            await world.sync()
        status = world.status("InferenceClient", "app")
        assert status["usage"] == {
            "day": DAY,
            "client": {"tokensToday": 250, "usdToday": 0.5},
            "team": {"tokensThisMonth": 9000},
            "budgetUsedPercent": 90,
        }
        assert usage_condition(status) == ("True", "Counted")
        ready = [c for c in status["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["reason"] == "KeyAccepted"
        writes = world.writes("InferenceClient")
        await world.sync()
        assert world.writes("InferenceClient") == writes  # nothing changed: nothing written
        # One router loses Redis: the figures may be incomplete, and the condition says why.
        world.report("10.9.0.2", holders, problem="Redis unreachable: TimeoutError")
        await world.sync()
        status = world.status("InferenceClient", "app")
        assert usage_condition(status) == ("False", "Incomplete")
        assert "Redis unreachable" in next(
            c["message"] for c in status["conditions"] if c["type"] == "UsageReported"
        )
        # Invalid data from one, nothing from the other: the last figures stay.
        world.budgets["10.9.0.1"] = {"process": "x", "day": "yesterday"}
        del world.budgets["10.9.0.2"]
        await world.sync()
        status = world.status("InferenceClient", "app")
        assert usage_condition(status) == ("False", "RoutersUnreachable")
        assert status["usage"]["client"]["tokensToday"] == 250
        assert [c["type"] for c in status["conditions"]].count("Ready") == 1
        # The credentials publisher writes Ready again (the client disabled): the usage
        # condition stays beside it.
        world.stored()["spec"]["disabled"] = True
        await world.sync()
        status = world.status("InferenceClient", "app")
        ready = [c for c in status["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "False"
        assert usage_condition(status) == ("False", "RoutersUnreachable")
    finally:
        await world.close()
