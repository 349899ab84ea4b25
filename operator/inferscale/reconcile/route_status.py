"""Routers' spend reports, the compiled table and key states -> route and provider status (pure).

Every router answers ``GET /admin/v1/spend`` with its own spend per route in the current UTC
hour and day, when each route last spilled over, and what it saw of each provider
(:class:`~inferscale.protocol.spend.SpendReport`). :class:`SpendBook` keeps the last report of
every router *process* (a restarted router is a new process, and what the old one spent still
counts until its window ends), sums them per route, and tells each router what the others spent
(:meth:`SpendBook.elsewhere`), so a cap holds across routers within one polling interval.

:func:`route_status` and :func:`provider_status` turn that, the compiled routing table and the
providers' key states (from the credentials compile) into the objects' ``status``:

- InferenceRoute: ``readyBackends`` (backends that can take a request now: a model with a ready
  replica, a provider model with a key), ``spilling`` (a request spilled over within the
  window), ``spend`` (every router's, this hour and today), and conditions ``Ready`` (some
  primary can serve), ``Degraded`` (a backend is missing, a provider has no key or keeps
  failing) and ``SpendCapReached``.
- InferenceProvider: ``Ready`` (its key Secret and key exist and reached the routers; a key
  that changed says when) and ``Degraded`` (the routers' recent failures with it, a refused key
  first: it was probably rotated). No message ever holds a key.

Both return ``None`` when the object already has that status, so nothing is written.
No I/O, no clock: callers pass ``now`` (epoch seconds) and its RFC 3339 text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from inferscale.api.meta import (
    CONDITION_DEGRADED,
    CONDITION_READY,
    Condition,
    ConditionStatus,
    make_condition,
)
from inferscale.api.v1alpha1.inference_provider import InferenceProviderStatus
from inferscale.api.v1alpha1.inference_route import (
    InferenceRouteSpec,
    InferenceRouteStatus,
    Spend,
)
from inferscale.protocol.spend import (
    DAY,
    HOUR,
    ElsewhereSpend,
    ProviderReport,
    RouteSpend,
    SpendReport,
    window_start,
)
from inferscale.protocol.table import ModelRoute
from inferscale.reconcile.credentials import KeyState

CONDITION_SPEND_CAP: Final = "SpendCapReached"
"""A route's condition: a spend cap is reached and spillover has stopped."""
CONDITION_CACHE: Final = "CacheReady"
"""A route's condition, while its cache is enabled: whether every router can run it."""


@dataclass
class SpendBook:
    """The last report of every router process, and the sums the caps and statuses need."""

    reports: dict[str, SpendReport] = field(default_factory=dict)

    def update(self, reports: Iterable[SpendReport], now: float) -> None:
        """Take the new reports; forget processes whose last report is of an ended day."""
        for report in reports:
            self.reports[report.process] = report
        today = window_start(now, DAY)
        for process in [p for p, r in self.reports.items() if r.day_start < today]:
            del self.reports[process]

    def _current(self, now: float) -> list[SpendReport]:
        return [r for r in self.reports.values() if r.day_start == window_start(now, DAY)]

    def totals(self, now: float) -> dict[str, tuple[float, float]]:
        """Route -> (hour, day) spent by every router process, in the windows holding ``now``."""
        hour_start = window_start(now, HOUR)
        out: dict[str, tuple[float, float]] = {}
        for report in self._current(now):
            same_hour = report.hour_start == hour_start
            for route, spend in report.routes.items():
                hour, day = out.get(route, (0.0, 0.0))
                out[route] = (hour + (spend.hour if same_hour else 0.0), day + spend.day)
        return out

    def elsewhere(self, process: str | None, now: float) -> ElsewhereSpend:
        """What every process but ``process`` spent: the document its router is sent."""
        hour_start, day_start = window_start(now, HOUR), window_start(now, DAY)
        totals = self.totals(now)
        own = self.reports.get(process or "")
        routes: dict[str, RouteSpend] = {}
        for route, (hour, day) in totals.items():
            mine = own.routes.get(route) if own is not None else None
            if mine is not None and own is not None and own.day_start == day_start:
                day -= mine.day
                if own.hour_start == hour_start:
                    hour -= mine.hour
            routes[route] = RouteSpend(hour=max(0.0, hour), day=max(0.0, day))
        return ElsewhereSpend(hour_start=hour_start, day_start=day_start, routes=routes)

    def cache_off(self) -> list[str]:
        """Why the response cache is off, for each router process that says so."""
        return [f"{p}: {r.cache_off}" for p, r in sorted(self.reports.items()) if r.cache_off]

    def last_spill(self, route: str) -> float | None:
        """When any router last spilled a request of ``route`` over."""
        times = [
            r.routes[route].last_spill_at
            for r in self.reports.values()
            if route in r.routes and r.routes[route].last_spill_at is not None
        ]
        return max((t for t in times if t is not None), default=None)

    def selections(self, route: str) -> tuple[dict[str, int], float]:
        """A selecting route's (candidate -> requests, cost saved), summed over the processes."""
        counts: dict[str, int] = {}
        saved = 0.0
        for report in self.reports.values():
            seen = report.routes.get(route)
            if seen is None:
                continue
            for model, n in seen.selections.items():
                counts[model] = counts.get(model, 0) + n
            saved += seen.cost_saved
        return counts, saved

    def difficulty_error(self) -> str | None:
        """Why some router selects without its difficulty model (the first such), or None."""
        errors = sorted(r.difficulty_error for r in self.reports.values() if r.difficulty_error)
        return errors[0] if errors else None

    def provider(self, provider: str) -> ProviderReport | None:
        """Every router's view of ``provider`` merged: summed failures, the latest error/ok."""
        seen = [r.providers[provider] for r in self.reports.values() if provider in r.providers]
        if not seen:
            return None
        failures: dict[str, int] = {}
        for report in seen:
            for reason, n in report.failures.items():
                failures[reason] = failures.get(reason, 0) + n
        latest = max(seen, key=lambda r: r.last_error_at or 0.0)
        oks = [r.last_ok_at for r in seen if r.last_ok_at is not None]
        ejected = [r.ejected_until for r in seen if r.ejected_until is not None]
        return ProviderReport(
            failures=failures,
            last_error=latest.last_error,
            last_reason=latest.last_reason,
            last_error_at=latest.last_error_at,
            last_ok_at=max(oks) if oks else None,
            ejected_until=max(ejected) if ejected else None,
        )


def failing(report: ProviderReport | None, now: float, window: float) -> bool:
    """Whether the provider's last call failed, within ``window`` seconds of ``now``."""
    if report is None or report.last_error_at is None:
        return False
    if now - report.last_error_at > window:
        return False
    return report.last_ok_at is None or report.last_error_at > report.last_ok_at


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _generation(obj: Mapping[str, Any]) -> int | None:
    generation = _meta(obj).get("generation")
    return generation if isinstance(generation, int) else None


def _patch(want: dict[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any] | None:
    have = {k: v for k, v in (previous or {}).items() if k in want}
    return None if want == have else want


@dataclass(frozen=True)
class RouteInputs:
    """What a route's status is computed from, besides the route itself."""

    models: Mapping[str, ModelRoute]
    """The compiled table's models."""
    served: Mapping[tuple[str, str], str]
    """Served name by InferenceModel (namespace, name)."""
    providers: Mapping[str, frozenset[str]]
    """Provider id -> the models it offers (providers in the table, any route's)."""
    problems: Sequence[str]
    """The compile's problems."""
    keys: Mapping[str, KeyState]
    """Provider id -> whether its key reached the routers (missing: not known yet)."""
    book: SpendBook
    now: float
    now_text: str
    spilling_window: float
    health_window: float


def _route_problems(ident: str, problems: Sequence[str]) -> list[str]:
    # The compiler's sentences about a route start with "InferenceRoute <ns>/<name>" followed
    # by ":" or " " (never a longer name: the name ends there).
    heads = (f"InferenceRoute {ident}:", f"InferenceRoute {ident} ")
    return [p for p in problems if p.startswith(heads)]


def _ready_models(models: Mapping[str, ModelRoute]) -> set[str]:
    return {name for name, m in models.items() if any(e.ready for e in m.endpoints)}


_MakeCondition = Callable[[str, ConditionStatus, str, str], Condition]
"""``(type, status, reason, message) -> Condition``, with the route's time and generation."""


def _condition_maker(
    now: str, generation: int | None, previous: Sequence[Condition]
) -> _MakeCondition:
    """``condition(type, status, reason, message)`` for an object at ``generation`` now."""

    def condition(kind: str, status: ConditionStatus, reason: str, message: str) -> Condition:
        return make_condition(
            kind, status, reason, message, now=now, generation=generation, previous=previous
        )

    return condition


def route_status(route: Mapping[str, Any], inputs: RouteInputs) -> dict[str, Any] | None:
    """The status ``route`` should have; ``None`` when it already has it."""
    meta = _meta(route)
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    ident = f"{namespace}/{name}"
    generation = _generation(route)
    raw_previous = route.get("status")
    previous_doc = raw_previous if isinstance(raw_previous, Mapping) else None
    try:
        before = InferenceRouteStatus.model_validate(previous_doc or {})
    except ValidationError:
        before = InferenceRouteStatus()

    condition = _condition_maker(inputs.now_text, generation, before.conditions)

    try:
        spec = InferenceRouteSpec.model_validate(route.get("spec") or {})
    except ValidationError:
        status = InferenceRouteStatus(
            observed_generation=generation,
            ready_backends=0,
            conditions=[
                condition(CONDITION_READY, "False", "InvalidSpec", "the spec does not parse"),
            ],
        )
        return _patch(status.to_wire(), previous_doc)
    problems = _route_problems(ident, inputs.problems)
    backends = _survey_backends(spec, namespace, inputs)
    served_here = [m for m in inputs.models.values() if m.route_id == ident]
    ready = _ready_condition(condition, spec, backends, served_here, problems)
    unscored = inputs.book.difficulty_error() if spec.selection is not None else None
    degraded = _degraded_condition(condition, backends, problems, unscored)
    hour, day = inputs.book.totals(inputs.now).get(ident, (0.0, 0.0))
    cap = _cap_condition(condition, spec, hour, day)
    cache = _cache_condition(condition, spec, inputs.book)
    last_spill = inputs.book.last_spill(ident)
    spilling = last_spill is not None and inputs.now - last_spill <= inputs.spilling_window
    selected: dict[str, Any] = {}
    if spec.selection is not None:
        counts, saved = inputs.book.selections(ident)
        selected = {"selections": dict(sorted(counts.items())), "cost_saved": _money(saved)}
    status = InferenceRouteStatus(
        observed_generation=generation,
        ready_backends=backends.ready,
        spilling=spilling,
        spend=Spend(last_hour=_money(hour), today=_money(day)),
        conditions=[c for c in (ready, degraded, cap, cache) if c is not None],
        **selected,
    )
    return _patch(status.to_wire(), previous_doc)


@dataclass
class _Backends:
    """What a route's backends can do now, for its status."""

    ready: int = 0
    """Backends that can take a request now."""
    primary_ready: list[str] = field(default_factory=list)
    """Labels of the usable primaries with a weight."""
    missing_keys: list[str] = field(default_factory=list)
    failing_providers: list[str] = field(default_factory=list)
    usable_spillover: bool = False


def _survey_backends(spec: InferenceRouteSpec, namespace: str, inputs: RouteInputs) -> _Backends:
    """Each backend of the route: usable now, a provider without its key, or failing."""
    ready_models = _ready_models(inputs.models)
    out = _Backends()
    for backend in spec.backends:
        if backend.inference_model is not None:
            served = inputs.served.get((namespace, backend.inference_model))
            usable = served is not None and served in ready_models
            label = f"InferenceModel {namespace}/{backend.inference_model}"
        else:
            assert backend.provider is not None
            provider = f"{namespace}/{backend.provider.name}"
            label = f"{provider} model {backend.provider.model}"
            offered = backend.provider.model in inputs.providers.get(provider, frozenset())
            key = inputs.keys.get(provider)
            if key is not None and not key.ready:
                out.missing_keys.append(f"InferenceProvider {provider}: {key.message}")
            report = inputs.book.provider(provider)
            if failing(report, inputs.now, inputs.health_window) and report is not None:
                out.failing_providers.append(f"InferenceProvider {provider}: {report.last_error}")
            usable = offered and (key is None or key.ready)
        out.ready += usable
        if usable and backend.role == "primary" and backend.weight > 0:
            out.primary_ready.append(label)
        out.usable_spillover = out.usable_spillover or (usable and backend.role == "spillover")
    return out


def _ready_condition(
    condition: _MakeCondition,
    spec: InferenceRouteSpec,
    backends: _Backends,
    served_here: Sequence[ModelRoute],
    problems: Sequence[str],
) -> Condition:
    """``Ready``: a primary can serve; else why not (not in the table, cold, no backend)."""
    if spec.selection is not None and served_here:
        # Its candidates are routes of their own, each with its own Ready condition.
        names = ", ".join(c.model for c in spec.selection.candidates)
        return condition(CONDITION_READY, "True", "Selecting", f"choosing per request: {names}")
    if backends.primary_ready:
        serving = ", ".join(backends.primary_ready)
        return condition(CONDITION_READY, "True", "PrimaryReady", f"serving from {serving}")
    if not served_here:
        why = problems[0] if problems else "the route is not in the routing table"
        return condition(CONDITION_READY, "False", "NotServed", why)
    if any(m.serves_locally for m in served_here):
        message = "no primary has a ready replica: requests are held until one is ready"
        if backends.usable_spillover and spec.spillover.on_cold_start:
            message = "no primary has a ready replica: requests spill over meanwhile"
        return condition(CONDITION_READY, "False", "NoReadyReplica", message)
    return condition(
        CONDITION_READY, "False", "NoUsableBackend", "no primary backend can take requests"
    )


def _degraded_condition(
    condition: _MakeCondition,
    backends: _Backends,
    problems: Sequence[str],
    unscored: str | None = None,
) -> Condition:
    """``Degraded``: problems, missing keys, failing providers, then no difficulty model.

    ``unscored`` says why routers of a selecting route have no difficulty model (None: they
    have it); they serve its first candidate meanwhile.
    """
    if problems:
        return condition(CONDITION_DEGRADED, "True", "BackendUnavailable", "; ".join(problems))
    if backends.missing_keys:
        message = "; ".join(backends.missing_keys)
        return condition(CONDITION_DEGRADED, "True", "ProviderKeyMissing", message)
    if backends.failing_providers:
        message = "; ".join(backends.failing_providers)
        return condition(CONDITION_DEGRADED, "True", "ProviderFailing", message)
    if unscored is not None:
        message = f"serving from the first candidate: {unscored}"
        return condition(CONDITION_DEGRADED, "True", "DifficultyModelUnavailable", message)
    return condition(CONDITION_DEGRADED, "False", "AsExpected", "")


def _cache_condition(
    condition: _MakeCondition, spec: InferenceRouteSpec, book: SpendBook
) -> Condition | None:
    """``CacheReady`` while the route's cache is enabled; False where a router cannot run it.

    The route itself keeps serving: a router without its embedding model passes every request
    on uncached.
    """
    if not spec.cache.enabled:
        return None
    off = book.cache_off()
    if off:
        message = "the cache is off, requests are served uncached: " + "; ".join(off[:3])
        return condition(CONDITION_CACHE, "False", "EmbeddingUnavailable", message[:1024])
    return condition(CONDITION_CACHE, "True", "AsExpected", "")


def _cap_condition(
    condition: _MakeCondition, spec: InferenceRouteSpec, hour: float, day: float
) -> Condition | None:
    """``SpendCapReached`` when the route has a cap (the daily one first); None without caps."""
    caps = spec.spend
    if caps.max_per_day is not None and day >= caps.max_per_day:
        return condition(
            CONDITION_SPEND_CAP,
            "True",
            "DailyCapReached",
            f"spent {day:.4f} of {caps.max_per_day:g} today (UTC): spillover stopped "
            f"(onCapReached: {caps.on_cap_reached})",
        )
    if caps.max_per_hour is not None and hour >= caps.max_per_hour:
        return condition(
            CONDITION_SPEND_CAP,
            "True",
            "HourlyCapReached",
            f"spent {hour:.4f} of {caps.max_per_hour:g} this hour (UTC): spillover stopped "
            f"(onCapReached: {caps.on_cap_reached})",
        )
    if caps.max_per_hour is not None or caps.max_per_day is not None:
        return condition(CONDITION_SPEND_CAP, "False", "UnderCap", "")
    return None


def _money(amount: float) -> float:
    # Six decimals: a millionth of the currency is below any price that matters, and a status
    # that changed by rounding noise alone would be written again.
    return math.floor(amount * 1_000_000 + 0.5) / 1_000_000


def provider_status(
    provider: Mapping[str, Any],
    key: KeyState | None,
    key_changed_at: str | None,
    report: ProviderReport | None,
    *,
    previous: Mapping[str, Any] | None,
    now: float,
    now_text: str,
    health_window: float,
) -> dict[str, Any] | None:
    """The status an InferenceProvider should have; ``None`` when it already has it.

    ``key_changed_at``: when the operator saw its key change (a rotation), if it did.
    """
    generation = _generation(provider)
    try:
        before = InferenceProviderStatus.model_validate(previous or {})
    except ValidationError:
        before = InferenceProviderStatus()

    condition = _condition_maker(now_text, generation, before.conditions)

    if key is None:
        ready = condition(
            CONDITION_READY, "Unknown", "CredentialsPending", "its key has not been read yet"
        )
    elif key.ready:
        message = key.message
        if key_changed_at is not None:
            message += f"; the key changed at {key_changed_at} and routers use the new one"
        ready = condition(CONDITION_READY, "True", key.reason, message)
    else:
        ready = condition(CONDITION_READY, "False", key.reason, key.message)
    if failing(report, now, health_window) and report is not None:
        count = sum(report.failures.values())
        if report.last_reason == "auth":
            degraded = condition(
                CONDITION_DEGRADED,
                "True",
                "KeyRejected",
                f"the provider refuses the routers' API key ({report.last_error}); update the "
                "Secret with a valid key",
            )
        elif report.ejected_until is not None and report.ejected_until > now:
            degraded = condition(
                CONDITION_DEGRADED,
                "True",
                "Ejected",
                f"the routers skip it after failures in a row and probe it again shortly "
                f"(last: {report.last_reason}: {report.last_error}; {count} failures since the "
                "routers started)",
            )
        else:
            degraded = condition(
                CONDITION_DEGRADED,
                "True",
                "Failing",
                f"the routers' last call failed ({report.last_reason}): {report.last_error} "
                f"({count} failures since the routers started)",
            )
    else:
        degraded = condition(CONDITION_DEGRADED, "False", "AsExpected", "")
    status = InferenceProviderStatus(observed_generation=generation, conditions=[ready, degraded])
    return _patch(status.to_wire(), previous)
