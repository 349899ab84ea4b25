"""``OperatorSettings``: the operator's defaults, read once at start-up and passed explicitly.

Settings come from ``INFERSCALE_*`` environment variables (nested groups with ``__``, for example
``INFERSCALE_RECONCILE__PRE_STOP_SECONDS=10``), then from the defaults below. Only ``cli`` and
``controller`` build an :class:`OperatorSettings`; everything below them receives the group it
needs (the pure builders in :mod:`inferscale.reconcile` take a :class:`ReconcileSettings`, which
:mod:`inferscale.reconcile.settings` defines so that they need not import this loader) and
never reads ``os.environ`` itself.

The ``routing`` group is named so (not ``router``) because the router process has settings of its
own under ``INFERSCALE_ROUTER_*``; ``INFERSCALE_ROUTING__*`` is how the operator reaches routers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferscale.autoscaler.pricebook import PRICE_KEY_PATTERN, PriceBook, price_key_problem
from inferscale.autoscaler.spillcost import MAX_PRICE_PER_HOUR
from inferscale.reconcile.settings import ReconcileSettings

AcceleratorHourPrice = Annotated[float, Field(gt=0, le=MAX_PRICE_PER_HOUR, allow_inf_nan=False)]
"""One accelerator for an hour: the API's bounds on ``acceleratorHourPrice``, and finite."""

DEFAULT_ROUTER_NAMESPACE = "inferscale-system"
"""Where routers live when neither ``routing.namespace`` nor ``POD_NAMESPACE`` says."""


class RoutingSettings(BaseModel):
    """How the operator programs the routers: where they are, how it authenticates, what it keeps.

    Every router pod in ``namespace`` carrying ``router_labels`` gets each new routing table by
    ``PUT http://POD_IP:admin_port/admin/v1/routing-table`` with the token from the Secret; the
    last table is also kept in a ConfigMap that routers mount, so a router that starts while the
    operator is down still serves. The RBAC in ``config/rbac/operator.yaml`` names the default
    Secret: change both together.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Compile and publish routing tables. Default true; false for clusters without our router."""

    namespace: str | None = Field(default=None, min_length=1, max_length=63)
    """Namespace of the router pods, their admin-token Secret and the table's ConfigMap. Default:
    the operator's own namespace (``POD_NAMESPACE``), else ``inferscale-system``. The operator
    must watch it (``--namespace`` includes it, or watch every namespace)."""

    router_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "inferscale-router"}, min_length=1
    )
    """Labels that mark a pod as a router (all must match). Default
    ``app.kubernetes.io/name: inferscale-router``, as in ``config/router/``."""

    admin_port: int = Field(default=8080, ge=1, le=65535)
    """Port of the routers' admin API (the router's ``--port``). Default 8080."""

    admin_token_secret: str = Field(default="inferscale-router-admin", min_length=1)
    """Secret holding the routers' admin token (the same one the routers mount). Default
    ``inferscale-router-admin``."""

    admin_token_key: str = Field(default="token", min_length=1)
    """Key of the token in that Secret. Default ``token``."""

    configmap_name: str = Field(default="inferscale-routing-table", min_length=1)
    """ConfigMap that keeps the last table for starting routers. Default
    ``inferscale-routing-table``."""

    configmap_key: str = Field(default="routing-table.json", min_length=1)
    """Key of the table (JSON) in the ConfigMap. Default ``routing-table.json``."""

    coalesce_seconds: float = Field(default=0.1, ge=0, le=5)
    """Changes within this long of the first one make one table. Default 0.1 s: a pod is
    routable within a push of turning Ready, and a rollout's burst of events is one push."""

    push_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    """Time limit of one push to one router, connect included. Default 2 s."""

    retry_initial_seconds: float = Field(default=0.2, gt=0, le=60)
    """First wait before a failed push is retried; each failure in a row doubles it. Default
    0.2 s."""

    retry_max_seconds: float = Field(default=10.0, gt=0, le=600)
    """Longest wait between retries of a failed push (or a failed ConfigMap write). Default
    10 s."""

    resync_seconds: float = Field(default=60.0, gt=0, le=86_400)
    """Every router is sent the current table again this often, and the token re-read, so a
    router that lost its table or a rotated token heals without an event. Default 60 s."""

    configmap_interval_seconds: float = Field(default=1.0, ge=0, le=600)
    """Least time between two ConfigMap writes; pushes are never delayed by it. Default 1 s:
    a burst of pod changes writes the (large) ConfigMap once, not per change."""

    status_interval_seconds: float = Field(default=5.0, ge=0.5, le=3600)
    """How often the operator reads every router's spend (``GET /admin/v1/spend``), sends
    each router what the others spent (so spend caps hold across routers), and refreshes the
    InferenceRoutes' and InferenceProviders' status and the InferenceClients' usage against
    their budgets (``GET /admin/v1/budgets``). Default 5 s."""

    spilling_window_seconds: float = Field(default=30.0, gt=0, le=3600)
    """A route's ``status.spilling`` is true while a request spilled over this recently.
    Default 30 s."""

    provider_health_window_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """A provider whose last call failed this recently is ``Degraded`` (and so are its
    routes). Default 300 s."""


class AutoscalerSettings(BaseModel):
    """Where the autoscaler reads load, and how often it decides (``INFERSCALE_AUTOSCALER__*``).

    Every ``interval_seconds`` the operator reads the engines' requests in flight and KV-cache
    use from Prometheus (one query for every model, built from the engines' own metric names)
    and the requests the routers hold or have in flight (the fast path, no scrape delay), then
    asks the policy (:mod:`inferscale.autoscaler.policy`) for each model with
    ``spec.autoscaling.enabled``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Run the autoscaler. Default true; false leaves every replica count to ``spec.replicas``
    (``kubectl scale``, HPA, KEDA)."""

    prometheus_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """Base URL of the Prometheus that scrapes the engine pods, for example
    ``http://prometheus-operated.monitoring:9090``. Default none: the autoscaler uses only the
    routers' counts (engines' queues and KV-cache use are then unknown)."""

    interval_seconds: float = Field(default=2.0, ge=0.5, le=300)
    """Time between two decisions. Default 2 s (with a 2 s scrape, a step up is seen in ~4 s)."""

    from_zero_poll_seconds: float = Field(default=0.25, ge=0.05, le=60)
    """Between decisions, how often the routers are asked whether a model at zero replicas
    holds a request; one that does is decided at once. Default 0.25 s: scale from zero should
    not wait for the next round (one GET per router, and only while some model is at zero)."""

    query_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    """Time limit of one Prometheus query and of one router poll. Default 3 s."""

    stale_after_seconds: float = Field(default=30.0, ge=1, le=3600)
    """A signal older than this is stale and the decision holds. Default 30 s."""

    model_label: str = Field(default="inferscale_io_model", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    """Prometheus label that carries the pod's ``inferscale.io/model`` label. Default
    ``inferscale_io_model``: what Kubernetes service discovery's ``labelmap`` (and the local
    cluster) make of it."""

    namespace_label: str = Field(default="namespace", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    """Prometheus label that carries the pod's namespace. Default ``namespace``."""

    status_interval_seconds: float = Field(default=15.0, ge=1, le=3600)
    """Least time between two status writes of a model whose replica count did not change
    (signals, the windows kept across restarts). Default 15 s: at a thousand models a write
    per decision would be 500 writes a second."""

    accelerator_hour_prices: dict[str, AcceleratorHourPrice] = Field(
        default_factory=dict,
        max_length=256,
        json_schema_extra={"propertyNames": {"pattern": PRICE_KEY_PATTERN}},
    )
    """Price of one accelerator for an hour, in the currency of the providers' prices, for
    every InferenceModel that does not set ``spec.autoscaling.acceleratorHourPrice`` (the
    cost-aware mode's replica-hour price, docs/autoscaling.md). Keys: a node label
    ``key=value`` that the model's ``scheduling.nodeSelector`` asks for (the accelerator type,
    ``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3: 3.0``), or the resource its GPUs are
    requested under (``resources.gpuResourceName``, ``amd.com/gpu: 2.5``); a label wins over a
    resource name, and of several labels the lowest price. Each price is more than 0 and at
    most 1,000,000. Default none."""

    default_accelerator_hour_price: AcceleratorHourPrice | None = None
    """Price of one accelerator for an hour where neither the model nor
    ``acceleratorHourPrices`` prices it (models with GPUs only). Default none: such models
    run without the cost-aware mode, and their ``CostAware`` condition says ``PriceMissing``."""

    @field_validator("accelerator_hour_prices")
    @classmethod
    def _price_keys(cls, prices: dict[str, float]) -> dict[str, float]:
        problems = [p for p in map(price_key_problem, prices) if p is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return prices

    def price_book(self) -> PriceBook:
        """The accelerator prices as the pure pricing reads them."""
        return PriceBook(dict(self.accelerator_hour_prices), self.default_accelerator_hour_price)


class AccessSettings(BaseModel):
    """The routers' credentials: provider API keys and client keys (``docs/access.md``).

    The operator reads the Secrets that InferenceProviders and InferenceClients reference,
    writes the compiled credentials (client keys as SHA-256 digests only) to a Secret in the
    routers' namespace that routers mount, and pushes them to every router with the admin token,
    as it pushes routing tables (``routing`` settings: ports, retries, resync).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Compile and publish credentials. Default true."""

    require_client_key: Literal["auto", "always", "never"] = "auto"
    """When routers require a client key: ``auto`` (default) while any InferenceClient exists
    in the namespaces the operator watches, ``always`` (also with no client: the routers then
    refuse every request), or ``never`` (keys still select limits, but anonymous requests pass).
    """

    credentials_secret: str = Field(default="inferscale-router-credentials", min_length=1)
    """Secret in the routers' namespace that keeps the compiled credentials for routers that
    start. Default ``inferscale-router-credentials``; the RBAC in ``config/rbac/operator.yaml``
    names it: change both together."""

    credentials_key: str = Field(default="credentials.json", min_length=1)
    """Key of the credentials (JSON) in that Secret. Default ``credentials.json``."""

    status_concurrency: int = Field(default=8, ge=1, le=64)
    """Most InferenceClient status writes and Secret reads in flight at once. Default 8."""


class OperatorSettings(BaseSettings):
    """Every setting of the operator process, grouped as kopf groups its own."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSCALE_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
        populate_by_name=True,
    )

    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    """Defaults of the Deployments, Services and PodDisruptionBudgets built per model."""

    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    """How routers are programmed (``INFERSCALE_ROUTING__*``)."""

    autoscaler: AutoscalerSettings = Field(default_factory=AutoscalerSettings)
    """Where load is read and how often replicas are decided (``INFERSCALE_AUTOSCALER__*``)."""

    access: AccessSettings = Field(default_factory=AccessSettings)
    """The routers' credentials: provider keys and client keys (``INFERSCALE_ACCESS__*``)."""

    pod_namespace: str | None = Field(default=None, validation_alias="POD_NAMESPACE")
    """The operator's own namespace, from ``POD_NAMESPACE`` (the downward API) when it runs as
    a pod; routers are looked for there unless ``routing.namespace`` says otherwise."""

    @property
    def router_namespace(self) -> str:
        """Where the routers, their Secret and the table's ConfigMap are."""
        return self.routing.namespace or self.pod_namespace or DEFAULT_ROUTER_NAMESPACE
