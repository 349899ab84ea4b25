"""A real router (and real sims) on 127.0.0.1, each on its own event loop in a thread.

The router is programmed the way the operator will program it: tests PUT a routing table to
its admin API. Sims come from the sim's own fixtures; ``SimProcess`` runs one as a separate
``inferscale sim`` process for the tests that kill it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from inferscale.protocol.credentials import RouterCredentials
from inferscale.router.app import Router, start
from inferscale.router.settings import RouterSettings
from tests.component.sim.conftest import MODEL, RunningSim, make_settings
from tests.servers import ServerThread

TOKEN = "test-admin-token"


class RunningRouter(ServerThread):
    """Start on enter, graceful stop on exit; ``push`` programs it through the admin API."""

    name = "router"

    def __init__(self, **settings: Any) -> None:
        defaults: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "shutdown_grace_seconds": 2.0,
            "keepalive_seconds": 0.2,
            "breaker_ejection_seconds": 0.5,
            "connect_timeout_seconds": 2.0,
        }
        self.settings = RouterSettings(**{**defaults, **settings})
        self.router: Router | None = None
        self.lines: list[str] = []
        self.version = 0
        self.credentials_version = 0
        super().__init__()

    async def start_server(self) -> tuple[Any, int]:
        runner, port, self.router = await start(
            self.settings, admin_token=TOKEN, log_sink=self.lines.append
        )
        return runner, port

    def push(
        self,
        models: dict[str, Any],
        version: int | None = None,
        providers: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """PUT a table; ``models`` maps a name to endpoint addresses or to a full ModelRoute."""
        if version is None:
            self.version += 1
            version = self.version
        doc: dict[str, Any] = {"version": version, "models": {}, "providers": providers or {}}
        for name, spec in models.items():
            if isinstance(spec, list):
                spec = {"endpoints": spec}
            spec = dict(spec)
            spec["endpoints"] = [
                e if isinstance(e, dict) else {"pod": f"pod-{e.rsplit(':', 1)[1]}", "address": e}
                for e in spec.get("endpoints", [])
            ]
            doc["models"][name] = spec
        resp = httpx.put(
            self.base_url + "/admin/v1/routing-table",
            json=doc,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        return resp

    def set_provider_keys(
        self, keys: dict[str, str], key_sets: dict[str, list[dict[str, Any]]] | None = None
    ) -> None:
        """Give the router provider API keys, as the operator's credentials channel does.

        ``key_sets``: providers with several keys, each ``{"id", "key", ...rates}``.
        """
        assert self.router is not None
        self.credentials_version += 1
        credentials = RouterCredentials.model_validate(
            {
                "version": self.credentials_version,
                "provider_keys": {k: SecretStr(v) for k, v in keys.items()},
                "provider_key_sets": {
                    provider: [{**e, "key": SecretStr(e["key"])} for e in entries]
                    for provider, entries in (key_sets or {}).items()
                },
            }
        )
        self.router.apply_credentials(credentials, "test")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            key, value = line.rsplit(" ", 1)
            if key.split("{", 1)[0] != name:
                continue
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                total += float(value)
        return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    """``inferscale sim`` as its own process (killable), on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> SimProcess:
        cmd = [sys.executable, "-m", "inferscale", "sim", "--host", "127.0.0.1",
               "--port", str(self.port), "--model", MODEL, "--preset", "zero",
               "--max-model-len", "4096", "--kv-capacity-tokens", "65536",
               "--shutdown-grace-seconds", "1", *self.args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sim exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"http://{self.address}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("sim did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def sims() -> Iterator[list[RunningSim]]:
    """Two zero-latency sims shared by a module."""
    with RunningSim(make_settings()) as a, RunningSim(make_settings()) as b:
        yield [a, b]


@pytest.fixture
def router() -> Iterator[RunningRouter]:
    with RunningRouter() as running:
        yield running


def address(sim: RunningSim) -> str:
    return f"127.0.0.1:{sim.port}"


__all__ = ["MODEL", "RunningRouter", "SimProcess", "address", "free_port", "os"]
