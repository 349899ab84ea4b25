"""A real ``redis-server`` (Debian's package) on a free port, without persistence.

On loopback by default; ``host`` binds another address of this machine (the local cluster's
bridge, so pods reach it), and ``password`` makes it require AUTH as a shared Redis would.

Started by the tests that need one and killed after; ``kill`` and ``restart`` (same port) let a
test take Redis away mid-run. Tests skip with a clear reason where ``redis-server`` is not
installed (CI installs it: ``apt-get install -y redis-server``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import pytest


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _resp(*args: str) -> bytes:
    """``args`` as one RESP command."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
    return b"".join(parts)


def command(host: str, port: int, args: tuple[str, ...], password: str | None = None) -> bytes:
    """One command to any Redis (AUTH first with ``password``); its raw RESP answer."""
    with socket.create_connection((host, port), timeout=2) as s:
        if password is not None:
            s.sendall(_resp("AUTH", password))
            answer = s.recv(256)
            if not answer.startswith(b"+OK"):
                return answer
        s.sendall(_resp(*args))
        return s.recv(65536)


class RedisServer:
    """``redis-server`` as a child process: start on enter, kill on exit."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.host = host
        self.password = password
        self.port = _free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> None:
        # No RDB snapshots, no AOF: nothing is written, and a restart starts empty.
        cmd = [self.binary, "--port", str(self.port), "--bind", self.host,
               "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
               "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise RuntimeError(f"redis-server exited: {self.proc.stderr.read().decode()}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                answer = s.recv(64)
                return answer.startswith(b"+PONG") or (
                    self.password is not None and answer.startswith(b"-NOAUTH")
                )
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command over RESP (for assertions on what the routers stored)."""
        return command(self.host, self.port, args, self.password)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()

    def restart(self) -> None:
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
