"""Start, watch and stop the cluster's component processes; every wait here is bounded.

Components run detached (their own session, output appended to ``<state>/logs/NAME.log``) so
that ``inferscale cluster up`` can return and leave them running. Each one's pid and kernel
start time go into ``<state>/pids/NAME.json``: a later ``down`` (even after a crash of
whatever started them) stops exactly those processes and never a stranger that reused a pid.

Failure behaviour: a component that dies or does not become healthy in time raises
``ClusterError`` naming the component, with the last lines of its log, never a hang.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inferscale.errors import InferscaleError

LOG_TAIL_LINES = 25


class ClusterError(InferscaleError):
    """The local cluster could not do what was asked; says which component and why."""

    def __init__(self, component: str, message: str) -> None:
        """Name the component at fault."""
        super().__init__(f"{component}: {message}")
        self.component = component


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None if it is gone.

    A zombie counts as gone; if it is our own child, it is reaped here.
    """
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """A process started by the cluster, identified beyond doubt by pid and start time."""

    name: str
    pid: int
    started: int

    def alive(self) -> bool:
        """True while this very process runs."""
        return start_time(self.pid) == self.started

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process group the component leads (itself and its children)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float) -> bool:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL; True if it had to kill."""
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            time.sleep(0.05)
        self.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return True


def record_path(state_dir: Path, name: str) -> Path:
    """Where the record of component ``name`` is kept."""
    return state_dir / "pids" / f"{name}.json"


def read_records(state_dir: Path) -> list[ProcessRecord]:
    """Every component record in a state directory, in start order."""
    out = []
    for path in sorted((state_dir / "pids").glob("*.json"), key=lambda p: p.stat().st_mtime):
        with contextlib.suppress(ValueError, KeyError, OSError):
            data = json.loads(path.read_text())
            out.append(ProcessRecord(data["name"], int(data["pid"]), int(data["started"])))
    return out


def spawn(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached, output to ``logs/NAME.log``, and record it.

    ``posix_spawn`` rather than ``subprocess.Popen``: the component must outlive this Python
    process, and a Popen object that is dropped while its child still runs warns.
    """
    log = state_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    record_path(state_dir, name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n")
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    run_env = dict(os.environ if env is None else env)
    old_cwd = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        try:
            pid = os.posix_spawnp(
                argv[0], list(argv), run_env, file_actions=file_actions, setsid=True
            )
        except FileNotFoundError as error:
            raise ClusterError(name, f"binary not found: {argv[0]}") from error
    finally:
        os.chdir(old_cwd)
    started = start_time(pid)
    if started is None:
        raise ClusterError(name, f"exited during start-up; last log lines:\n{tail(log)}")
    record = ProcessRecord(name, pid, started)
    record_path(state_dir, name).write_text(json.dumps(record.__dict__))
    return record


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def wait_healthy(
    record: ProcessRecord,
    log: Path,
    check: Callable[[], bool],
    timeout: float,
    what: str = "healthy",
) -> None:
    """Poll ``check`` until it is True; fail fast if the process dies, or after ``timeout``.

    Raises:
        ClusterError: the component exited or was not healthy in time; with its log's tail.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if not record.alive():
            raise ClusterError(record.name, f"exited during start-up; last log lines:\n{tail(log)}")
        if check():
            return
        if time.monotonic() > deadline:
            raise ClusterError(
                record.name, f"not {what} after {timeout:.0f}s; last log lines:\n{tail(log)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
