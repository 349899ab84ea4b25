"""The fault scenarios: each starts its fleet, runs the load, injects one fault, and has a bound.

A scenario is a :class:`Scenario`: ``run(size, dir)`` returns the :class:`~.ledger.Row` of
every request, and ``bound(row)`` lists how the row breaks the scenario's promise (empty: it
holds). The fault is injected at a third of the load's duration, so the row shows the system
before, during and after it; ``Size`` makes the same scenario short (CI) or long (the table).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.component.router.mock_providers import KEY, MockOpenAI
from tests.redis_server import RedisServer

from e2e.faults.fleet import MODEL, Fleet, Proc, fleet, local_route
from e2e.faults.ledger import Row
from e2e.faults.load import PATH, Load, LoadShape
from inferscale.protocol.credentials import key_digest

PROVIDER = "faults/hosted"
HOSTED_MODEL = "hosted"
CLIENT_KEY = "sk-faults-client-0123456789abcdef"


@dataclass(frozen=True)
class Size:
    """How much load a scenario sends."""

    rate: float
    duration: float
    timeout: float = 15.0

    def shape(self, model: str = MODEL, **overrides: Any) -> LoadShape:
        return LoadShape(
            model=model,
            rate=self.rate,
            duration=self.duration,
            timeout=self.timeout,
            **overrides,
        )

    @property
    def fault_at(self) -> float:
        return self.duration / 3


SHORT = Size(rate=8, duration=5)
LONG = Size(rate=12, duration=15)


@dataclass(frozen=True)
class Scenario:
    """One fault: how it is run, and the promise its row must keep."""

    name: str
    fault: str
    promise: str
    run: Callable[[Size, Path], Row]
    bound: Callable[[Row], list[str]]


# -- bounds ------------------------------------------------------------------------------------


def no_lost(row: Row) -> list[str]:
    lost = [r for r in row.records if r.outcome == "lost"]
    return [f"{len(lost)} requests lost (no answer before the client's timeout)"] if lost else []


def no_failures(row: Row) -> list[str]:
    failed = row.failed()
    return [f"{len(failed)} failed: {dict(row.failures)}"] if failed else []


def streams_cut_cleanly(row: Row) -> list[str]:
    """Non-streaming requests all succeed; a stream fails only past its first byte, cleanly."""
    problems = no_lost(row)
    plain = row.failed(stream=False)
    if plain:
        problems.append(f"{len(plain)} non-streaming requests failed: {dict(row.failures)}")
    early = [r for r in row.failed(stream=True) if not r.first_byte]
    if early:
        problems.append(f"{len(early)} streams failed before their first byte")
    dirty = [r for r in row.failed(stream=True) if r.outcome != "clean"]
    if dirty:
        problems.append(f"{len(dirty)} streams cut without an SSE error event")
    return problems


# -- helpers -----------------------------------------------------------------------------------


def _two_sims(f: Fleet, *extra: str, **route: Any) -> tuple[Proc, Proc]:
    a, b = f.add_sim(*extra), f.add_sim()
    f.publish({MODEL: local_route(a, b, **route)})
    return a, b


def _run(
    f: Fleet, size: Size, fault: Callable[[Load], object], model: str = MODEL, **shape: Any
) -> Row:
    """Start ``f``; run the load through its routers; call ``fault`` at ``size.fault_at``."""
    f.start()
    load = Load(f.entries(), size.shape(model, **shape))
    with load.running():
        load.wait_until(size.fault_at)
        fault_at = load.now()
        fault(load)
    return Row("", list(load.records), fault_at)


# -- replicas ----------------------------------------------------------------------------------


def replica_killed(size: Size, where: Path) -> Row:
    """SIGKILL one of two replicas mid-load, with long streams on it."""
    with fleet(where) as f:
        a, _ = _two_sims(f)
        f.add_router()
        return _run(f, size, lambda _: a.kill())


def _supervise(sim: Proc, stop: threading.Event, backoff: float = 1.0) -> None:
    """Restart ``sim`` whenever it dies, after ``backoff`` seconds (the kubelet's restarts)."""
    while not stop.wait(0.1):
        if not sim.running and not stop.wait(backoff):
            sim.start(wait=False)


def replica_crash_loop(size: Size, where: Path) -> Row:
    """One replica crashes every 5 requests and is restarted each time (CrashLoopBackOff)."""
    with fleet(where) as f:
        a, _ = _two_sims(f, "--fail-crash-after", "5")
        f.add_router()
        stop = threading.Event()
        watcher = threading.Thread(target=_supervise, args=(a, stop), daemon=True)
        watcher.start()
        try:
            return _run(f, size, lambda _: None)
        finally:
            stop.set()
            watcher.join(5)


def replica_slow(size: Size, where: Path) -> Row:
    """One of two replicas eight times slower per step (a throttled or sick GPU)."""
    with fleet(where) as f:
        f.add_sim("--step-base-seconds", "0.048")
        f.add_sim()
        f.publish({MODEL: local_route(*f.sims)})
        f.add_router()
        return _run(f, size, lambda _: None)


def replica_frozen(size: Size, where: Path) -> Row:
    """SIGSTOP one replica (it accepts connections and never answers: the nearest thing to a
    partition without touching the machine's network), SIGCONT it at the end."""
    with fleet(where) as f:
        route = {"timeouts": {"firstTokenSeconds": 2, "totalSeconds": 10}}
        a, _ = _two_sims(f, **route)
        f.add_router()
        try:
            return _run(f, size, lambda _: a.signal(signal.SIGSTOP))
        finally:
            a.signal(signal.SIGCONT)


def scale_down(size: Size, where: Path) -> Row:
    """Scale 3 -> 2 under load: the replica leaves the table, then gets SIGTERM and its grace."""
    with fleet(where) as f:
        a, b, c = f.add_sim(), f.add_sim(), f.add_sim()
        f.publish({MODEL: local_route(a, b, c)})
        f.add_router()

        def remove(_: Load) -> None:
            f.publish({MODEL: local_route(b, c)})
            a.stop()

        return _run(f, size, remove)


def config_churn(size: Size, where: Path) -> Row:
    """A new table every half second under load: endpoints come, go and change weight."""
    with fleet(where) as f:
        sims = [f.add_sim(), f.add_sim(), f.add_sim()]
        f.publish({MODEL: local_route(*sims)})
        f.add_router()

        def churn(load: Load) -> None:
            n = 0
            while load.now() < size.duration - 0.5:
                keep = [s for i, s in enumerate(sims) if i != n % 3]
                f.publish(
                    {MODEL: local_route(*keep, strategy="roundRobin" if n % 2 else "leastInFlight")}
                )
                load.wait_until(load.now() + 0.5)
                n += 1

        return _run(f, size, churn)


# -- routers -----------------------------------------------------------------------------------


def router_killed(size: Size, where: Path) -> Row:
    """SIGKILL one of two routers; restart it a second later from its table file."""
    with fleet(where) as f:
        _two_sims(f)
        killed, _ = f.add_router(), f.add_router()

        def crash(_: Load) -> None:
            killed.kill()
            threading.Event().wait(1.0)
            killed.start(wait=False)

        return _run(f, size, crash)


def router_drained(size: Size, where: Path) -> Row:
    """SIGTERM one of two routers (a rolling update); half a second later its Service stops
    sending to it, as readiness (503 while draining) propagates."""
    with fleet(where) as f:
        _two_sims(f)
        leaving = f.add_router("--drain-seconds", "2", "--shutdown-grace-seconds", "10")
        f.add_router()

        def terminate(load: Load) -> None:
            leaving.signal(signal.SIGTERM)
            load.wait_until(load.now() + 0.5)
            load.retire(leaving.name)

        return _run(f, size, terminate)


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (what it sent first, a 408, is read and dropped)."""
    try:
        while chunk := sock.recv(65536, socket.MSG_DONTWAIT):
            del chunk
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _slow_clients(address: str, count: int, stop: threading.Event, closed: Counter[str]) -> None:
    """``count`` connections that send a request one byte a second (slow-loris), until ``stop``.

    Half trickle their headers, half a declared 1 MB body; ``closed`` counts those the router
    closed, by kind. Every socket is closed at the end.
    """
    host, port = address.rsplit(":", 1)
    sockets: list[socket.socket] = []
    pending: dict[socket.socket, str] = {}
    try:
        for n in range(count):
            sock = socket.create_connection((host, int(port)), timeout=2)
            sockets.append(sock)
            head = f"POST {PATH} HTTP/1.1\r\nHost: {address}\r\n"
            if n % 2:
                sock.sendall(f"{head}Content-Length: 1000000\r\n\r\n{{".encode())
                pending[sock] = "body"
            else:
                sock.sendall(f"{head}X-Slow: ".encode())
                pending[sock] = "headers"
        while pending and not stop.wait(1.0):
            for sock, kind in list(pending.items()):
                with contextlib.suppress(OSError):  # a closed socket shows in _closed
                    sock.sendall(b" " if kind == "body" else b"a")
                if _closed(sock):  # the router closed it: that is the bound working
                    del pending[sock]
                    closed[kind] += 1
    finally:
        for sock in sockets:
            sock.close()


#: How long the slow clients keep at it: past the router's idle bound (2 s) with room to see it.
ATTACK_SECONDS = 6.0


def slow_loris(size: Size, where: Path) -> Row:
    """200 slow-loris connections to the router while it serves the load."""
    with fleet(where) as f:
        _two_sims(f)
        router = f.add_router(
            "--client-body-timeout-seconds", "2", "--idle-connection-seconds", "2"
        )
        stop, closed = threading.Event(), Counter[str]()
        attack = threading.Thread(
            target=_slow_clients, args=(router.address, 200, stop, closed), daemon=True
        )
        began: list[float] = []

        def begin(_: Load) -> None:
            attack.start()
            began.append(time.monotonic())

        try:
            row = _run(f, size, begin)
            # The load may end before the attack has run its course: give it that long.
            stop.wait(max(0.0, began[0] + ATTACK_SECONDS - time.monotonic()))
        finally:
            stop.set()
            if attack.is_alive():
                attack.join(10)
        row.facts.update({"slow headers closed": closed["headers"]})
        row.notes.append(
            f"in {ATTACK_SECONDS:g} s the router closed {closed['headers']} of 100 slow-header "
            f"connections and {closed['body']} of 100 slow-body ones (408 at 2 s, then "
            "aiohttp's lingering read of up to 10 s)"
        )
        return row


FLOOD = 3000


def _flood(address: str, stop: threading.Event, closed: Counter[str]) -> None:
    """Open ``FLOOD`` connections that never send a byte; count those the router closes."""
    host, port = address.rsplit(":", 1)
    open_now: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            if stop.is_set():
                break
            try:
                open_now.append(socket.create_connection((host, int(port)), timeout=2))
            except OSError:
                closed["refused"] += 1
        while open_now and not stop.wait(0.5):
            still = [s for s in open_now if not _closed(s)]
            closed["idle"] += len(open_now) - len(still)
            for sock in set(open_now) - set(still):
                sock.close()
            open_now = still
    finally:
        for sock in open_now:
            sock.close()


def _rss_mib(proc: Proc) -> float:
    """The resident memory of ``proc`` (0 when it cannot be read)."""
    assert proc.proc is not None
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines()
        return int(next(x for x in status if x.startswith("VmRSS")).split()[1]) / 1024
    return 0.0


def connection_flood(size: Size, where: Path) -> Row:
    """3,000 idle connections to the router at once while it serves the load."""
    with fleet(where) as f:
        _two_sims(f)
        router = f.add_router("--idle-connection-seconds", "2")
        stop, closed = threading.Event(), Counter[str]()
        flood = threading.Thread(target=_flood, args=(router.address, stop, closed), daemon=True)
        began: list[float] = []
        rss = {"before": 0.0, "peak": 0.0}

        def begin(load: Load) -> None:
            rss["before"] = _rss_mib(router)
            flood.start()
            began.append(time.monotonic())
            while load.now() < size.duration:  # sample the router's memory through the flood
                rss["peak"] = max(rss["peak"], _rss_mib(router))
                load.wait_until(load.now() + 0.25)

        try:
            row = _run(f, size, begin)
            stop.wait(max(0.0, began[0] + ATTACK_SECONDS - time.monotonic()))
        finally:
            stop.set()
            if flood.is_alive():
                flood.join(15)
        row.facts.update({"flood closed": closed["idle"] + closed["refused"]})
        row.notes.append(
            f"of {FLOOD} idle connections the router closed {closed['idle']} within "
            f"{ATTACK_SECONDS:g} s ({closed['refused']} not accepted); router RSS "
            f"{rss['before']:.0f} MiB before, {rss['peak']:.0f} MiB at most during"
        )
        return row


def flood_bound(row: Row) -> list[str]:
    """The real load does not notice, and every idle connection is closed."""
    problems = no_failures(row) + no_lost(row)
    if row.facts.get("flood closed", 0) < FLOOD:
        problems.append(f"only {row.facts.get('flood closed')} of {FLOOD} idle connections closed")
    return problems


def loris_bound(row: Row) -> list[str]:
    """The real load does not notice, and every slow-header connection is closed."""
    problems = no_failures(row) + no_lost(row)
    if row.facts.get("slow headers closed", 0) < 100:
        problems.append(f"only {row.facts.get('slow headers closed')} of 100 slow headers closed")
    return problems


def _redis_down(outage_budgets: str) -> Callable[[Size, Path], Row]:
    """Two routers share limits in Redis; Redis is killed, then restarted (empty) at 2/3."""

    def run(size: Size, where: Path) -> Row:
        with fleet(where) as f, RedisServer(where) as redis:
            _two_sims(f)
            limits = {"requestsPerMinute": 100_000}
            budgets = {"tokensPerDay": 100_000_000}
            client = {"digest": key_digest(CLIENT_KEY), "client": "faults/app"}
            f.set_credentials({}, [{**client, "limits": limits, "budgets": budgets}])
            env = {
                "INFERSCALE_ROUTER_REDIS_URL": redis.url,
                "INFERSCALE_ROUTER_BUDGETS_DURING_OUTAGE": outage_budgets,
                "INFERSCALE_ROUTER_REDIS_RETRY_SECONDS": "0.5",
            }
            f.add_router(env=env)
            f.add_router(env=env)

            def outage(load: Load) -> None:
                redis.kill()
                load.wait_until(2 * size.duration / 3)
                redis.restart()

            return _run(f, size, outage, api_key=CLIENT_KEY)

    return run


def refused_while_down(row: Row) -> list[str]:
    """Only clean 503 ``budget_unavailable`` while Redis is down; nothing lost; it recovers."""
    problems = no_lost(row)
    other = {k: n for k, n in row.failures.items() if k != "clean: http 503"}
    if other:
        problems.append(f"failures other than a clean 503: {other}")
    if row.recovery is None:
        problems.append("budgeted requests were still refused at the end of the run")
    return problems


def router_bound(row: Row) -> list[str]:
    """Only the killed router's own requests fail, none is lost, and it comes back."""
    problems = no_lost(row)
    other = row.failed(source="router-1")
    if other:
        problems.append(f"{len(other)} requests to the other router failed")
    if row.recovery is None or row.recovery > 10:
        problems.append(f"the killed router did not serve again within 10 s ({row.recovery})")
    return problems


# -- hosted providers --------------------------------------------------------------------------


def _hosted(mock: MockOpenAI, timeout: float) -> dict[str, Any]:
    return {
        PROVIDER: {
            "type": "openai-compatible",
            "baseURL": mock.base_url + "/v1",
            "timeoutSeconds": timeout,
            "models": {"mini": {"providerModel": "gpt-4o-mini"}},
        }
    }


def _provider_storm(
    fault: str, provider_timeout: float = 2.0, delay: float = 30.0
) -> Callable[[Size, Path], Row]:
    """The hosted provider (primary) starts failing with ``fault``; our replica is the fallback."""

    def run(size: Size, where: Path) -> Row:
        with fleet(where) as f, MockOpenAI() as mock:
            sim = f.add_sim()
            f.set_credentials({PROVIDER: KEY})
            route = {
                "routeId": "faults/hosted",
                "servesLocally": False,
                "weight": 0,
                "backends": [
                    {"role": "primary", "provider": PROVIDER, "model": "mini"},
                    {"role": "fallback", "model": MODEL},
                ],
            }
            f.publish(
                {MODEL: local_route(sim), HOSTED_MODEL: route}, _hosted(mock, provider_timeout)
            )
            f.add_router()
            mock.delay = delay

            def storm(_: Load) -> None:
                mock.fault = fault

            return _run(f, size, storm, model=HOSTED_MODEL)

    return run


def provider_bound(limit: float) -> Callable[[Row], list[str]]:
    """No failure, nothing lost, and no answer slower than ``limit`` seconds."""

    def bound(row: Row) -> list[str]:
        problems = no_failures(row) + no_lost(row)
        slowest = max((r.latency for r in row.records), default=0.0)
        if slowest > limit:
            problems.append(f"a request took {slowest:.1f} s (limit {limit:g} s)")
        return problems

    return bound


def drip_bound(limit: float) -> Callable[[Row], list[str]]:
    """As a killed replica (failures only past a stream's first byte, cleanly), and no answer
    slower than ``limit`` seconds: the provider's timeout bounds the whole answer."""

    def bound(row: Row) -> list[str]:
        problems = streams_cut_cleanly(row)
        slowest = max((r.latency for r in row.records), default=0.0)
        if slowest > limit:
            problems.append(f"a request took {slowest:.1f} s (limit {limit:g} s)")
        return problems

    return bound


# -- held requests -----------------------------------------------------------------------------


def model_deleted_while_held(size: Size, where: Path) -> Row:
    """Requests held for a model with no ready replica; the model is deleted while they wait."""
    with fleet(where) as f:
        sim = f.add_sim()
        cold = {
            "route": {"holdQueue": {"maxRequests": 1000, "maxWaitSeconds": 60}},
            "endpoints": [],
        }
        f.publish({MODEL: local_route(sim), "cold": cold})
        f.add_router()
        return _run(f, size, lambda _: f.publish({MODEL: local_route(sim)}), model="cold")


CLEAN_503 = frozenset({"http 503", "sse model_unavailable", "sse model_removed"})


def only_clean_503(row: Row) -> list[str]:
    """Every request held when the model went ends with a clean 503; none is lost.

    Requests sent after the deletion ask for a model that does not exist: 404 is their answer.
    """
    problems = no_lost(row)
    held = [r for r in row.records if r.sent_at < row.fault_at]
    other = [r for r in held if r.outcome != "clean" or r.detail not in CLEAN_503]
    if other:
        kinds = sorted({f"{r.outcome}: {r.detail}" for r in other})
        problems.append(f"{len(other)} held requests ended otherwise than a clean 503: {kinds}")
    return problems


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "replica killed",
        "SIGKILL one of 2 sims, long streams on it",
        "no non-streaming failure; streams fail only past their first byte, with an SSE error",
        replica_killed,
        streams_cut_cleanly,
    ),
    Scenario(
        "replica crash-loop",
        "1 of 2 sims exits every 5 requests, restarted after 1 s",
        "as a kill: retried before the first byte, clean cuts after",
        replica_crash_loop,
        streams_cut_cleanly,
    ),
    Scenario(
        "slow replica",
        "1 of 2 sims 8x slower per step",
        "no failure, nothing lost",
        replica_slow,
        lambda row: no_failures(row) + no_lost(row),
    ),
    Scenario(
        "frozen replica",
        "SIGSTOP 1 of 2 sims (accepts, never answers); first-token timeout 2 s",
        "as a kill: a first-byte timeout is retried elsewhere, a stalled stream ends with an "
        "SSE error; nothing lost",
        replica_frozen,
        streams_cut_cleanly,
    ),
    Scenario(
        "scale-down in flight",
        "3 -> 2 sims: out of the table, then SIGTERM with a 10 s grace",
        "no failure",
        scale_down,
        lambda row: no_failures(row) + no_lost(row),
    ),
    Scenario(
        "config churn",
        "a new table every 0.5 s (endpoints removed and added, strategy flipped)",
        "no failure",
        config_churn,
        lambda row: no_failures(row) + no_lost(row),
    ),
    Scenario(
        "router killed",
        "SIGKILL 1 of 2 routers, restarted 1 s later from its table file",
        "failures only on the killed router's connections; it serves again",
        router_killed,
        router_bound,
    ),
    Scenario(
        "router drained",
        "SIGTERM 1 of 2 routers (drain 2 s, grace 10 s); its Service drops it 0.5 s later",
        "no failure: in-flight streams finish, new requests go to the other router",
        router_drained,
        lambda row: no_failures(row) + no_lost(row),
    ),
    Scenario(
        "slow-loris",
        "200 connections trickling headers or a body one byte a second",
        "no failure of the real load; every slow-header connection closed (idle bound 2 s)",
        slow_loris,
        loris_bound,
    ),
    Scenario(
        "connection flood",
        "3,000 connections opened at once that never send a byte",
        "no failure of the real load; every idle connection closed (idle bound 2 s)",
        connection_flood,
        flood_bound,
    ),
    Scenario(
        "Redis down (budgets local)",
        "Redis under 2 routers' shared limits killed, back (empty) at 2/3",
        "no failure: limits and budgets go local while it is down",
        _redis_down("local"),
        lambda row: no_failures(row) + no_lost(row),
    ),
    Scenario(
        "Redis down (budgets refused)",
        "as above, with --budgets-during-outage refuse",
        "budgeted clients get clean 503s while Redis is down (never a free pass), then served",
        _redis_down("refuse"),
        refused_while_down,
    ),
    Scenario(
        "provider 5xx storm",
        "the hosted primary answers 500 to everything; fallback to our sim",
        "no failure (fallback, then the breaker skips the provider)",
        _provider_storm("500"),
        provider_bound(5.0),
    ),
    Scenario(
        "provider 429 storm",
        "the hosted primary answers 429 to everything; fallback to our sim",
        "no failure",
        _provider_storm("429"),
        provider_bound(5.0),
    ),
    Scenario(
        "provider hangs",
        "the hosted primary never answers; provider timeout 2 s",
        "no failure; no request waits past the provider timeout plus its fallback",
        _provider_storm("timeout"),
        provider_bound(6.0),
    ),
    Scenario(
        "provider drips",
        "the hosted primary answers at once, then one byte (a stream: one event) every 0.5 s; "
        "provider timeout 2 s",
        "no failure before a first byte (a body that is not whole in time falls back); a "
        "stream past its first byte ends with an SSE error; no request waits past the timeout",
        _provider_storm("drip", delay=0.5),
        drip_bound(6.0),
    ),
    Scenario(
        "model deleted while held",
        "requests held for a model with no replica; the model leaves the table",
        "only clean 503s (never 404, never a hang)",
        model_deleted_while_held,
        only_clean_503,
    ),
)
