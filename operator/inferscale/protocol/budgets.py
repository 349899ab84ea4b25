"""Budget use: what each router reports of its clients' and teams' budget counters.

``GET /admin/v1/budgets`` answers a :class:`BudgetReport`: per holder (a client
``<namespace>/<name>``, or a team ``team:<namespace>/<team>``) the tokens and micro-dollars
counted in the current UTC day and month, for the budgets its policies set. With Redis every
router reports the same shared counters (``shared``: the operator takes the largest figure);
without it each router counts its own admissions (the operator adds them up). The operator
writes them into each InferenceClient's ``status.usage``.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from inferscale.api.meta import ApiModel

TEAM_PREFIX: Final = "team:"
"""A team's holder id is ``team:<namespace>/<team>`` (a client's is ``<namespace>/<name>``)."""

MAX_HOLDERS: Final = 100_000
"""Most holders one report may list (the clients and teams of the credentials)."""


class HolderUse(ApiModel):
    """One holder's budget counters in the current windows (absent: no budget counts it)."""

    tokens_day: int | None = Field(default=None, ge=0)
    tokens_month: int | None = Field(default=None, ge=0)
    micro_usd_day: int | None = Field(default=None, ge=0)
    micro_usd_month: int | None = Field(default=None, ge=0)


class BudgetReport(ApiModel):
    """``GET /admin/v1/budgets``: one router's view of every budget counter."""

    process: str = Field(max_length=128)
    """The router process that reports."""
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    """The UTC day the ``*_day`` figures count (``YYYY-MM-DD``)."""
    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    """The UTC month the ``*_month`` figures count (``YYYY-MM``)."""
    shared: bool
    """The figures are Redis's, the same on every router (else this router's own count)."""
    problem: str | None = Field(default=None, max_length=1024)
    """Why the figures may be incomplete (Redis unreachable: this router's own view)."""
    holders: dict[str, HolderUse] = Field(default_factory=dict, max_length=MAX_HOLDERS)
    """Holder id -> its counters."""
