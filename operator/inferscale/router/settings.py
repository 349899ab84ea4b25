"""``RouterSettings``: every setting of one router process, read once (flags and env).

Built by ``cli/router.py`` (flags over ``INFERSCALE_ROUTER_*`` over the defaults) and passed to
``create_app``; nothing below the CLI reads the environment. Route-level behaviour (strategy,
retries, timeouts, hold queue) comes from the routing table, not from here.
"""

from __future__ import annotations

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
    """Longest a client may take to send its body; slower ones get 408."""
    connect_timeout_seconds: float = Field(3.0, gt=0)
    """Longest wait to connect to an engine (a connect error is retried elsewhere)."""
    upstream_connections: int = Field(4096, ge=1)
    """Most pooled connections to the engines, all together."""
    breaker_failures: int = Field(3, ge=1)
    """Consecutive failures that eject an endpoint (circuit breaker)."""
    breaker_ejection_seconds: float = Field(5.0, gt=0)
    """First ejection; each ejection in a row doubles it."""
    breaker_max_ejection_seconds: float = Field(60.0, gt=0)
    """Longest ejection."""
    keepalive_seconds: float = Field(5.0, gt=0)
    """Interval of SSE comment keep-alives sent to held streaming clients."""
    scrape_interval_seconds: float = Field(0.0, ge=0)
    """How often engines' ``/metrics`` are read for queue and KV-cache use (0: never; the
    pickers then balance on the router's own in-flight counts)."""
    access_log: bool = True
    """Write one JSON line per request to standard output (no prompt text, no credentials)."""
    drain_seconds: float = Field(0.0, ge=0)
    """On SIGTERM, keep serving this long with ``/readyz`` at 503, so load balancers drop the
    pod before it stops listening."""
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    """Then, how long in-flight requests get to finish."""
    uvloop: bool = True
    """Run on uvloop when it is installed (faster event loop)."""
