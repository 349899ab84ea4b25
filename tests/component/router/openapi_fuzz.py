"""Fuzz a router in front of a sim with requests schemathesis generates from docs/openapi.json.

Each round asks schemathesis for examples of every operation of the published document, in
both its modes: positive (valid by the schema) and negative (each breaking it somewhere: a wrong
type, a missing field, a bad header or path), and sends them to an ``inferscale router`` process
in front of a zero-latency sim, until ``requests`` have been sent. For the requests to reach the
sim, this harness narrows three things of its copy of the document: a valid ``model`` is the sim's
model (negative examples break it too), token counts stay small (the sim generates them),
and objects are closed (extra fields come from negative examples). The bounds, checked
throughout: no answer of 500 or above, the router process alive, its resident memory under
``rss_limit_mib`` (sampled every 20 ms).

``python -m tests.component.router.openapi_fuzz --requests 10000`` (``make fuzz``) prints the
figures docs/reliability.md records; ``test_openapi.py`` runs a few hundred in every test run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from tests.component.router.conftest import MODEL, address
from tests.component.router.processes import RouterProcess, Sampler
from tests.component.sim.conftest import RunningSim, make_settings

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
SMALL = {"max_tokens", "max_completion_tokens", "dimensions"}
RSS_LIMIT_MIB = 150e6 / 2**20
"""Issue 19's bound: 150 MB (143 MiB)."""


@dataclass
class Report:
    """What one fuzz run sent, got back, and what the router's memory did."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_samples: int = 0
    router_alive: bool = True
    seconds: float = 0.0
    progress: bool = False
    """Print a line every 1,000 requests (the long run)."""

    def summary(self) -> str:
        codes = ", ".join(f"{s} x{n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.sent} requests in {self.seconds:.0f} s; statuses: {codes}; "
            f"5xx: {len(self.server_errors)}; transport errors: {len(self.transport_errors)}; "
            f"router alive: {self.router_alive}; router RSS {self.rss_before_mib:.0f} MiB "
            f"before, {self.rss_peak_mib:.0f} MiB at most ({self.rss_samples} samples)"
        )


def fuzz_document() -> dict[str, Any]:
    """The published document, narrowed so that generated requests can reach the sim."""
    doc = copy.deepcopy(json.loads(DOCUMENT.read_text()))

    def narrow(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                # Open objects make the generator draw deep random JSON for extra fields (a
                # half second an example); closed, extra fields come from negative examples.
                node.setdefault("additionalProperties", False)
                if "model" in props:
                    props["model"] = {"const": MODEL}
                for name in SMALL & props.keys():
                    props[name] = {**props[name], "maximum": 16}
            for value in node.values():
                narrow(value)
        elif isinstance(node, list):
            for value in node:
                narrow(value)

    narrow(doc["paths"])
    by_id = doc["paths"]["/v1/models/{id}"]["get"]["parameters"][0]
    by_id["schema"] = {"anyOf": [{"const": MODEL}, by_id["schema"]]}
    return doc


def _send_all(base_url: str, report: Report, budget: int, per_strategy: int) -> None:
    """One round: ``per_strategy`` examples of each operation in each mode, within ``budget``."""
    schema = schemathesis.openapi.from_dict(fuzz_document())
    session = requests.Session()
    session.trust_env = False  # loopback only, whatever proxy the environment names
    stop_at = report.sent + budget
    for result in schema.get_all_operations():
        operation = result.ok()
        inputs = operation.body or operation.path_parameters or operation.query
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not inputs:
                continue  # nothing to break in an operation without inputs (GET /metrics)

            @settings(
                max_examples=per_strategy,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                if report.sent >= stop_at:
                    return
                report.sent += 1
                report.by_operation[operation.label] += 1
                if report.progress and report.sent % 1000 == 0:
                    codes = dict(sorted(report.statuses.items()))
                    print(f"{report.sent} sent, statuses {codes}", file=sys.stderr, flush=True)
                try:
                    response = case.call(base_url=base_url, session=session, timeout=30)
                except requests.RequestException as error:
                    report.transport_errors.append(f"{operation.label}: {error!r}")
                    return
                report.statuses[response.status_code] += 1
                if response.status_code >= 500:
                    report.server_errors.append(
                        f"{operation.label} -> {response.status_code} {response.text[:300]}\n"
                        f"  {case.as_curl_command()}"
                    )

            one()


def run(requests_total: int, progress: bool = False) -> Report:
    """Send ``requests_total`` generated requests; the report says what came back."""
    report = Report(progress=progress)
    started = time.monotonic()
    with (
        RunningSim(make_settings()) as sim,
        tempfile.TemporaryDirectory() as tmp,
        RouterProcess(Path(tmp), [address(sim)], "--client-body-timeout-seconds", "5") as router,
        Sampler(router) as sampled,
    ):
        per_strategy = max(5, requests_total // 20)
        while report.sent < requests_total and router.proc is not None:
            before = report.sent
            _send_all(router.url, report, requests_total - report.sent, per_strategy)
            if report.sent == before or router.proc.poll() is not None:
                break
        report.router_alive = router.proc is not None and router.proc.poll() is None
    report.rss_before_mib = sampled.before
    report.rss_peak_mib = max(sampled.rss, default=0.0)
    report.rss_samples = len(sampled.rss)
    report.seconds = time.monotonic() - started
    return report


def problems(
    report: Report, requests_total: int, rss_limit_mib: float = RSS_LIMIT_MIB
) -> list[str]:
    """Every bound the run broke (empty: all kept)."""
    found = [f"5xx: {e}" for e in report.server_errors[:20]]
    found += [f"transport: {e}" for e in report.transport_errors[:20]]
    if not report.router_alive:
        found.append("the router process died")
    if report.rss_peak_mib >= rss_limit_mib:
        found.append(f"router RSS reached {report.rss_peak_mib:.0f} MiB")
    if report.sent < requests_total:
        found.append(f"only {report.sent} of {requests_total} requests were generated")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rss-limit-mib", type=float, default=RSS_LIMIT_MIB)
    args = parser.parse_args(argv)
    report = run(args.requests, progress=True)
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), report.summary())
    for operation, n in sorted(report.by_operation.items()):
        print(f"  {operation}: {n}")
    found = problems(report, args.requests, args.rss_limit_mib)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
