"""PrometheusSource against a real Prometheus (the cluster's binary) scraping real sims.

Two sims stand for two replicas of one model (both export vLLM's running and waiting gauges,
the case where a careless ``timestamp()`` query fails), a third for another model in another
namespace. Prometheus scrapes them every second from a static config that carries the labels
Kubernetes service discovery would, and a stand-in router whose spend-capped counter grows for
one route. Also: Prometheus down, and a garbled answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from inferscale.autoscaler.prometheus import PrometheusRound, PrometheusSource
from inferscale.cluster.assets import find_assets
from inferscale.cluster.process import ClusterError
from tests.component.sim.conftest import RunningSim, make_settings

LABELS = ("inferscale_io_model", "namespace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    try:
        assets = find_assets()
    except ClusterError as error:
        pytest.skip(f"no Prometheus binary (run `make kube-binaries`): {error}")
    return assets / "prometheus"


@pytest.fixture(scope="module")
def sims() -> Iterator[list[RunningSim]]:
    # 50 tokens at 50 ms a step: a request stays in flight for 2.5 s.
    slow = make_settings(step_base_seconds=0.05)
    with RunningSim(slow) as a, RunningSim(slow) as b, RunningSim(slow) as c:
        yield [a, b, c]


class _Answer(BaseHTTPRequestHandler):
    """Answers every GET with :meth:`body`, as :attr:`content_type`."""

    content_type = "application/json"

    def body(self) -> bytes:
        raise NotImplementedError

    def do_GET(self) -> None:
        body = self.body()
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _CappedRouter(_Answer):
    """A router's /metrics: ``ns/chat`` capped one more request at every scrape."""

    content_type = "text/plain; version=0.0.4"
    scrapes = 0

    def body(self) -> bytes:
        type(self).scrapes += 1
        return (
            "# TYPE inferscale_router_spend_capped_total counter\n"
            f'inferscale_router_spend_capped_total{{route="ns/chat"}} {self.scrapes}\n'
        ).encode()


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """``handler`` served on a free local port, in a thread, until the block ends."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def router_metrics() -> Iterator[str]:
    with serving(_CappedRouter) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: Path,
    sims: list[RunningSim],
    router_metrics: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    groups = [
        {
            "targets": [sim.base_url.removeprefix("http://")],
            "labels": {"namespace": namespace, "inferscale_io_model": model, "pod": pod},
        }
        for sim, (namespace, model, pod) in zip(
            sims, [("ns", "llama", "llama-0"), ("ns", "llama", "llama-1"), ("ml", "qwen", "q-0")]
        )
    ]
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "pods", "static_configs": groups},
            {"job_name": "routers", "static_configs": [{"targets": [router_metrics]}]},
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            str(prometheus_binary),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                query = httpx.get(
                    f"{url}/api/v1/query", params={"query": "count(up == 1)"}, timeout=1
                ).json()
                result = query["data"]["result"]
                if result and result[0]["value"][1] == "4":
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail("Prometheus did not scrape the three sims and the router within 30 s")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def busy(sim: RunningSim, n: int, stop: threading.Event) -> list[threading.Thread]:
    """``n`` requests that stay in flight until ``stop`` (long outputs on a slow sim)."""

    def one() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                client.post(
                    sim.base_url + "/v1/completions",
                    json={"model": "sim-test-model", "prompt": "x", "max_tokens": 50},
                )

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


async def read_until(
    source: PrometheusSource, seen: Callable[[PrometheusRound], bool], what: str
) -> PrometheusRound:
    """Rounds every 0.5 s until one is ``seen`` (within 20 s); each must answer."""
    deadline = time.monotonic() + 20
    while True:
        round_ = await source.read()
        assert round_.error is None, round_.error
        if seen(round_):
            return round_
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}: {round_}")
        await asyncio.sleep(0.5)


async def test_reads_in_flight_freshness_and_kv_per_model(
    prometheus: str, sims: list[RunningSim]
) -> None:
    source = PrometheusSource(
        prometheus, timeout=3, model_label=LABELS[0], namespace_label=LABELS[1]
    )
    stop = threading.Event()
    threads = busy(sims[0], 3, stop) + busy(sims[1], 2, stop)
    try:
        round_ = await read_until(
            source,
            lambda r: getattr(r.readings.get(("ns", "llama")), "in_flight", None) == 5,
            "5 in flight for ns/llama",
        )
        reading = round_.readings[("ns", "llama")]
    finally:
        source.close()
        stop.set()
        for t in threads:
            t.join(30)
    assert reading.sampled_at is not None and abs(time.time() - reading.sampled_at) < 10
    assert reading.kv_cache is not None and 0 <= reading.kv_cache <= 1
    assert round_.readings[("ml", "qwen")].in_flight == 0


async def test_reads_the_token_throughput_per_model_once_a_minute(
    prometheus: str, sims: list[RunningSim]
) -> None:
    # The cost-aware mode's throughput queries (rate over 10 m, avg_over_time) are valid PromQL
    # on a real Prometheus and read the sims' vLLM token counters per model.
    source = PrometheusSource(
        prometheus, timeout=3, model_label=LABELS[0], namespace_label=LABELS[1]
    )
    stop = threading.Event()
    threads = busy(sims[0], 2, stop)
    seen = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            source.throughput_at = None  # due at every read here
            round_ = await source.read()
            assert round_.error is None, round_.error
            seen = round_.throughput.get(("ns", "llama"))
            if seen is not None and seen.usable():
                break
            await asyncio.sleep(1)
        else:
            pytest.fail(
                f"no usable throughput: {round_.throughput} {round_.problems} {source.queries}"
            )
        # Not due again within the minute: the last answer is handed on, unchanged.
        again = await source.read()
        assert again.throughput is round_.throughput
    finally:
        source.close()
        stop.set()
        for t in threads:
            t.join(30)
    assert seen.prompt_tokens_per_s > 0 and seen.output_tokens_per_s > 0
    assert seen.mean_in_flight > 0
    assert not [p for p in round_.problems if "throughput" in p]
    # The spilled token query is valid PromQL too; with no router exporting the spilled-token
    # counter the share is unknown (the policy runs without it), not an error.
    assert round_.spilled_tokens == {}
    assert round_.spilled_token_share(("ns", "llama"), "llama") == (None, None)


async def test_reads_each_routes_capped_spill_every_round(prometheus: str) -> None:
    # The cost-aware mode's gate: rate() over the last 2 m of the routers' spend-capped
    # counter, per route, in every round (not once a minute like the throughput).
    source = PrometheusSource(
        prometheus, timeout=3, model_label=LABELS[0], namespace_label=LABELS[1]
    )
    try:
        round_ = await read_until(
            source, lambda r: (r.spend_capped_rate("ns/chat") or 0) > 0, "capped spill for ns/chat"
        )
        rate = round_.spend_capped_rate("ns/chat")
        assert rate is not None
    finally:
        source.close()
    # One request per 1 s scrape, at most; rate() divides by the 2 m window, which holds
    # only the seconds since Prometheus started here.
    assert 0 < rate < 3
    assert round_.spend_capped_rate("ns/other") == 0.0  # answered, no series: none capped
    assert round_.spend_capped_rate(None) is None  # no spill route: unknown


async def test_prometheus_down_is_an_error_not_an_exception() -> None:
    source = PrometheusSource(
        f"http://127.0.0.1:{free_port()}",
        timeout=1,
        model_label=LABELS[0],
        namespace_label=LABELS[1],
    )
    started = time.monotonic()
    round_ = await source.read()
    source.close()
    assert round_.error is not None and "failed" in round_.error
    assert round_.readings == {}
    assert time.monotonic() - started < 5


class _Garbled(_Answer):
    def body(self) -> bytes:
        return b'{"status":"success","data":{"resultType":"vector","result":"nonsense"}}'


async def test_a_garbled_answer_leaves_every_model_unknown() -> None:
    with serving(_Garbled) as port:
        source = PrometheusSource(
            f"http://127.0.0.1:{port}",
            timeout=2,
            model_label=LABELS[0],
            namespace_label=LABELS[1],
        )
        round_ = await source.read()
        source.close()
    assert round_.error is None
    assert round_.readings == {}
    assert round_.problems and "vector" in round_.problems[0]
    assert round_.spend_capped is None


class _CappedReadFails:
    """A client whose capped-spill query fails and every other answers an empty vector."""

    def custom_query(self, query: str, **_: object) -> object:
        if "spend_capped" in query:
            raise OSError("connection reset")
        return []


async def test_a_failed_capped_spill_read_leaves_it_unknown_not_the_round() -> None:
    source = PrometheusSource(
        "http://127.0.0.1:1",
        timeout=1,
        model_label=LABELS[0],
        namespace_label=LABELS[1],
        client=_CappedReadFails(),
    )
    round_ = await source.read()
    source.close()
    assert round_.error is None
    assert round_.spend_capped is None and round_.spend_capped_rate("ns/chat") is None
