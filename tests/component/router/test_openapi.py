"""The published OpenAPI document matches the code and the routes served, and a short fuzz run
driven by it (schemathesis) gets no 5xx from a router in front of a sim."""

from __future__ import annotations

import json
from pathlib import Path

from inferscale.cli.main import main, openapi_text
from inferscale.router.app import create_app
from inferscale.router.openapi import build
from inferscale.router.settings import RouterSettings
from inferscale.router.table import EndpointTable
from tests.component.router import openapi_fuzz

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
ADMIN = "/admin/"


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every client route the app registers (admin API and catch-all out)."""
    app = create_app(RouterSettings(), EndpointTable(), admin_token=None, log_sink=None)
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        if route.method in ("HEAD", "*") or path.startswith(ADMIN):
            continue
        routes.add((route.method, path.replace("{id:.+}", "{id}")))
    return routes


def test_the_checked_in_document_is_the_generated_one():
    assert DOCUMENT.read_text() == openapi_text(), "run `make crds` to rewrite docs/openapi.json"


def test_the_document_describes_exactly_the_routes_served():
    documented = {
        (method.upper(), path) for path, item in build()["paths"].items() for method in item
    }
    assert documented == served_routes()


def test_every_documented_error_answer_is_an_openai_error_object():
    for item in build()["paths"].values():
        for operation in item.values():
            for status, answer in operation["responses"].items():
                if status != "200":
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error"


def test_a_short_fuzz_run_gets_no_5xx_and_the_router_stays_small():
    report = openapi_fuzz.run(300)
    assert openapi_fuzz.problems(report, 300) == [], report.summary()
    # The run reached the sim, not only the router's refusals.
    assert report.statuses[200] >= 20, report.summary()
    assert {s for s in report.statuses if 400 <= s < 500}, report.summary()


def test_the_document_is_valid_json_with_a_version():
    doc = json.loads(DOCUMENT.read_text())
    assert doc["openapi"].startswith("3.1") and doc["info"]["version"]


def test_the_cli_writes_the_document_and_reports_drift(tmp_path, capsys):
    out = tmp_path / "openapi.json"
    out.write_text("{}\n")
    assert main(["openapi", "--out", str(out), "--check"]) == 1
    assert main(["openapi", "--out", str(out)]) == 0
    assert main(["openapi", "--out", str(out), "--check"]) == 0
    assert out.read_text() == openapi_text()
    capsys.readouterr()
    assert main(["openapi"]) == 0
    assert capsys.readouterr().out == openapi_text()
