"""What ``inferscale loadtest`` and ``inferscale top`` read: InferenceModels and router metrics.

The cluster is read through :mod:`inferscale.kube` (the project's one Kubernetes client), the
routers' ``/metrics`` over aiohttp (and summed by :mod:`.routermetrics`).

Failure behaviour: reading the cluster raises :class:`ClusterUnavailable` with a sentence for a
person (no kubeconfig, API server unreachable, CRD not installed, RBAC refusal); the load test
shows it in place of the replica counts and goes on, ``top`` prints it and exits 2. Reading
routes (for the spillover flag) and router metrics never raises: a route CRD that is missing or
a router that does not answer leaves those columns empty, with the reason in
:attr:`RouterSnapshot.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import aiohttp

from inferscale.errors import Forbidden, KubeApiError, NotFound
from inferscale.kube.client import KubeApi, KubernetesApi
from inferscale.loadtest.routermetrics import RouterSnapshot, router_snapshot
from inferscale.loadtest.status import ModelStatus, model_status

GROUP_VERSION = "inferscale.io/v1alpha1"
API_TIMEOUT_SECONDS = 5.0
"""Per call to the API server: a viewer that hangs on a dead cluster is worse than an error."""


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
