"""``RouterSettings``: every setting of one router process, read once (flags and env).

Built by ``cli/router.py`` (flags over ``INFERSCALE_ROUTER_*`` over the defaults) and passed to
``create_app``; nothing below the CLI reads the environment. Route-level behaviour (strategy,
retries, timeouts, hold queue) comes from the routing table, not from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """Settings of one router process."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSCALE_ROUTER_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = "0.0.0.0"
    """Address to bind; all interfaces by default, because the router runs as a pod."""
    port: int = Field(8080, ge=0, le=65535)
    """TCP port of the OpenAI API, health, metrics and the admin API (0 picks a free one)."""
    table_file: str | None = None
    """Routing table to load at start (the operator's ConfigMap, mounted); re-read when it
    changes, and applied when its version is newer than the one held."""
    table_poll_seconds: float = Field(10.0, ge=0)
    """How often the table file and the credentials file are checked for changes (0: only at
    start)."""
    credentials_file: str | None = None
    """Credentials to load at start (the operator's Secret ``inferscale-router-credentials``,
    mounted): provider API keys and the digests of client keys. Re-read when it changes, and
    applied when its version is newer than the one held."""
    require_client_key: bool = False
    """Refuse every request without a known client key (401), whatever the credentials say.
    Without it a key is required once the operator's credentials say so (while any
    InferenceClient exists); set it where the router must never serve openly, not even before
    its first credentials arrive."""
    admin_token: str | None = Field(None, repr=False)
    """Bearer token of the admin API (env ``INFERSCALE_ROUTER_ADMIN_TOKEN``, set from a
    Secret). Without a token (here or in ``admin_token_file``) the admin API refuses all."""
    admin_token_file: str | None = None
    """File holding the admin token (a mounted Secret); read at start."""
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    client_body_timeout_seconds: float = Field(30.0, gt=0)
    """Longest a client may take to send its body; slower ones get 408 and lose the
    connection."""
    idle_connection_seconds: float = Field(75.0, gt=0)
    """Longest a client connection may go without a complete request: an idle keep-alive
    connection, or a client still sending its headers that long after connecting
    (slow-loris), is closed. A request in progress is never cut by it."""
    max_client_connections: int = Field(8192, ge=0)
    """Most client connections open at once (idle keep-alive ones included); each one past it
    is answered 503 ``too_many_connections`` with ``Connection: close`` and closed. Memory for
    request bodies is bounded by this times ``max_request_bytes``. 0: no cap but the process's
    file limit."""
    connect_timeout_seconds: float = Field(3.0, gt=0)
    """Longest wait to connect to an engine (a connect error is retried elsewhere)."""
    upstream_connections: int = Field(4096, ge=1)
    """Most pooled connections to the engines, all together."""
    breaker_failures: int = Field(3, ge=1)
    """Consecutive failures that eject an endpoint or a hosted provider (circuit breaker)."""
    breaker_ejection_seconds: float = Field(5.0, gt=0)
    """First ejection; each ejection in a row doubles it."""
    breaker_max_ejection_seconds: float = Field(60.0, gt=0)
    """Longest ejection."""
    keepalive_seconds: float = Field(5.0, gt=0)
    """Interval of SSE comment keep-alives sent to held streaming clients."""
    scrape_interval_seconds: float = Field(0.0, ge=0)
    """How often engines' ``/metrics`` are read for queue and KV-cache use (0: never; the
    pickers then balance on the router's own in-flight counts)."""
    mirror_max_in_flight: int = Field(64, ge=0)
    """Most mirror copies in flight at once; past it a copy is dropped (and counted), so
    mirroring never queues work behind the clients' requests."""
    redis_url: str | None = Field(None, repr=False)
    """Redis holding the client limits and budgets that several router replicas share, for
    example ``redis://redis.inferscale-system:6379/0`` (a password in it: set the variable
    ``INFERSCALE_ROUTER_REDIS_URL`` from a Secret). Unset: each router keeps its own."""
    redis_timeout_seconds: float = Field(0.25, gt=0, le=30)
    """Longest wait for Redis per call (connect or answer); past it the request is limited
    by this router alone and Redis counts as down."""
    redis_retry_seconds: float = Field(1.0, gt=0, le=300)
    """While Redis is down, how often it is tried again (requests in between do not wait)."""
    redis_sync_seconds: float = Field(0.0, ge=0, le=1)
    """0: every admission is one atomic check in Redis (exact across routers, one round trip
    per request, batched per event-loop turn). Above 0: each router decides from local
    counters and reconciles them with Redis this often, so a limit is exceeded by at most
    what the other routers admit in that time plus a round trip (``docs/access.md``)."""
    redis_key_prefix: str = Field("inferscale:", max_length=64)
    """Prefix of every key the router writes in Redis (several installations, one Redis)."""
    budgets_during_outage: Literal["local", "refuse"] = "local"
    """While Redis is down: ``local`` (default) counts budgets in each router from the
    shared figure it last read, so the budget is exceeded by at most what the other replicas
    admit meanwhile; ``refuse`` answers 503 to clients that have a budget until Redis is
    back."""
    usage_ledger: bool = True
    """Keep one usage record per request (client, team, route, model, served by, tokens, cost,
    latency, status; never the prompt): in Redis with ``redis_url``, else in this process."""
    usage_retention_days: float = Field(31.0, gt=0, le=3660)
    """Records older than this leave the Redis stream as new ones are written."""
    usage_max_records: int = Field(10_000_000, ge=1000)
    """Most records the Redis stream keeps (trimmed approximately as it grows)."""
    usage_ring_records: int = Field(50_000, ge=0)
    """Most records kept in this process without Redis (the oldest go first)."""
    usage_buffer_records: int = Field(100_000, ge=1)
    """Most records waiting for the next write to Redis; past it a record is dropped (and
    counted), so a Redis outage never grows the router's memory."""
    usage_flush_seconds: float = Field(0.5, gt=0, le=60)
    """How often records gathered are written to Redis (one round trip per batch)."""
    usage_report_max_records: int = Field(500_000, ge=1)
    """Most records one report of ``GET /admin/v1/usage`` reads, the newest (a longer history:
    ``inferscale usage --redis-url``, which reads and sums outside the router)."""
    access_log: bool = True
    """Write one JSON line per request to standard output (no prompt text, no credentials)."""
    drain_seconds: float = Field(0.0, ge=0)
    """On SIGTERM, keep serving this long with ``/readyz`` at 503, so load balancers drop the
    pod before it stops listening."""
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    """Then, how long in-flight requests get to finish."""
    uvloop: bool = True
    """Run on uvloop when it is installed (faster event loop)."""
