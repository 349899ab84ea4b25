"""What the autoscaler says about one model: its status fields, conditions and Events (pure).

A round ends, for each model, in a :class:`ScalingNews`: the count now set, the policy's
decision and sample (none when the settings are invalid), why the load cannot be seen (if it
cannot), whether the count changed, and the ``CostAware`` condition
(:mod:`inferscale.autoscaler.spillprice`). :func:`write_due` says whether that is worth a status
write at all (the controller asks before it takes the model's lock, so a round over a thousand
idle models takes no lock); :func:`scaling_status` turns it and the model as stored into the
status patch and the Event to post, or ``None`` when the status already says it.

No I/O, no clock: the controller passes the time as text and how long ago it last wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import ValidationError

from inferscale.api.meta import Condition, ConditionStatus, make_condition
from inferscale.api.v1alpha1.inference_model import InferenceModelStatus, ObservedSignals
from inferscale.autoscaler.floornews import (
    CONDITION_SCALING_LIMITED,
    REASON_AT_MINIMUM,
    FloorNews,
)
from inferscale.autoscaler.policy import Decision, Sample
from inferscale.autoscaler.spillprice import CONDITION_COST_AWARE, QUIET_REASONS

CONDITION_SCALING_ACTIVE: Final = "ScalingActive"
"""True while the autoscaler sees the load; False (with the reason) while it holds."""

LAST_SCALE_REASON_MAX: Final = 1024
"""``status.lastScaleReason`` is cut to this many characters (a reason names every cause)."""

EventType = Literal["Normal", "Warning"]
Event = tuple[EventType, str, str]
CostCondition = tuple[ConditionStatus, str, str]


@dataclass(frozen=True)
class ScalingNews:
    """What one round found for one model."""

    replicas: int
    """The count now set (the new one when ``scaled``)."""
    decision: Decision | None
    """The policy's decision; None when the model's autoscaling settings are invalid."""
    sample: Sample | None
    """The observation the decision used; None with invalid settings."""
    unknown: str | None
    """Why the load cannot be seen or the settings cannot work; None: all is well."""
    scaled: bool = False
    """The decision changed the count (write and post whatever else holds)."""
    cost: CostCondition | None = None
    """``CostAware`` as (status, reason, message); None: not written (left as it is)."""
    floor: FloorNews | None = None
    """The floor behind ``ScalingLimited`` and ``status.learnedFloor``; None: not written."""

    def condition(self) -> tuple[ConditionStatus, str, str]:
        """``ScalingActive`` as (status, reason, message)."""
        if self.unknown is None:
            return ("True", "ValidSignals", "the autoscaler sees the load")
        reason = "InvalidSettings" if self.decision is None else "SignalsUnavailable"
        return ("False", reason, f"holding at {self.replicas} replicas: {self.unknown}")

    def known(self) -> tuple[object, ...]:
        """The conditions' (status, reason), and the floor: what a stored status must match.

        Their messages carry ages and prices that move every round, so they are left out.
        """
        known = (self.condition()[:2], None if self.cost is None else self.cost[:2])
        return known if self.floor is None else (*known, self.floor.known())

    def signals(self) -> tuple[object, ...] | None:
        """What the periodic write compares: (in flight, held, KV use, replicas)."""
        if self.sample is None:
            return None
        return (self.sample.in_flight, self.sample.held, self.sample.kv_cache_usage, self.replicas)


@dataclass(frozen=True)
class ScalingUpdate:
    """The status patch and the Event for one model; ``patch`` None: nothing to write."""

    patch: dict[str, Any] | None
    event: Event | None = None
    """(type, reason, message) of the Event to post after the patch is stored."""
    cost_event: Event | None = None
    """The Event of a ``CostAware`` change, posted with the other."""
    floor_event: Event | None = None
    """The Event of a ``ScalingLimited`` change (a floor starts holding replicas)."""


def write_due(
    news: ScalingNews,
    written_signals: tuple[object, ...] | None,
    since_write_s: float,
    interval_s: float,
) -> bool:
    """Whether the periodic write is due: it keeps the windows for a restart.

    While the load and the count stay as last written (an idle model, a steady one) the windows
    say nothing new, so no write however long ago the last one was.
    """
    return (
        since_write_s >= interval_s
        and news.decision is not None
        and news.signals() != written_signals
    )


def is_news(news: ScalingNews, known: tuple[object, ...] | None, due: bool) -> bool:
    """Whether ``news`` may change the status, given what it holds (:meth:`ScalingNews.known`).

    A change of status or reason is news; the message alone (an age that grows every round
    while Prometheus is stale) is not, or a hold would write and post every round.
    """
    return news.scaled or due or known != news.known()


def scaling_status(
    news: ScalingNews, model: Mapping[str, Any], *, history: str, now: str, due: bool
) -> ScalingUpdate:
    """The autoscaler's part of ``model``'s status, and the Event that goes with it.

    Args:
        news: what the round found.
        model: the InferenceModel as stored now (its status and generation count).
        history: the policy's windows as JSON, for ``status.autoscalerState``.
        now: the time as RFC 3339 text (a new condition's ``lastTransitionTime``).
        due: the periodic write is due (:func:`write_due`).

    Returns:
        ``patch`` None when the stored condition already has this status and reason and
        neither a scale nor the periodic write calls for one. A status that does not parse is
        read as empty (the patch replaces its conditions list with valid ones).
    """
    try:
        status = InferenceModelStatus.model_validate(model.get("status") or {})
    except ValidationError:
        status = InferenceModelStatus()
    meta = model.get("metadata")
    generation = meta.get("generation") if isinstance(meta, Mapping) else None
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        generation = None
    active = make_condition(
        CONDITION_SCALING_ACTIVE,
        *news.condition(),
        now=now,
        generation=generation,
        previous=status.conditions,
    )
    before = next((c for c in status.conditions if c.type == CONDITION_SCALING_ACTIVE), None)
    flipped = before is None or (before.status, before.reason) != (active.status, active.reason)
    written = [active]
    cost_flipped = False
    cost_event: Event | None = None
    if news.cost is not None:
        was = next((c for c in status.conditions if c.type == CONDITION_COST_AWARE), None)
        cost_flipped = was is None or (was.status, was.reason) != news.cost[:2]
        cost = make_condition(
            CONDITION_COST_AWARE,
            *news.cost,
            now=now,
            generation=generation,
            previous=status.conditions,
        )
        written.append(cost)
        cost_event = _cost_event(was, cost) if cost_flipped else None
    limited = _limited(news, status, now, generation)
    if limited.condition is not None:
        written.append(limited.condition)
    if not (news.scaled or flipped or cost_flipped or limited.changed or due):
        return ScalingUpdate(None)
    mine = {c.type for c in written}
    others = [c for c in status.conditions if c.type not in mine]
    patch: dict[str, Any] = {
        "conditions": [c.to_wire() for c in [*others, *written]],
        "autoscalerState": history,
    }
    if news.floor is not None:
        patch["learnedFloor"] = news.floor.floor
    if news.sample is not None:
        patch["signals"] = ObservedSignals(
            in_flight=news.sample.in_flight,
            held=news.sample.held,
            kv_cache_usage=news.sample.kv_cache_usage,
            observed_at=_iso(news.sample.at),
        ).to_wire()
    event: tuple[EventType, str, str] | None = None
    if news.scaled and news.decision is not None:
        patch["lastScaleTime"] = now
        patch["lastScaleReason"] = news.decision.reason[:LAST_SCALE_REASON_MAX]
        up = news.decision.replicas > news.decision.current
        event = ("Normal", "ScaledUp" if up else "ScaledDown", news.decision.reason)
    elif flipped and news.unknown is not None:
        event = ("Warning", active.reason, active.message)
    return ScalingUpdate(patch, event, cost_event, limited.event)


@dataclass(frozen=True)
class _Limited:
    condition: Condition | None = None
    changed: bool = False
    event: Event | None = None


def _limited(
    news: ScalingNews, status: InferenceModelStatus, now: str, generation: int | None
) -> _Limited:
    """``ScalingLimited`` for ``news``: the condition, whether it is news, and its Event.

    News when its status, reason or message changes or the floor moves (the message's times
    fall on a bucket's start, so they stay put while the load does). A floor that starts
    holding is a Normal Event; one that falls back to the minimum is too, except the first
    condition written (every model's normal state).
    """
    if news.floor is None:
        return _Limited()
    was = next((c for c in status.conditions if c.type == CONDITION_SCALING_LIMITED), None)
    condition = make_condition(
        CONDITION_SCALING_LIMITED,
        *news.floor.condition(),
        now=now,
        generation=generation,
        previous=status.conditions,
    )
    flipped = was is None or (was.status, was.reason) != (condition.status, condition.reason)
    changed = (
        flipped
        or was is None
        or was.message != condition.message
        or status.learned_floor != news.floor.floor
    )
    event: Event | None = None
    if flipped and not (was is None and condition.reason == REASON_AT_MINIMUM):
        event = ("Normal", condition.reason, condition.message)
    return _Limited(condition, changed, event)


def _cost_event(was: Condition | None, now: Condition) -> Event | None:
    """The Event of a ``CostAware`` condition whose (status, reason) changed, if any.

    Every change is posted (a Warning for a fallback, Normal when the mode runs), except a
    first condition that only says the model has no spillover or does not ask for the mode:
    that is every model's normal state and no news to a person.
    """
    if now.reason in QUIET_REASONS:
        return None if was is None else ("Normal", now.reason, now.message)
    return ("Normal" if now.status == "True" else "Warning", now.reason, now.message)


def _iso(at: float) -> str:
    """Epoch seconds as RFC 3339 UTC text, to the second."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
