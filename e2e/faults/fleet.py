"""The processes a fault scenario runs and breaks: sims and routers on 127.0.0.1.

Each :class:`Proc` keeps its port across restarts (the routing table names it, as a pod keeps
its address), can be killed with any signal, and writes its stderr to a file in the scenario's
directory (the first place to look when a row surprises). :class:`Fleet` owns them all and
stops every one it started, also when the scenario fails. The routing table is written to a
file every router reads at start (the operator's ConfigMap) and pushed to their admin API (the
operator's push).

Failure behaviour: a process that exits or stays unhealthy while starting raises
:class:`FleetError` with the tail of its log; every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from e2e.faults.load import Entry

MODEL = "faults-model"
START_SECONDS = 30.0
STOP_SECONDS = 15.0


class FleetError(RuntimeError):
    """A process of the fleet did not start or stop as it must."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """One ``inferscale`` process on a fixed loopback port; restartable."""

    def __init__(
        self,
        name: str,
        args: list[str],
        health: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.args = args
        self.health = health
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=2, trust_env=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, wait: bool = True) -> None:
        """Start the process (again); with ``wait``, until its health check answers 200."""
        if self.running:
            raise FleetError(f"{self.name} is already running")
        command = [sys.executable, "-m", "inferscale", *self.args, "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=log, env=self.env
            )
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise FleetError(f"{self.name} exited while starting:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(self.url + self.health).status_code == 200:
                    return
            time.sleep(0.05)
        raise FleetError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (SIGKILL, SIGTERM, SIGSTOP, SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap: the crash of a process or a node."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(STOP_SECONDS)

    def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case it was frozen); SIGKILL past the bound."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def sim_args(*extra: str, model: str = MODEL) -> list[str]:
    """``inferscale sim`` on loopback: the H100 preset without its cold start."""
    return ["sim", "--host", "127.0.0.1", "--model", model, "--preset", "llama-3.1-8b-h100",
            "--startup-delay-seconds", "0", "--shutdown-grace-seconds", "10", *extra]  # fmt: skip


class Fleet:
    """The sims, routers and documents of one scenario; everything stops on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.dir = log_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(16)
        (self.dir / "token").write_text(self.token)
        self.table_path = self.dir / "table.json"
        self.credentials_path = self.dir / "credentials.json"
        self.version = 0
        self.sims: list[Proc] = []
        self.routers: list[Proc] = []
        self.http = httpx.Client(timeout=5, trust_env=False)

    def add_sim(self, *extra: str, model: str = MODEL) -> Proc:
        """A sim, started by :meth:`start` (its port is known at once, for the table)."""
        sim = Proc(f"sim-{len(self.sims)}", sim_args(*extra, model=model), "/health", self.dir)
        self.sims.append(sim)
        return sim

    def start(self) -> None:
        """Start every process not running yet, all at once, and wait until each is healthy.

        Routers read the table file at start: :meth:`publish` first.
        """
        waiting = [p for p in [*self.sims, *self.routers] if not p.running]
        for proc in waiting:
            proc.start(wait=False)
        for proc in waiting:
            proc.wait_healthy()

    def add_router(self, *extra: str, env: dict[str, str] | None = None) -> Proc:
        """A router on the table file and the admin token, started by :meth:`start`."""
        args = ["router", "--host", "127.0.0.1", "--no-access-log",
                "--table-file", str(self.table_path), "--table-poll-seconds", "1",
                "--admin-token-file", str(self.dir / "token"),
                "--breaker-ejection-seconds", "2", *extra]  # fmt: skip
        if self.credentials_path.exists():
            args += ["--credentials-file", str(self.credentials_path)]
        router = Proc(f"router-{len(self.routers)}", args, "/readyz", self.dir, env)
        self.routers.append(router)
        return router

    def entries(self) -> list[Entry]:
        return [Entry(r.url, r.name) for r in self.routers]

    def publish(
        self, models: dict[str, Any], providers: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write the next table version to the file and push it to every running router."""
        self.version += 1
        doc = {"version": self.version, "models": models, "providers": providers or {}}
        self.table_path.write_text(json.dumps(doc))
        for router in self.routers:
            if router.running:
                answer = self.http.put(
                    router.url + "/admin/v1/routing-table",
                    json=doc,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                if answer.status_code != 200:
                    raise FleetError(f"{router.name} refused the table: {answer.text[:500]}")
        return doc

    def set_credentials(
        self, provider_keys: dict[str, str], client_keys: list[dict[str, Any]] | None = None
    ) -> None:
        """The credentials file the routers read at start (write it before adding them)."""
        doc = {
            "version": 1,
            "providerKeys": provider_keys,
            "clientKeys": client_keys or [],
            "requireClientKey": bool(client_keys),
        }
        self.credentials_path.write_text(json.dumps(doc))

    def close(self) -> None:
        for proc in [*self.routers, *self.sims]:
            proc.stop()
            proc.http.close()
        self.http.close()


@contextlib.contextmanager
def fleet(log_dir: Path) -> Iterator[Fleet]:
    """A :class:`Fleet` in ``log_dir``, stopped on exit."""
    running = Fleet(log_dir)
    try:
        yield running
    finally:
        running.close()


def local_route(*sims: Proc, **route: Any) -> dict[str, Any]:
    """A plain model route to ``sims`` (the table's ModelRoute), with route settings."""
    endpoints = [{"pod": s.name, "address": s.address, "engine": "sim"} for s in sims]
    return {"route": route, "endpoints": endpoints}
