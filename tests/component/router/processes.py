"""``inferscale router`` as its own process, and a sampler of its memory and sockets.

For the tests whose figures must be the router's alone (resident memory, open sockets), not
those of the test process that also runs the sims and the clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.component.router.conftest import MODEL, free_port

CHAT = "/v1/chat/completions"
REQUEST = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()


class RouterProcess:
    """``inferscale router`` on a free loopback port, programmed through its table file."""

    def __init__(self, tmp: Path, sims: list[str], *flags: str) -> None:
        self.port = free_port()
        table = {"version": 1, "models": {MODEL: {"endpoints": [
            {"pod": f"pod-{i}", "address": a} for i, a in enumerate(sims)]}}}  # fmt: skip
        (tmp / "table.json").write_text(json.dumps(table))
        self.command = [sys.executable, "-m", "inferscale", "router", "--host", "127.0.0.1",
                        "--port", str(self.port), "--no-access-log",
                        "--table-file", str(tmp / "table.json"), *flags]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RouterProcess:
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise RuntimeError(f"router exited: {self.proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("router not ready in 30 s")

    def __exit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def rss_mib(self) -> float:
        """Resident memory now."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        return int(next(x for x in status if x.startswith("VmRSS")).split()[1]) / 1024

    def sockets(self) -> int:
        """Sockets the process holds now (listening, clients', engines')."""
        assert self.proc is not None
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        count = 0
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):  # closed while we looked
                count += os.readlink(fd_dir / fd).startswith("socket:")
        return count

    def served(self) -> int:
        """The status of one ordinary chat request (a fresh connection)."""
        return httpx.post(self.url + CHAT, content=REQUEST, timeout=20).status_code


class Sampler:
    """Samples a router's RSS and socket count every 20 ms while the block runs."""

    def __init__(self, router: RouterProcess) -> None:
        self.router = router
        self.rss: list[float] = []
        self.sockets: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.rss.append(self.router.rss_mib())
            self.sockets.append(self.router.sockets())

    def __enter__(self) -> Sampler:
        self.before = self.router.rss_mib()
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)

    @property
    def growth_mib(self) -> float:
        return max(self.rss) - self.before
