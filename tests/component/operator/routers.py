"""Stand-ins for the routers that the operator's publishers talk to, shared by component tests.

:class:`Routers` answers the admin API (``PUT`` a document, ``GET`` the version held) by pod
IP behind an ``httpx.MockTransport``; :func:`admin_secret` is the admin-token Secret the
publishers read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.component.router.conftest import TOKEN
from tests.factories import ROUTER_NS

NS = ROUTER_NS


def admin_secret(token: str = TOKEN) -> dict[str, Any]:
    """The routers' admin-token Secret in the routers' namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "inferscale-router-admin", "namespace": NS},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


class Routers:
    """Fake router admin APIs behind an httpx.MockTransport, by IP."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.down: set[str] = set()
        self.answer: dict[str, int] = {}
        self.token = TOKEN

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        ip = request.url.host
        if ip in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(403, json={"error": {"message": "invalid token"}})
        if request.method == "GET":
            return httpx.Response(200, json=self.tables.get(ip, {"version": 0}))
        if ip in self.answer:
            status = self.answer[ip]
            return httpx.Response(status, json={"error": {"message": f"no ({status})"}})
        doc = json.loads(request.content)
        held = self.tables.get(ip)
        if held is not None and doc["version"] < held["version"]:
            return httpx.Response(409, json={"error": {"message": "stale_version"}})
        self.tables[ip] = doc
        return httpx.Response(200, json={"version": doc["version"], "changed": True})

    def puts(self, ip: str) -> int:
        return sum(1 for r in self.requests if r.method == "PUT" and r.url.host == ip)
