"""LoRA adapters on running replicas: a timer per InferenceModel that has adapters.

Every :data:`SYNC_INTERVAL_SECONDS` the timer reads each ready replica's ``/v1/models``, calls
the engine's load and unload endpoints for what :func:`~inferscale.reconcile.adapters.
plan_adapters` says differs from the spec, reads the replicas that changed again, and writes
``status.adapters`` and the ``AdaptersReady`` condition (only when they changed). A replica
that was just started gets the whole set on the first pass after it turns Ready; an adapter
added with ``kubectl apply`` is loaded within one interval, with no restart.

Failure behaviour: every call has a timeout (listing :data:`LIST_TIMEOUT_SECONDS`, a load
:data:`LOAD_TIMEOUT_SECONDS`, since vLLM downloads a hub adapter inside the call). An engine's
refusal (a rank above ``--max-lora-rank``, a path it cannot read), a timeout or a connection
error becomes that adapter's ``message`` and phase, a Warning Event when the message is new,
and the next pass tries again; nothing here raises into kopf or touches the replica's pod.
A load that timed out but finished later shows up as loaded on the next listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import kopf
from pydantic import ValidationError

from inferscale.api.meta import GROUP, LABEL_MODEL, VERSION, make_condition
from inferscale.api.v1alpha1.inference_model import (
    KIND,
    PLURAL,
    AdapterStatus,
    InferenceModelSpec,
    InferenceModelStatus,
)
from inferscale.controller.inference_model import (
    API_VERSION,
    EventPoster,
    KopfLogger,
    Runtime,
    event_poster,
    now_rfc3339,
)
from inferscale.errors import KubeApiError, NotFound
from inferscale.reconcile.adapters import (
    CONDITION_ADAPTERS_READY,
    AdapterAction,
    ObservedReplica,
    ResolvedAdapter,
    adapter_statuses,
    adapters_condition,
    parse_loaded,
    plan_adapters,
    resolve_adapter,
)
from inferscale.reconcile.engines import ENGINES, AdapterEndpoints
from inferscale.reconcile.routing import pod_view

SYNC_INTERVAL_SECONDS: Final = 5.0
"""How often each model with adapters is compared with its replicas (an added adapter is
served within about this long)."""

LIST_TIMEOUT_SECONDS: Final = 5.0
"""Limit of one ``GET /v1/models``."""

LOAD_TIMEOUT_SECONDS: Final = 120.0
"""Limit of one load or unload call (a load may download the adapter from the hub)."""

CLIENT_MEMO_KEY: Final = "adapter_client"
"""Where the shared HTTP client lives in kopf's memo."""

MAX_ERROR_BODY: Final = 300


@dataclass(frozen=True)
class Replica:
    """A ready replica: its pod and where its engine listens."""

    pod: str
    base_url: str


BaseUrl = Callable[[str, str, int], str]
"""(pod name, pod IP, engine port) -> the engine's base URL (tests point it elsewhere)."""


def _pod_url(pod: str, ip: str, port: int) -> str:
    return f"http://{ip}:{port}"


def ready_replicas(
    pods: Sequence[Mapping[str, Any]], port: int, base_url: BaseUrl = _pod_url
) -> list[Replica]:
    """The model's engine pods that are Ready, not going, and have an IP, sorted by name."""
    out = []
    for pod in pods:
        view = pod_view(pod)
        if view is not None and view.ready and not view.gone and view.ip is not None:
            out.append(Replica(view.name, base_url(view.name, view.ip, port)))
    return sorted(out, key=lambda r: r.pod)


def _failure(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def observe(client: httpx.AsyncClient, replica: Replica) -> ObservedReplica:
    """``replica``'s loaded adapters from its ``/v1/models``; an unreadable one says why."""
    try:
        response = await client.get(f"{replica.base_url}/v1/models", timeout=LIST_TIMEOUT_SECONDS)
        if response.status_code != 200:
            return ObservedReplica(replica.pod, None, f"/v1/models answered {response.status_code}")
        return ObservedReplica(replica.pod, parse_loaded(response.json()))
    except httpx.HTTPError as error:
        return ObservedReplica(replica.pod, None, _failure(error))
    except ValueError as error:  # not JSON, or not a model list
        return ObservedReplica(replica.pod, None, f"/v1/models: {error}")


async def call_engine(
    client: httpx.AsyncClient, replica: Replica, paths: AdapterEndpoints, action: AdapterAction
) -> str | None:
    """Perform ``action`` on ``replica``'s engine; None when it worked, else why not."""
    if action.verb == "load":
        url, body = paths.load, {"lora_name": action.name, "lora_path": action.path}
    else:
        url, body = paths.unload, {"lora_name": action.name}
    try:
        response = await client.post(
            f"{replica.base_url}{url}", json=body, timeout=LOAD_TIMEOUT_SECONDS
        )
    except httpx.HTTPError as error:
        return f"{replica.pod}: {action.verb} {_failure(error)}"
    if response.status_code == 200:
        return None
    if action.verb == "unload" and response.status_code == 404:
        return None  # already gone: what an unload wants
    text = " ".join(response.text.split())[:MAX_ERROR_BODY]
    return f"{replica.pod}: {action.verb} answered {response.status_code}: {text}"


async def _run_actions(
    client: httpx.AsyncClient,
    replicas: Mapping[str, Replica],
    paths: AdapterEndpoints,
    actions: Sequence[AdapterAction],
    post_event: EventPoster,
) -> dict[str, str]:
    """Each replica's actions in order, replicas side by side; adapter name -> its failure.

    Of several replicas' failures the first pod's (by name) is kept, with a count of the
    others: the message must not flip between replicas from one pass to the next, or every
    pass would post a new Warning.
    """
    failures: dict[tuple[str, str], str] = {}

    async def on_replica(pod: str) -> None:
        for action in (a for a in actions if a.pod == pod):
            failure = await call_engine(client, replicas[pod], paths, action)
            if failure is None:
                reason = "AdapterLoaded" if action.verb == "load" else "AdapterUnloaded"
                post_event("Normal", reason, action.describe())
            else:
                failures[(action.name, pod)] = failure

    await asyncio.gather(*(on_replica(pod) for pod in sorted({a.pod for a in actions})))
    errors: dict[str, str] = {}
    others: dict[str, int] = {}
    for (name, _pod), failure in sorted(failures.items()):
        if name in errors:
            others[name] = others.get(name, 0) + 1
        else:
            errors[name] = failure
    for name, count in others.items():
        errors[name] += f" (and {count} more replica{'s' if count > 1 else ''})"
    return errors


def _status_patch(
    previous: InferenceModelStatus,
    statuses: list[AdapterStatus],
    generation: int | None,
    now: str,
) -> dict[str, Any] | None:
    """The merge patch of ``adapters`` and the conditions; None when nothing changed."""
    others = [c for c in previous.conditions if c.type != CONDITION_ADAPTERS_READY]
    if statuses:
        status, reason, message = adapters_condition(statuses)
        condition = make_condition(
            CONDITION_ADAPTERS_READY,
            status,
            reason,
            message,
            now=now,
            generation=generation,
            previous=previous.conditions,
        )
        conditions = [*others, condition]
    else:
        conditions = others  # no adapters: the condition goes with them
    if statuses == previous.adapters and conditions == previous.conditions:
        return None
    return {
        "adapters": [s.to_wire() for s in statuses],
        "conditions": [c.to_wire() for c in conditions],
    }


def _previous_status(body: Mapping[str, Any]) -> InferenceModelStatus:
    try:
        return InferenceModelStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return InferenceModelStatus()


async def _model_pods(runtime: Runtime, namespace: str, name: str) -> list[dict[str, Any]]:
    if runtime.cache is not None:
        return list(runtime.cache.pods(namespace, name))
    return await runtime.api.list("v1", "Pod", namespace, f"{LABEL_MODEL}={name}")


async def _observe_all(
    client: httpx.AsyncClient, replicas: Sequence[Replica]
) -> list[ObservedReplica]:
    return list(await asyncio.gather(*(observe(client, r) for r in replicas)))


async def sync_adapters(
    runtime: Runtime,
    body: Mapping[str, Any],
    client: httpx.AsyncClient,
    post_event: EventPoster,
    *,
    now: Callable[[], str] = now_rfc3339,
    base_url: BaseUrl = _pod_url,
) -> None:
    """One pass for one model: observe, load and unload, observe again, write the status."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        spec = InferenceModelSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return  # the model's reconcile reports a spec that does not parse
    profile = ENGINES[spec.engine]
    desired: list[ResolvedAdapter] = []
    statuses: list[AdapterStatus] = []
    if spec.adapters and profile.adapter_endpoints is not None:
        desired = [resolve_adapter(a) for a in spec.adapters]
        pods = await _model_pods(runtime, namespace, name)
        replicas = ready_replicas(pods, profile.port, base_url)
        observed = await _observe_all(client, replicas)
        actions = plan_adapters(desired, observed, spec.adapter_slots)
        errors: dict[str, str] = {}
        if actions:
            by_pod = {r.pod: r for r in replicas}
            paths = profile.adapter_endpoints
            errors = await _run_actions(client, by_pod, paths, actions, post_event)
            observed = await _observe_all(client, replicas)
        statuses = adapter_statuses(desired, observed, errors)
    await _write(runtime, namespace, name, body, statuses, now(), post_event)


async def _write(
    runtime: Runtime,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    statuses: list[AdapterStatus],
    now: str,
    post_event: EventPoster,
) -> None:
    """Patch the status under the model's lock (a reconcile must not write an older copy)."""
    async with runtime.lock(namespace, name):
        current = body
        if runtime.cache is not None:
            current = runtime.cache.model(namespace, name) or body
        previous = _previous_status(current)
        patch = _status_patch(previous, statuses, current["metadata"].get("generation"), now)
        if patch is None:
            return
        try:
            stored = await runtime.api.patch_status(API_VERSION, KIND, namespace, name, patch)
        except NotFound:
            return  # deleted meanwhile
        if runtime.cache is not None:
            runtime.cache.applied(stored)
    before = {s.name: s.message for s in previous.adapters}
    for s in statuses:
        if s.message is not None and s.phase != "Loaded" and before.get(s.name) != s.message:
            post_event("Warning", "AdapterFailed", f"adapter {s.name}: {s.message}")


def adapter_client(memo: Any) -> httpx.AsyncClient:
    """The HTTP client every model's timer shares (made on first use, closed at cleanup)."""
    client = memo.get(CLIENT_MEMO_KEY)
    if client is None:
        client = memo[CLIENT_MEMO_KEY] = httpx.AsyncClient(
            timeout=httpx.Timeout(LIST_TIMEOUT_SECONDS)
        )
    assert isinstance(client, httpx.AsyncClient)
    return client


def has_adapters(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    """Whether a model lists adapters, or its status still shows some (to be cleared)."""
    return bool((spec or {}).get("adapters")) or bool((status or {}).get("adapters"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=SYNC_INTERVAL_SECONDS, when=has_adapters)
async def inference_model_adapters(
    body: kopf.Body, memo: Any, logger: KopfLogger, **_: Any
) -> None:
    """Load and unload the model's adapters on its ready replicas; report them in status."""
    if body["metadata"].get("deletionTimestamp"):
        return
    try:
        await sync_adapters(memo["runtime"], body, adapter_client(memo), event_poster(body))
    except KubeApiError as error:
        # The status write failed: the next tick writes it again.
        logger.warning("adapters of %s: status not written: %s", body["metadata"]["name"], error)


@kopf.on.cleanup()
async def adapters_cleanup(memo: Any, **_: Any) -> None:
    """Close the shared HTTP client."""
    client = memo.get(CLIENT_MEMO_KEY)
    if isinstance(client, httpx.AsyncClient):
        await client.aclose()
