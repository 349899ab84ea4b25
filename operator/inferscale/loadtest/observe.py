"""What ``inferscale loadtest`` and ``inferscale top`` read: InferenceModels and router metrics.

The cluster is read through :mod:`inferscale.kube` (the project's one Kubernetes client), the
routers' ``/metrics`` over aiohttp.

Failure behaviour: reading the cluster raises :class:`ClusterUnavailable` with a sentence for a
person (no kubeconfig, API server unreachable, CRD not installed, RBAC refusal); the load test
shows it in place of the replica counts and goes on, ``top`` prints it and exits 2. Reading
routes (for the spillover flag) and router metrics never raises: a route CRD that is missing or
a router that does not answer leaves those columns empty, with the reason in
:attr:`RouterSnapshot.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp

from inferscale.errors import Forbidden, KubeApiError, NotFound
from inferscale.kube.client import KubeApi, KubernetesApi
from inferscale.loadtest.promtext import (
    Sample,
    histogram_buckets,
    histogram_quantile,
    parse_samples,
    sum_by,
)
from inferscale.loadtest.status import ModelStatus, model_status

GROUP_VERSION = "inferscale.io/v1alpha1"
API_TIMEOUT_SECONDS = 5.0
"""Per call to the API server: a viewer that hangs on a dead cluster is worse than an error."""

# The router's metric names (router/metrics.py); a unit test renders the router's own metrics
# and reads them back with these, so a rename there fails here.
IN_FLIGHT = "inferscale_router_in_flight"
HELD = "inferscale_router_held_requests"
TTFT = "inferscale_router_time_to_first_token_seconds"
REQUESTS = "inferscale_router_requests_total"
SPILLOVER = "inferscale_router_spillover_total"
"""Requests sent to spillover backends, per model: read when the router exports it."""


class ClusterUnavailable(Exception):
    """The cluster cannot be read; the message says why and what to do."""


def connect_cluster(kubeconfig: str | None) -> KubernetesApi:
    """A client for ``kubeconfig`` (or the current context); ClusterUnavailable without one."""
    try:
        return KubernetesApi.from_environment(kubeconfig, timeout_seconds=API_TIMEOUT_SECONDS)
    except KubeApiError as error:
        raise ClusterUnavailable(f"no usable cluster credentials: {error.message}") from error


def _explain(error: KubeApiError, what: str) -> str:
    if isinstance(error, NotFound):
        return (
            f"the {what} CRD is not installed in this cluster "
            "(kubectl apply -f crds/, or install the Helm chart)"
        )
    if isinstance(error, Forbidden):
        return f"not allowed to list {what}s: {error.message}"
    if error.status == 0:
        return f"cannot reach the Kubernetes API server: {error.message}"
    return f"the Kubernetes API answered {error.status} {error.reason}: {error.message}"


async def read_models(api: KubeApi, namespace: str | None) -> list[ModelStatus]:
    """Every InferenceModel in ``namespace`` (all with None), sorted by namespace and name."""
    try:
        objects = await api.list(GROUP_VERSION, "InferenceModel", namespace)
    except KubeApiError as error:
        raise ClusterUnavailable(_explain(error, "InferenceModel")) from error
    return sorted((model_status(o) for o in objects), key=lambda m: m.key)


async def read_spilling(api: KubeApi, namespace: str | None) -> set[str]:
    """``namespace/name`` of the InferenceModels whose route is spilling over now."""
    try:
        routes = await api.list(GROUP_VERSION, "InferenceRoute", namespace)
    except KubeApiError:
        return set()
    out: set[str] = set()
    for route in routes:
        status = route.get("status")
        if not isinstance(status, dict) or status.get("spilling") is not True:
            continue
        ns = str((route.get("metadata") or {}).get("namespace") or "")
        backends = (route.get("spec") or {}).get("backends") or []
        for backend in backends if isinstance(backends, list) else []:
            if isinstance(backend, dict) and isinstance(backend.get("inferenceModel"), str):
                out.add(f"{ns}/{backend['inferenceModel']}")
    return out


class ClusterWatch:
    """Polls the InferenceModels for the load test's live view; never raises while it runs.

    Without an API (no credentials) it only carries the note that says why.
    """

    def __init__(
        self,
        api: KubeApi | None,
        namespace: str | None,
        interval: float = 2.0,
        note: str = "reading the cluster...",
    ) -> None:
        """Read ``namespace`` (all with None) every ``interval`` seconds."""
        self.api = api
        self.namespace = namespace
        self.interval = interval
        self.models: list[ModelStatus] = []
        self.note: str | None = note

    async def poll(self) -> list[ModelStatus]:
        """Read once; on failure keep the last models and set :attr:`note`."""
        if self.api is None:
            return self.models
        try:
            self.models = await read_models(self.api, self.namespace)
        except ClusterUnavailable as error:
            self.note = str(error)
            return self.models
        self.note = None if self.models else "no InferenceModels found"
        return self.models

    async def run(self, on_models: Callable[[list[ModelStatus]], None]) -> None:
        """Poll until cancelled, handing each successful read to ``on_models``."""
        if self.api is None:
            return
        while True:
            models = await self.poll()
            if self.note is None:
                on_models(models)
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        """Release the API client's connections."""
        close = getattr(self.api, "close", None)
        if callable(close):
            close()


# ----- router metrics --------------------------------------------------------------------------


@dataclass
class RouterSnapshot:
    """The routers' metrics at one moment, summed over every router scraped, by model label."""

    at: float
    in_flight: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    ttft_buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    spillover: dict[str, float] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """Why a router could not be read (one entry per router that failed)."""
    has_spillover: bool = False
    """Whether any router exports the spillover counter."""


def router_snapshot(texts: Iterable[str], at: float, errors: Sequence[str] = ()) -> RouterSnapshot:
    """Sum the expositions of several routers into one snapshot."""
    samples: list[Sample] = []
    for text in texts:
        samples.extend(parse_samples(text))
    return RouterSnapshot(
        at=at,
        in_flight=sum_by(samples, IN_FLIGHT, "model"),
        held=sum_by(samples, HELD, "model"),
        ttft_buckets=histogram_buckets(samples, TTFT, "model"),
        spillover=sum_by(samples, SPILLOVER, "model"),
        requests=sum_by(samples, REQUESTS, "model"),
        errors=list(errors),
        has_spillover=any(s.name == SPILLOVER for s in samples),
    )


def ttft_quantiles(
    newer: RouterSnapshot, older: RouterSnapshot | None, model: str
) -> tuple[float | None, float | None]:
    """(p50, p95) of the TTFT observed between two snapshots.

    Since the routers started when ``older`` is None; (None, None) when no stream started in
    between.
    """
    now = newer.ttft_buckets.get(model)
    if not now:
        return None, None
    before = older.ttft_buckets.get(model, {}) if older is not None else {}
    # A counter that went down means a router restarted: use its counts since then.
    delta = [(le, n - before.get(le, 0.0)) for le, n in now.items()]
    if any(n < 0 for _, n in delta):
        delta = list(now.items())
    return histogram_quantile(0.5, delta), histogram_quantile(0.95, delta)


def counter_rate(
    newer: RouterSnapshot, older: RouterSnapshot | None, table: str, model: str
) -> float | None:
    """Per-second increase of a per-model counter (``requests`` or ``spillover``)."""
    if older is None or newer.at <= older.at:
        return None
    counts: dict[str, float] = getattr(newer, table)
    now = counts.get(model)
    if now is None:
        return None
    before: float = getattr(older, table).get(model, 0.0)
    return max(now - before, 0.0) / (newer.at - older.at)


async def scrape_routers(
    session: aiohttp.ClientSession, urls: Sequence[str], timeout: float, at: float
) -> RouterSnapshot:
    """GET ``/metrics`` of every router at once; failures go to the snapshot's errors."""

    async def one(url: str) -> str:
        async with session.get(
            url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message="not 200"
                )
            return await response.text()

    results = await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)
    texts: list[str] = []
    errors: list[str] = []
    for url, result in zip(urls, results, strict=True):
        if isinstance(result, str):
            texts.append(result)
        elif isinstance(result, TimeoutError):
            errors.append(f"{url}: no answer within {timeout:g} s")
        elif isinstance(result, aiohttp.ClientResponseError):
            errors.append(f"{url}/metrics: HTTP {result.status}")
        elif isinstance(result, aiohttp.ClientError | OSError | UnicodeDecodeError):
            errors.append(f"{url}: {result}")
        elif isinstance(result, BaseException):
            raise result
    return router_snapshot(texts, at, errors)
