"""Models, routes, providers and pods -> the routing table the routers serve from (pure).

:func:`compile_table` turns plain dicts (the objects as the API server returns them) into a
:class:`~inferscale.protocol.table.RoutingTable`: one entry per served model name, with its route
settings and one endpoint per pod (``podIP:port`` of the engine). The rules that are not obvious:

- A model with no pods is still in the table with no endpoints: its requests are *held* while a
  replica starts, never refused as unknown.
- A pod leaves the table as soon as its deletion is seen (``metadata.deletionTimestamp``), before
  its engine is asked to stop, so scale-down and rollouts lose no request. A pod that has no IP
  yet, or has finished, is left out; one that has an IP but is not Ready is kept with
  ``ready: false`` (never picked).
- A route whose primary backend is an InferenceModel applies its settings (strategy, retries,
  spillover, spend caps, ...) to that model's served name, and its other backends (provider
  primaries with their weights, spillover, fallback and mirror backends) join that entry.
  Routers forward request bodies to replicas unchanged, so clients send the served name; a route
  ``modelName`` that differs is reported, not silently served under a name the engine would
  refuse. A route whose primaries are all hosted is an entry of its own under its
  ``modelName`` (routers rename the model for providers and for other served models).
- The spillover threshold defaults to the primary model's autoscaling target per replica.
- Providers go into the table by ``<namespace>/<name>`` with their models and prices (never the
  key); only the ones some backend uses. A backend naming a missing provider, a model the
  provider does not offer, or a missing InferenceModel is left out and reported.
- Conflicts (two models with one served name, two routes for one model) go to the oldest object
  (``creationTimestamp``, then namespace/name), so the winner does not flip between compiles;
  every loser is reported.

Bad data never raises: an object that cannot be used is left out and a sentence saying why is
added to :attr:`CompiledRoutes.problems`, which the controller logs. No I/O, no clock: the
caller passes the version (:func:`next_version` derives one from the time it read).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from inferscale.api.meta import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY
from inferscale.api.v1alpha1.inference_model import SERVED_NAME_PATTERN, InferenceModelSpec
from inferscale.api.v1alpha1.inference_provider import InferenceProviderSpec
from inferscale.api.v1alpha1.inference_route import InferenceRouteSpec
from inferscale.api.validation import describe_errors
from inferscale.protocol.defaults import IN_FLIGHT_PER_REPLICA
from inferscale.protocol.table import (
    ModelRoute,
    RouteSettings,
    RoutingTable,
    TableBackend,
    TableEndpoint,
    TableProvider,
    TableProviderModel,
)
from inferscale.reconcile.adapters import resolve_adapter
from inferscale.reconcile.deployment import served_name
from inferscale.reconcile.engines import ENGINES
from inferscale.reconcile.labels import COMPONENT_ENGINE

JsonDict = dict[str, Any]

MAX_ENDPOINTS: Final = 10_000
"""Endpoints per model the table schema accepts; more are left out (and reported)."""

_GONE_PHASES: Final = frozenset({"Succeeded", "Failed"})
_SERVED_NAME: Final = re.compile(SERVED_NAME_PATTERN)
_OCTET: Final = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4: Final = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
"""A dotted-quad IPv4 address (no leading zeros, each part at most 255)."""


@dataclass(frozen=True)
class CompiledRoutes:
    """The table's content without a version, and what had to be left out."""

    models: dict[str, ModelRoute]
    """Served name -> route settings and endpoints, sorted by name (endpoints by pod name)."""
    providers: dict[str, TableProvider]
    """The providers that some backend uses, by ``<namespace>/<name>``."""
    problems: tuple[str, ...]
    """One sentence per object that was left out or overridden, sorted."""
    served: dict[tuple[str, str], str] = field(default_factory=dict)
    """Served name of every InferenceModel in the table, by (namespace, name)."""


@dataclass(frozen=True)
class _Model:
    namespace: str
    name: str
    served: str
    engine: str
    port: int
    target_in_flight: int
    """The model's autoscaling target per replica: the default spillover threshold."""
    adapters: tuple[str, ...] = ()
    """Its LoRA adapters' names (those with a source the engines can load)."""
    adapter_slots: int = 4
    """Adapters one replica holds on its GPUs at once (``spec.adapterSlots``)."""


@dataclass(frozen=True)
class PodView:
    """What routing reads from one pod; equal views mean the table does not change."""

    namespace: str
    name: str
    model: str
    ip: str | None
    ready: bool
    gone: bool
    """Being deleted or finished: never an endpoint."""


@dataclass(frozen=True)
class RouterTarget:
    """A router pod the table is pushed to."""

    namespace: str
    name: str
    uid: str
    ip: str
    ready: bool
    restarts: int
    """Container restarts: a restarted router process must be sent the table again."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


def _ident(obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    return f"{meta.get('namespace') or '?'}/{meta.get('name') or '?'}"


def _age_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    # RFC 3339 in UTC ("...Z", second precision) sorts as text; a missing one sorts last.
    meta = _meta(obj)
    created = meta.get("creationTimestamp")
    return (
        created if isinstance(created, str) and created else "~",
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )


def _is_ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


def _ipv4(status: Mapping[str, Any]) -> str | None:
    """The pod's IPv4 address: ``podIP``, else the first IPv4 of ``podIPs`` (dual stack)."""
    candidates: list[object] = [status.get("podIP")]
    pod_ips = status.get("podIPs")
    if isinstance(pod_ips, list):
        candidates.extend(_mapping(p).get("ip") for p in pod_ips)
    for candidate in candidates:
        # A regex, not ipaddress: that costs a fifth of a thousand-pod compile.
        if isinstance(candidate, str) and _IPV4.fullmatch(candidate):
            return candidate
    return None


def _has_ip(status: Mapping[str, Any]) -> bool:
    return bool(status.get("podIP")) or bool(status.get("podIPs"))


def pod_view(pod: Mapping[str, Any]) -> PodView | None:
    """Routing's view of an engine pod of a model; ``None`` when it is no model's engine pod."""
    meta = _meta(pod)
    labels = _mapping(meta.get("labels"))
    model = labels.get(LABEL_MODEL)
    name = meta.get("name")
    namespace = meta.get("namespace")
    if (
        labels.get(LABEL_MANAGED_BY) != MANAGED_BY
        or labels.get(LABEL_COMPONENT) != COMPONENT_ENGINE
        or not isinstance(model, str)
        or not isinstance(name, str)
        or not isinstance(namespace, str)
        or not (model and name and namespace)
    ):
        return None
    status = _mapping(pod.get("status"))
    gone = bool(meta.get("deletionTimestamp")) or status.get("phase") in _GONE_PHASES
    return PodView(
        namespace=namespace,
        name=name,
        model=model,
        ip=_ipv4(status),
        ready=_is_ready(status),
        gone=gone,
    )


ParseCache = MutableMapping[tuple[str, str, str, int], tuple[_Model | None, str | None]]
"""Parsed model specs by (namespace, name, uid, generation): see :func:`compile_routes`."""


def _parse_spec(
    namespace: str, name: str, body: Mapping[str, Any]
) -> tuple[_Model | None, str | None]:
    """The model, or ``None`` and why not."""
    try:
        spec = InferenceModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return None, (
            f"InferenceModel {namespace}/{name} left out: its spec does not parse: "
            + "; ".join(describe_errors(error))
        )
    served = served_name(name, spec)
    if not _SERVED_NAME.fullmatch(served):
        # spec.servedName is checked by the API; the object's name (its default) may be longer.
        return None, (
            f"InferenceModel {namespace}/{name} left out: {served!r} cannot be a served model "
            "name (at most 128 letters, digits and . _ : / -, starting with a letter or digit)"
        )
    profile = ENGINES[spec.engine]
    target = spec.autoscaling.target_in_flight_per_replica
    adapters = tuple(
        a.name
        for a in spec.adapters
        if profile.serves_adapters and resolve_adapter(a).path is not None
    )
    return (
        _Model(
            namespace,
            name,
            served,
            spec.engine,
            profile.port,
            target,
            adapters,
            spec.adapter_slots,
        ),
        None,
    )


def _parse_model(
    body: Mapping[str, Any],
    problems: list[str],
    cache: ParseCache | None,
    seen: dict[tuple[str, str, str, int], tuple[_Model | None, str | None]],
) -> _Model | None:
    meta = _meta(body)
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not isinstance(namespace, str) or not name or not namespace:
        problems.append("an InferenceModel without a name or namespace was left out")
        return None
    if meta.get("deletionTimestamp"):
        return None  # being deleted: its name stops resolving now rather than holding requests
    uid, generation = meta.get("uid"), meta.get("generation")
    key = (
        (namespace, name, uid, generation)
        if isinstance(uid, str) and isinstance(generation, int)
        else None
    )
    if key is not None and cache is not None and key in cache:
        parsed = cache[key]
    else:
        parsed = _parse_spec(namespace, name, body)
    if key is not None:
        seen[key] = parsed
    model, problem = parsed
    if problem is not None:
        problems.append(problem)
    return model


def _models_by_key(
    models: Iterable[Mapping[str, Any]], problems: list[str], cache: ParseCache | None
) -> dict[tuple[str, str], _Model]:
    """Parsed models by (namespace, name); of two models with one served name the older wins."""
    by_key: dict[tuple[str, str], _Model] = {}
    owners: dict[str, _Model] = {}
    seen: dict[tuple[str, str, str, int], tuple[_Model | None, str | None]] = {}
    for body in sorted((m for m in models if isinstance(m, Mapping)), key=_age_key):
        model = _parse_model(body, problems, cache, seen)
        if model is None:
            continue
        first = owners.get(model.served)
        if first is not None:
            problems.append(
                f"InferenceModel {model.namespace}/{model.name} left out: served name "
                f"{model.served!r} is already served by the older InferenceModel "
                f"{first.namespace}/{first.name}"
            )
            continue
        owners[model.served] = model
        by_key[(model.namespace, model.name)] = model
    if cache is not None:
        # Keep what this compile used: entries of older generations and gone models go.
        cache.clear()
        cache.update(seen)
    return by_key


def _providers(
    providers: Iterable[Mapping[str, Any]], problems: list[str]
) -> dict[str, TableProvider]:
    """Hosted providers by ``<namespace>/<name>`` (what the table's backends refer to)."""
    out: dict[str, TableProvider] = {}
    for body in providers:
        if not isinstance(body, Mapping):
            continue
        meta = _meta(body)
        name, namespace = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str) or not isinstance(namespace, str) or not name or not namespace:
            problems.append("an InferenceProvider without a name or namespace was left out")
            continue
        if meta.get("deletionTimestamp"):
            continue
        try:
            spec = InferenceProviderSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            problems.append(
                f"InferenceProvider {namespace}/{name} left out: its spec does not parse: "
                + "; ".join(describe_errors(error))
            )
            continue
        out[f"{namespace}/{name}"] = TableProvider(
            type=spec.type,
            base_url=spec.resolved_base_url(),
            timeout_seconds=spec.timeout_seconds,
            anthropic_version=spec.anthropic_version,
            azure=spec.azure,
            vertex=spec.vertex,
            bedrock=spec.bedrock,
            models={
                m.name: TableProviderModel(
                    provider_model=m.provider_model or m.name,
                    input_price_per_million_tokens=m.input_price_per_million_tokens,
                    output_price_per_million_tokens=m.output_price_per_million_tokens,
                )
                for m in spec.models
            },
        )
    return out


@dataclass(frozen=True)
class _RouteEntry:
    """What a route gives one table entry: everything of a ModelRoute but its endpoints."""

    route_id: str
    settings: RouteSettings
    weight: int
    backends: tuple[TableBackend, ...]
    serves_locally: bool


def _route_backends(
    ident: str,
    namespace: str,
    spec: InferenceRouteSpec,
    own: str | None,
    models: Mapping[tuple[str, str], _Model],
    providers: Mapping[str, TableProvider],
    problems: list[str],
) -> list[TableBackend]:
    """The route's backends other than ``own`` (the served name whose entry they join)."""
    out: list[TableBackend] = []
    for backend in spec.backends:
        if backend.provider is not None:
            key = f"{namespace}/{backend.provider.name}"
            provider = providers.get(key)
            if provider is None:
                problems.append(
                    f"InferenceRoute {ident}: backend InferenceProvider {key} does not exist "
                    "(or was left out)"
                )
                continue
            if backend.provider.model not in provider.models:
                problems.append(
                    f"InferenceRoute {ident}: InferenceProvider {key} offers no model "
                    f"{backend.provider.model!r} (it offers {', '.join(sorted(provider.models))})"
                )
                continue
            target_provider: str | None = key
            target = backend.provider.model
        else:
            if backend.role == "primary":
                continue  # a primary model's replicas are its entry's endpoints
            model = models.get((namespace, str(backend.inference_model)))
            if model is None:
                problems.append(
                    f"InferenceRoute {ident}: backend InferenceModel {namespace}/"
                    f"{backend.inference_model} does not exist (or was left out)"
                )
                continue
            if model.served == own:
                problems.append(
                    f"InferenceRoute {ident}: InferenceModel {namespace}/{model.name} is both a "
                    f"primary and a {backend.role} backend; its {backend.role} role is ignored"
                )
                continue
            target_provider, target = None, model.served
        mirror = backend.mirror_percent
        out.append(
            TableBackend(
                role=backend.role,
                provider=target_provider,
                model=target,
                weight=backend.weight,
                mirror_percent=(100.0 if mirror is None else mirror)
                if backend.role == "mirror"
                else None,
            )
        )
    return out


def _parse_route(
    body: Mapping[str, Any], problems: list[str]
) -> tuple[str, str, InferenceRouteSpec] | None:
    """``(ident, namespace, spec)`` of a live route; None (and a problem) when it cannot count."""
    ident = _ident(body)
    meta = _meta(body)
    namespace = meta.get("namespace")
    if meta.get("deletionTimestamp") or not isinstance(namespace, str):
        return None
    try:
        spec = InferenceRouteSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        problems.append(
            f"InferenceRoute {ident} ignored: its spec does not parse: "
            + "; ".join(describe_errors(error))
        )
        return None
    return ident, namespace, spec


def _hosted_problem(
    ident: str,
    client_name: str,
    backends: Sequence[TableBackend],
    served_names: Collection[str],
    owner: Mapping[str, str],
) -> str | None:
    """Why a route of hosted primaries only is left out of the table; None: it is in."""
    if not any(b.role == "primary" and b.weight > 0 for b in backends):
        return f"InferenceRoute {ident} left out: none of its primary backends is usable"
    if client_name in served_names or client_name in owner:
        return (
            f"InferenceRoute {ident} left out: model {client_name!r} is already served by "
            f"{owner.get(client_name) or 'an InferenceModel'}"
        )
    return None


def _route_entries(
    routes: Iterable[Mapping[str, Any]],
    models: Mapping[tuple[str, str], _Model],
    providers: Mapping[str, TableProvider],
    problems: list[str],
) -> tuple[dict[str, _RouteEntry], dict[str, _RouteEntry]]:
    """(entries for served models, entries for routes served by providers alone), by name."""
    settings: dict[str, _RouteEntry] = {}
    hosted: dict[str, _RouteEntry] = {}
    owner: dict[str, str] = {}
    served_names = {m.served for m in models.values()}
    for body in sorted((r for r in routes if isinstance(r, Mapping)), key=_age_key):
        parsed = _parse_route(body, problems)
        if parsed is None:
            continue
        ident, namespace, spec = parsed
        client_name = spec.model_name or str(_meta(body).get("name") or "")

        def route_settings(model: _Model | None, spec: InferenceRouteSpec = spec) -> RouteSettings:
            target = model.target_in_flight if model is not None else IN_FLIGHT_PER_REPLICA
            return RouteSettings.from_route(spec, target)

        local = [b for b in spec.backends if b.inference_model is not None and b.role == "primary"]
        for backend in local:
            model = models.get((namespace, str(backend.inference_model)))
            if model is None:
                problems.append(
                    f"InferenceRoute {ident}: backend InferenceModel {namespace}/"
                    f"{backend.inference_model} does not exist (or was left out)"
                )
                continue
            if model.served in owner:
                problems.append(
                    f"InferenceRoute {ident}: served name {model.served!r} already takes its "
                    f"settings from the older InferenceRoute {owner[model.served]}"
                )
                continue
            if client_name != model.served:
                problems.append(
                    f"InferenceRoute {ident}: clients must send model {model.served!r} (the "
                    f"served name of InferenceModel {namespace}/{model.name}), not "
                    f"{client_name!r}: routers do not rename requests; its settings apply "
                    f"to {model.served!r}"
                )
            owner[model.served] = ident
            backends = _route_backends(
                ident, namespace, spec, model.served, models, providers, problems
            )
            settings[model.served] = _RouteEntry(
                ident, route_settings(model), backend.weight, tuple(backends), True
            )
        if local:
            continue
        # Hosted primaries only: the route is an entry of its own, under the client name.
        backends = _route_backends(ident, namespace, spec, None, models, providers, problems)
        left_out = _hosted_problem(ident, client_name, backends, served_names, owner)
        if left_out is not None:
            problems.append(left_out)
            continue
        owner[client_name] = ident
        hosted[client_name] = _RouteEntry(ident, route_settings(None), 0, tuple(backends), False)
    return settings, hosted


def loaded_adapters(model: Mapping[str, Any]) -> dict[str, list[str]]:
    """Pod name -> the adapters the model's status says it serves (``loadedOn``), sorted.

    The status is the operator's own, but a hand edit must not break a compile: entries that
    are not an adapter name with a list of pod names are skipped.
    """
    entries = _mapping(model.get("status")).get("adapters")
    out: dict[str, list[str]] = {}
    for entry in entries if isinstance(entries, list) else ():
        name = _mapping(entry).get("name")
        pods = _mapping(entry).get("loadedOn")
        if not isinstance(name, str) or not _SERVED_NAME.fullmatch(name):
            continue
        for pod in pods if isinstance(pods, list) else ():
            if isinstance(pod, str):
                out.setdefault(pod, []).append(name)
    return {pod: sorted(set(names)) for pod, names in out.items()}


def adapters_view(model: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What of a model's status matters to routing: which pod serves which adapter."""
    return tuple(sorted((pod, tuple(names)) for pod, names in loaded_adapters(model).items()))


def _adapter_owners(
    by_key: Mapping[tuple[str, str], _Model], served: Collection[str], problems: list[str]
) -> dict[str, tuple[list[str], int]]:
    """Served name -> its adapters (each name served once) and its adapter slots.

    A name another model serves, or an older model's adapter, is left out (the older model
    wins, as for served names) and reported.
    """
    owners: dict[str, _Model] = {}
    out: dict[str, tuple[list[str], int]] = {}
    for model in by_key.values():  # oldest first (see _models_by_key)
        for name in model.adapters:
            first = owners.get(name)
            if name in served or first is not None:
                by = f"the model {name!r}" if first is None else f"{first.namespace}/{first.name}"
                problems.append(
                    f"adapter {name!r} of InferenceModel {model.namespace}/{model.name} left "
                    f"out: the name is already served by {by}"
                )
                continue
            owners[name] = model
            out.setdefault(model.served, ([], model.adapter_slots))[0].append(name)
    return out


def _endpoints(
    pods: Iterable[Mapping[str, Any]],
    models: Mapping[tuple[str, str], _Model],
    problems: list[str],
    loaded: Mapping[tuple[str, str], Mapping[str, list[str]]],
) -> dict[str, list[TableEndpoint]]:
    out: dict[str, list[TableEndpoint]] = {}
    for pod in pods:
        if not isinstance(pod, Mapping):
            continue
        view = pod_view(pod)
        if view is None or view.gone:
            continue
        model = models.get((view.namespace, view.model))
        if model is None:
            # A model's pods outlive it for their grace period, and a model left out above is
            # already reported: nothing to route to either way.
            continue
        if view.ip is None:
            if _has_ip(_mapping(pod.get("status"))):
                problems.append(
                    f"pod {view.namespace}/{view.name} left out: it has no IPv4 address "
                    "(routing tables carry IPv4 addresses only)"
                )
            continue  # not started yet: an IP comes with the sandbox
        # Constructed without validation (a tenth of the cost with a thousand pods): the pod
        # name is the API server's, the address an IPv4 checked above and a profile's port, and
        # the engine one of the API's, so every field already satisfies TableEndpoint.
        out.setdefault(model.served, []).append(
            TableEndpoint.model_construct(
                pod=view.name,
                address=f"{view.ip}:{model.port}",
                ready=view.ready,
                engine=model.engine,
                weight=1,
                adapters=list(loaded.get((view.namespace, view.model), {}).get(view.name, ())),
            )
        )
    for served, endpoints in out.items():
        endpoints.sort(key=lambda e: (e.pod, e.address))
        if len(endpoints) > MAX_ENDPOINTS:
            problems.append(
                f"served name {served!r}: {len(endpoints) - MAX_ENDPOINTS} of "
                f"{len(endpoints)} pods left out (a model carries at most {MAX_ENDPOINTS})"
            )
            del endpoints[MAX_ENDPOINTS:]
    return out


def compile_routes(
    models: Iterable[Mapping[str, Any]],
    routes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    providers: Iterable[Mapping[str, Any]] = (),
    cache: ParseCache | None = None,
) -> CompiledRoutes:
    """Everything of the table but its version, and the problems found on the way.

    Args:
        models: InferenceModel objects (every namespace).
        routes: InferenceRoute objects.
        pods: engine pods of the models (others are ignored).
        providers: InferenceProvider objects.
        cache: a dict the caller keeps from one compile to the next: a model whose uid and
            ``metadata.generation`` (which every spec change moves) are unchanged is not
            validated again. The result is the same with or without it.
    """
    problems: list[str] = []
    model_list = [m for m in models if isinstance(m, Mapping)]
    by_key = _models_by_key(model_list, problems, cache)
    all_providers = _providers(providers, problems)
    entries, hosted = _route_entries(routes, by_key, all_providers, problems)
    loaded = {
        (str(_meta(m).get("namespace")), str(_meta(m).get("name"))): loaded_adapters(m)
        for m in model_list
    }
    endpoints = _endpoints(pods, by_key, problems, loaded)
    adapters = _adapter_owners(by_key, {m.served for m in by_key.values()} | set(hosted), problems)
    default = RouteSettings()  # one shared instance: nothing mutates a compiled table
    table: dict[str, ModelRoute] = {}
    for name in sorted({m.served for m in by_key.values()} | set(hosted)):
        entry = entries.get(name) or hosted.get(name)
        lora: dict[str, Any] = {}
        if name in adapters:
            lora = {"adapters": adapters[name][0], "adapter_slots": adapters[name][1]}
        if entry is None:
            table[name] = ModelRoute(route=default, endpoints=endpoints.get(name, []), **lora)
            continue
        table[name] = ModelRoute(
            route=entry.settings,
            endpoints=endpoints.get(name, []),
            route_id=entry.route_id,
            weight=entry.weight,
            backends=list(entry.backends),
            serves_locally=entry.serves_locally,
            **lora,
        )
    used = {b.provider for m in table.values() for b in m.backends if b.provider is not None}
    return CompiledRoutes(
        models=table,
        providers={k: v for k, v in sorted(all_providers.items()) if k in used},
        problems=tuple(sorted(set(problems))),
        served={key: m.served for key, m in by_key.items()},
    )


def compile_table(
    version: int,
    models: Iterable[Mapping[str, Any]],
    routes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    providers: Iterable[Mapping[str, Any]] = (),
) -> RoutingTable:
    """The complete routing table at ``version`` (see the module docstring for the rules)."""
    compiled = compile_routes(models, routes, pods, providers=providers)
    return RoutingTable(version=version, models=compiled.models, providers=compiled.providers)


def next_version(previous: int, now_ms: int) -> int:
    """A version above ``previous`` that also grows across restarts: the wall clock in ms.

    ``previous`` is the highest version known anywhere (the ConfigMap's, a router's), so even a
    clock that went backwards cannot make a router refuse the table as stale.
    """
    return max(previous + 1, now_ms)


def build_table_configmap(name: str, namespace: str, key: str, text: str) -> JsonDict:
    """The ConfigMap that keeps the last table for routers that start (they mount it).

    No ``managed-by`` label: the Helm chart creates this ConfigMap (so that an uninstall
    removes it) and Helm marks it ``managed-by: Helm``; claiming that label here would make
    every later ``helm upgrade`` fail on a server-side apply conflict. The operator applies the
    table and the two labels the chart sets to the same values.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "inferscale",
                "app.kubernetes.io/component": "routing-table",
            },
        },
        "data": {key: text},
    }


def is_router_pod(pod: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether ``pod`` is a router: in the routers' namespace, carrying every router label."""
    meta = _meta(pod)
    have = _mapping(meta.get("labels"))
    return meta.get("namespace") == namespace and all(have.get(k) == v for k, v in labels.items())


def router_target(pod: Mapping[str, Any]) -> RouterTarget | None:
    """The push target a router pod is, or ``None`` when it cannot take a push.

    A router that is running but not Ready is a target too: it turns Ready only once it holds a
    table, so waiting for Ready would leave a router that started without the ConfigMap (the
    first router of a cluster) unready for good. One being deleted is not: it is draining.
    """
    meta = _meta(pod)
    status = _mapping(pod.get("status"))
    name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
    ip = _ipv4(status)
    if (
        not isinstance(name, str)
        or not isinstance(namespace, str)
        or not isinstance(uid, str)
        or ip is None
        or meta.get("deletionTimestamp")
        or status.get("phase") != "Running"
    ):
        return None
    restarts = 0
    statuses = status.get("containerStatuses")
    for cs in statuses if isinstance(statuses, list) else []:
        count = _mapping(cs).get("restartCount")
        restarts += count if isinstance(count, int) else 0
    return RouterTarget(namespace, name, uid, ip, _is_ready(status), restarts)


def router_targets(pods: Sequence[Mapping[str, Any]]) -> list[RouterTarget]:
    """Every router pod that can take a push, by name."""
    found = [t for p in pods if isinstance(p, Mapping) and (t := router_target(p)) is not None]
    return sorted(found, key=lambda t: (t.namespace, t.name))
