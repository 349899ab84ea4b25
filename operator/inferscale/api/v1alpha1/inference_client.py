"""InferenceClient: one client of the router, its API key (a Secret reference), models and limits.

The key itself lives in a Secret; the operator hashes it (SHA-256) and sends the routers only
the digest, so neither the spec, the routing table nor a router's memory holds a usable key.
While any InferenceClient exists, the routers require a key on every request (see
``docs/access.md`` for the rule and the operator setting that changes it).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from inferscale.api.meta import (
    DNS_LABEL_PATTERN,
    ApiModel,
    Condition,
    Resource,
    SecretKeyRef,
    nested,
)
from inferscale.api.v1alpha1.inference_model import SERVED_NAME_PATTERN

KIND: Final = "InferenceClient"
PLURAL = "inferenceclients"

ServedName = Annotated[str, Field(pattern=SERVED_NAME_PATTERN, max_length=128)]
"""A served model name, as clients send it in ``model``."""

MAX_LIMIT: Final = 1_000_000_000
"""Largest request or token count a limit may name (a billion: far beyond any real quota)."""

MAX_BUDGET: Final = 10**15
"""Largest token budget (fits a float without rounding, as Redis and JSON both need)."""

MAX_USD_BUDGET: Final = 1e9
"""Largest money budget in USD (counted in micro-dollars: 10**15, as exact as token counts)."""


class ClientLimits(ApiModel):
    """Rates per minute, refilled continuously (unset: unlimited).

    A client may burst up to a minute's worth at once; after that its sustained rate is the
    limit per minute.
    """

    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    """Requests per minute; past it the router answers 429 with ``Retry-After``."""

    tokens_per_minute: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    """Prompt plus completion tokens per minute. A request is admitted against an estimate
    (its body size / 4 plus ``max_tokens``) and charged its real ``usage`` when it ends."""


class ClientBudgets(ApiModel):
    """Token and money allowances per calendar period (UTC). Unset means no budget."""

    tokens_per_day: int | None = Field(default=None, ge=1, le=MAX_BUDGET)
    """Prompt plus completion tokens per day (00:00 to 24:00 UTC); once spent, 429 with
    ``Retry-After`` until midnight UTC."""

    tokens_per_month: int | None = Field(default=None, ge=1, le=MAX_BUDGET)
    """Prompt plus completion tokens per calendar month (UTC); once spent, 429 until the
    first of the next month."""

    usd_per_day: float | None = Field(default=None, gt=0, le=MAX_USD_BUDGET)
    """US dollars per UTC day, priced as the routes' spend caps are (the provider's prices
    per million input and output tokens; self-hosted models cost nothing)."""

    usd_per_month: float | None = Field(default=None, gt=0, le=MAX_USD_BUDGET)
    """US dollars per calendar month (UTC)."""


class ClientTeam(ApiModel):
    """The team a client belongs to, and the budgets its clients share."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    """Team name; clients of one namespace that name the same team share its budgets."""

    budgets: ClientBudgets = nested(ClientBudgets)
    """Budgets of the whole team (every key of every client in it). When the team's clients
    declare different budgets, the tightest value of each applies."""


class InferenceClientSpec(ApiModel):
    """Who may call the router with which key, for which models, how fast and how much."""

    api_key_secret_ref: SecretKeyRef
    """Secret key that holds the client's API key (the bearer token it sends). Several keys,
    one per line, are all accepted: add the new key, move the clients, remove the old one.
    Keys shorter than 16 characters are refused."""

    allowed_models: list[ServedName] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Served model names (what clients send as ``model``) this client may use; empty allows
    every model. Others get 403 and are hidden from ``GET /v1/models``."""

    limits: ClientLimits = nested(ClientLimits)
    """Request and token rates (429 with ``Retry-After`` beyond them)."""

    budgets: ClientBudgets = nested(ClientBudgets)
    """Token and money budgets per day and month (429 with ``Retry-After`` once spent)."""

    team: ClientTeam | None = None
    """The team this client belongs to (unset: none), with the team's shared budgets."""

    disabled: bool = False
    """Refuse this client's keys (401) without deleting anything."""


class BudgetUse(ApiModel):
    """Tokens and US dollars counted in the current UTC day and month.

    Only for the budgets that are set (an unset budget is not counted and stays absent).
    """

    tokens_today: int | None = Field(default=None, ge=0)
    """Prompt plus completion tokens counted today (UTC) against ``tokensPerDay``."""

    tokens_this_month: int | None = Field(default=None, ge=0)
    """Tokens counted this calendar month (UTC) against ``tokensPerMonth``."""

    usd_today: float | None = Field(default=None, ge=0)
    """US dollars spent today (UTC) against ``usdPerDay``."""

    usd_this_month: float | None = Field(default=None, ge=0)
    """US dollars spent this calendar month (UTC) against ``usdPerMonth``."""


class ClientUsage(ApiModel):
    """Usage against the client's budgets and its team's, as the routers count them."""

    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    """The UTC day (``YYYY-MM-DD``) the figures count; its month is the month's."""

    client: BudgetUse = nested(BudgetUse)
    """This client's own budgets (every key of its Secret)."""

    team: BudgetUse | None = None
    """Its team's budgets, shared by every client of the team (unset: no team budget)."""

    budget_used_percent: int | None = Field(default=None, ge=0)
    """The most used of every budget above, in percent of its limit (100: spent, refused)."""


class InferenceClientStatus(ApiModel):
    """The observed state of a client, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""

    keys: int | None = Field(default=None, ge=0)
    """How many keys the Secret holds (each one accepted)."""

    usage: ClientUsage | None = None
    """Usage against the budgets, refreshed every few seconds by the operator from the
    routers (unset: the client and its team have no budget)."""

    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready: the key Secret exists and holds at least one usable key, so the routers accept
    this client. UsageReported: ``usage`` is current (False: the routers could not be read, or
    their limits are not shared through Redis now, so the figures may be incomplete)."""


class InferenceClient(Resource[InferenceClientSpec, InferenceClientStatus]):
    """A whole InferenceClient object, as ``kubectl apply`` sends it."""

    kind: Literal["InferenceClient"] = KIND
    """Kind."""
