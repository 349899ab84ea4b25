"""InferenceModel: one self-hosted model, served by replicas of an inference engine.

The operator turns it into a Deployment, a Service and a PodDisruptionBudget, scales the
replicas (or lets ``kubectl scale``, HPA or KEDA drive the ``scale`` subresource), and makes the
model routable under ``servedName``. Typed optimisation fields (quantisation, tensor parallelism,
prefix caching, speculative decoding, context length, KV-cache dtype) are mapped to each
engine's own flags by the operator; ``args`` carries everything else.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, field_validator

from inferscale.api.meta import (
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    CelRule,
    Condition,
    Resource,
    SecretKeyRef,
    nested,
)
from inferscale.api.v1alpha1.common import EnvVar, Quantity, Toleration

KIND: Final = "InferenceModel"
PLURAL = "inferencemodels"

Engine = Literal["vllm", "sglang", "tgi", "trtllm", "llamacpp", "sim"]
"""The inference engines the operator knows how to run (``llamacpp`` runs GGUF models on CPU;
``sim`` is inferscale's GPU-free stand-in)."""

ENGINES: tuple[Engine, ...] = ("vllm", "sglang", "tgi", "trtllm", "llamacpp", "sim")

MODEL_SOURCE_PATTERN = r"^(hf|s3|pvc)://[^\s]+$"
"""``hf://org/name``, ``s3://bucket/path`` or ``pvc://claim/path``."""

SERVED_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
"""What clients send as ``model``: letters, digits and ``. _ : / -``, at most 128 characters."""

MAX_ADAPTERS: Final = 64
"""Most LoRA adapters one InferenceModel lists."""

MAX_ADAPTER_RANK: Final = 512
"""Largest LoRA rank the engines accept (vLLM's largest ``--max-lora-rank``)."""


class Resources(ApiModel):
    """Compute resources of one replica."""

    gpus: int = Field(default=1, ge=0, le=64)
    """Number of GPUs per replica (a whole number). Tensor parallelism defaults to it."""

    gpu_resource_name: str = Field(default="nvidia.com/gpu", min_length=1, max_length=253)
    """Extended resource name that GPUs are requested under, for example ``amd.com/gpu``."""

    cpu: Quantity | None = None
    """CPU request and limit of the engine container, for example ``8`` or ``"7500m"``."""

    memory: Quantity | None = None
    """Memory request and limit of the engine container, for example ``64Gi``."""


class Scheduling(ApiModel):
    """Where replicas may run."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a replica's node must carry, for example a GPU product label."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the replicas tolerate."""

    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )
    """PriorityClass of the replicas' pods."""

    def pod_fields(self) -> dict[str, Any]:
        """The pod spec's scheduling fields, the same for replicas and the preload Job.

        So the Job downloads on a node where a replica may run (its cache may be node-local).
        """
        fields: dict[str, Any] = {}
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [t.to_wire() for t in self.tolerations]
        if self.priority_class_name:
            fields["priorityClassName"] = self.priority_class_name
        return fields


class SpeculativeDecoding(ApiModel):
    """Speculative decoding: a cheap proposer drafts tokens that the model verifies in one step."""

    __cel_rules__ = (
        CelRule(
            rule="self.method == 'ngram' || has(self.draftModel)",
            message="speculativeDecoding.draftModel is required unless method is ngram",
            check=lambda s: s.method == "ngram" or s.draft_model is not None,
            field_path=".draftModel",
        ),
    )

    method: Literal["draft", "ngram", "eagle", "eagle3"] = "draft"
    """How tokens are proposed: a smaller draft model, n-gram lookup in the prompt, or EAGLE
    heads."""

    draft_model: str | None = Field(default=None, min_length=1, max_length=512)
    """The draft or EAGLE model (a source URL or a hub name); not used by ngram."""

    num_speculative_tokens: int = Field(default=5, ge=1, le=32)
    """Tokens proposed per step."""


class KvCacheOffload(ApiModel):
    """A host-memory tier for the KV cache (per replica).

    Blocks the GPU cache evicts are kept in host RAM and loaded back over PCIe when a prompt
    needs them again, instead of being recomputed (about 20x cheaper per token for an 8B model
    on an H100; ``docs/sim.md``). vLLM: its native ``OffloadingConnector``; SGLang: its
    hierarchical cache. Other engines refuse it.
    """

    host_memory_gib: float = Field(gt=0, le=65536)
    """Host memory for the tier per replica, GiB (pinned; leave room for it in the pod's
    memory)."""

    kv_bytes_per_token: int | None = Field(default=None, ge=1, le=64 * 1024 * 1024)
    """KV bytes of one token: 2 x layers x KV heads x head dim x bytes per value (131072 for
    Llama-3.1-8B in BF16). vLLM 0.11 sizes its CPU tier in blocks, so it needs this."""


class Optimization(ApiModel):
    """Inference optimisations, mapped by the operator to the engine's own flags.

    An engine that cannot do what is asked gets a ``Ready=False`` condition saying so, rather than
    a flag it would reject at start-up.
    """

    quantization: Literal["fp8", "awq", "gptq", "bitsandbytes"] | None = None
    """Weight quantisation method; empty serves the checkpoint's own precision."""

    tensor_parallel_size: int | None = Field(default=None, ge=1, le=64)
    """GPUs one model copy is split over; defaults to ``resources.gpus``."""

    prefix_caching: bool | None = None
    """Reuse the KV cache of shared prompt prefixes; empty keeps the engine's default."""

    max_model_len: int | None = Field(default=None, ge=16, le=10_000_000)
    """Maximum context length in tokens (prompt plus output)."""

    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = None
    """Data type of the KV cache; fp8 roughly doubles its capacity."""

    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    """Fraction of GPU memory the engine may use for weights and KV cache."""

    speculative_decoding: SpeculativeDecoding | None = None
    """Speculative decoding settings; empty turns it off."""

    kv_cache_offload: KvCacheOffload | None = None
    """A host-memory KV tier; empty keeps the KV cache on the GPU only."""

    kv_cache_events: bool | None = None
    """Publish the engine's KV-cache events (vLLM ``--kv-events-config``: ZMQ PUB on port
    5557), so routers can index which prompt blocks each replica holds."""


class Autoscaling(ApiModel):
    """How the operator scales replicas between ``minReplicas`` and ``maxReplicas``.

    The signal is requests in flight (running plus waiting) per replica, read from the engines'
    metrics and the router's held requests, so users never write PromQL.
    """

    enabled: bool = True
    """Let inferscale's autoscaler set the replica count. When false, ``spec.replicas`` (and so
    ``kubectl scale``, HPA or KEDA through the scale subresource) sets it."""

    target_in_flight_per_replica: int = Field(default=16, ge=1, le=100_000)
    """Requests in flight (running plus waiting) that one replica should carry."""

    stable_window_seconds: int = Field(default=60, ge=5, le=3600)
    """Window over which load is averaged for ordinary decisions."""

    panic_window_seconds: int = Field(default=6, ge=1, le=600)
    """Short window that reacts to bursts (as Knative's panic mode)."""

    max_scale_up_step: int = Field(default=4, ge=1, le=1000)
    """Most replicas added in one decision."""

    scale_down_delay_seconds: int = Field(default=300, ge=0, le=86_400)
    """How long load must stay low before replicas are removed."""

    scale_to_zero_delay_seconds: int | None = Field(default=None, ge=0, le=604_800)
    """Idle time before the last replica is removed; needs ``minReplicas: 0``. Defaults to 600
    when ``minReplicas`` is 0."""

    kv_cache_saturation: float = Field(default=0.8, gt=0, le=1)
    """KV-cache use above which a replica counts as saturated, whatever its request count."""

    prompt_tokens_per_replica: int | None = Field(default=None, ge=1, le=100_000_000)
    """Prompt tokens waiting for a first token that one replica carries: its prefill within
    the TTFT SLO (2 s on an H100 at about 25,000 tokens/s, with 20 % headroom: 40,000). Set,
    the load is also counted in work, so long prompts want more replicas than short ones at
    the same target; it needs routers that report the tokens waiting, and falls back to
    requests in flight where none does."""

    preset: Literal["economy", "balanced", "latency"] = "balanced"
    """Named settings instead of tuning windows (docs/autoscaling.md, "Presets"):
    ``balanced`` keeps a learned floor at the 80th percentile of recent bursts' wants, or, with
    spillover priced, keeps only the replicas that spill at most 8 % of the load and lets
    shorter bursts spill; ``economy`` keeps no floor (bursts queue, or spill up to 40 %);
    ``latency`` keeps the 90th percentile standing and never trades replicas for spill."""

    learned_floor_percentile: int | None = Field(default=None, ge=1, le=100)
    """Keep standing the replicas that this percentile of recent bursts wanted (weighted by
    age, half-life one hour), so bursts that recur and are shorter than a cold start meet
    capacity. Unset: the preset's (80 for balanced, 90 for latency, none for economy)."""

    accelerator_hour_price: float | None = Field(default=None, gt=0, le=1_000_000)
    """Price of one accelerator (one GPU of ``resources``) for an hour, in the currency of the
    providers' prices, for example 3.00 for an on-demand H100; a replica costs it times
    ``resources.gpus`` (a replica without GPUs costs it once). With a route that spills this
    model to a priced provider, the balanced and economy presets weigh it against spilling
    (the cost-aware mode, docs/autoscaling.md); unset, they scale as without spillover and the
    CostAware condition says PriceMissing."""


class Serving(ApiModel):
    """Start-up, readiness and shutdown behaviour of the replicas."""

    startup_timeout_seconds: int = Field(default=1800, ge=10, le=86_400)
    """How long a replica may take to load the model before it is restarted."""

    termination_grace_period_seconds: int = Field(default=120, ge=0, le=3600)
    """How long a stopping replica may finish its in-flight requests and streams."""


HOST_PATH_PATTERN = r"^/[^\x00]*[^/\x00]$"
"""An absolute host path other than ``/`` itself."""


class ModelCache(ApiModel):
    """Where downloaded weights are kept between restarts, and whether they are fetched ahead.

    With ``preload``, a Job downloads the weights into the cache volume before the first replica
    starts; the replicas are held at zero until it succeeds, then mount the cache read-only and
    load from it instead of from the network (``docs/operator.md``, "Weight cache").
    """

    __cel_rules__ = (
        CelRule(
            rule="!has(self.pvcName) || !has(self.hostPath)",
            message="cache.pvcName and cache.hostPath are exclusive: name one volume",
            check=lambda c: c.pvc_name is None or c.host_path is None,
            field_path=".hostPath",
        ),
        CelRule(
            rule="!has(self.size) || (!has(self.pvcName) && !has(self.hostPath))",
            message="cache.size asks the operator for a claim of its own: leave out cache.pvcName "
            "and cache.hostPath",
            check=lambda c: c.size is None or (c.pvc_name is None and c.host_path is None),
            field_path=".size",
        ),
        CelRule(
            rule="!has(self.storageClassName) || has(self.size)",
            message="cache.storageClassName needs cache.size (the claim the operator creates)",
            check=lambda c: c.storage_class_name is None or c.size is not None,
            field_path=".storageClassName",
        ),
        CelRule(
            # The default ``{}`` is checked too, before defaulting: ``preload`` may be absent.
            rule="!has(self.preload) || !self.preload || has(self.pvcName) "
            "|| has(self.hostPath) || has(self.size)",
            message="cache.preload needs a shared volume: set cache.pvcName, cache.hostPath or "
            "cache.size (a per-pod emptyDir cannot be filled ahead)",
            check=lambda c: (
                not c.preload
                or c.pvc_name is not None
                or c.host_path is not None
                or c.size is not None
            ),
            field_path=".preload",
        ),
    )

    pvc_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """An existing PersistentVolumeClaim for the weights (its storage class and size are the
    claim's; ReadWriteMany or ReadOnlyMany when replicas spread over nodes); empty uses
    ``size``, ``hostPath`` or else a per-pod emptyDir."""

    host_path: str | None = Field(default=None, max_length=4096, pattern=HOST_PATH_PATTERN)
    """A directory on the node for the weights (single-node and local clusters; created when
    missing). Exclusive with ``pvcName``."""

    size: Quantity | None = None
    """Size of a PersistentVolumeClaim the operator creates for the cache (``<name>-weights``,
    deleted with the model), for example ``40Gi``. Exclusive with ``pvcName`` and
    ``hostPath``."""

    storage_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )
    """StorageClass of the claim the operator creates; empty uses the cluster's default."""

    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = "ReadWriteMany"
    """Access mode of the claim the operator creates: ReadWriteMany lets replicas on several
    nodes share it; ReadWriteOnce keeps them on the node that mounted it first."""

    size_limit: Quantity | None = None
    """Size limit of the emptyDir used when no PVC, host path or size is given."""

    preload: bool = False
    """Download the weights into the cache with a Job before the first replica starts (needs
    ``pvcName``, ``hostPath`` or ``size``). Status shows the ``Cached`` condition, the bytes
    and the time taken; replicas wait for it and mount the cache read-only."""


class EngineSecurity(ApiModel):
    """The user the engine runs as, and whether its root filesystem may be written."""

    run_as_user: int | None = Field(default=None, ge=1, le=2_147_483_647)
    """Run the engine as this non-root UID (and GID), with every capability dropped and the
    runtime's default seccomp profile. Unset: the operator's ``reconcile.engineRunAsUser``,
    else the image's own user (root in the official vLLM, SGLang, TGI, TensorRT-LLM and
    llama.cpp images; the sim runs as ``reconcile.runAsUser``, 1000)."""

    read_only_root_filesystem: bool | None = None
    """Mount the engine's root filesystem read-only; it then writes only to its volumes:
    ``/tmp``, a home directory (``HOME``: ``~/.cache``, ``~/.config``, ``~/.triton``), the
    model cache and ``/dev/shm``. Unset: the operator's
    ``reconcile.engineReadOnlyRootFilesystem``, else true for the sim only."""


class Adapter(ApiModel):
    """A LoRA adapter served on the base model's replicas under a name of its own.

    Clients send the adapter's name as ``model``. Each replica holds up to ``adapterSlots``
    adapters on its GPUs at once; a request for another one waits while it is swapped in.
    """

    name: str = Field(pattern=SERVED_NAME_PATTERN, max_length=128)
    """The name clients send as ``model`` to use this adapter; unique within the model and
    different from the base model's ``servedName``."""

    source: str = Field(min_length=6, max_length=1024, pattern=MODEL_SOURCE_PATTERN)
    """Where the adapter's weights come from: ``hf://org/name``, ``s3://bucket/path`` or
    ``pvc://claim/path``, as for ``model``."""

    rank: int | None = Field(default=None, ge=1, le=MAX_ADAPTER_RANK)
    """The adapter's LoRA rank (``r`` in its ``adapter_config.json``). The engine reserves GPU
    memory for the largest rank of the list; empty counts as 16."""


class InferenceModelSpec(ApiModel):
    """The desired state of a self-hosted model."""

    __cel_rules__ = (
        CelRule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
            field_path=".minReplicas",
        ),
        CelRule(
            rule="!has(self.replicas) || (self.replicas >= self.minReplicas "
            "&& self.replicas <= self.maxReplicas)",
            message="replicas must lie between minReplicas and maxReplicas",
            check=lambda s: s.replicas is None or s.min_replicas <= s.replicas <= s.max_replicas,
            field_path=".replicas",
        ),
        CelRule(
            rule="!has(self.autoscaling) || !has(self.autoscaling.scaleToZeroDelaySeconds) "
            "|| self.minReplicas == 0",
            message="autoscaling.scaleToZeroDelaySeconds needs minReplicas: 0",
            check=lambda s: (
                s.autoscaling.scale_to_zero_delay_seconds is None or s.min_replicas == 0
            ),
            field_path=".autoscaling.scaleToZeroDelaySeconds",
        ),
        CelRule(
            rule="!has(self.optimization) || !has(self.optimization.tensorParallelSize) "
            "|| self.resources.gpus == 0 || self.resources.gpus % "
            "self.optimization.tensorParallelSize == 0",
            message="optimization.tensorParallelSize must divide resources.gpus",
            check=lambda s: (
                s.optimization.tensor_parallel_size is None
                or s.resources.gpus == 0
                or s.resources.gpus % s.optimization.tensor_parallel_size == 0
            ),
            field_path=".optimization.tensorParallelSize",
        ),
        CelRule(
            rule="!has(self.cache) || !has(self.cache.preload) || !self.cache.preload "
            "|| self.engine == 'sim' || self.model.startsWith('hf://')",
            message="cache.preload downloads hf:// models (s3:// and pvc:// sources are not "
            "fetched ahead)",
            check=lambda s: not s.cache.preload or s.engine == "sim" or s.model.startswith("hf://"),
            field_path=".cache.preload",
        ),
        CelRule(
            rule="!has(self.servedName) || !has(self.adapters) "
            "|| self.adapters.all(a, a.name != self.servedName)",
            message="adapters[].name must differ from servedName",
            check=lambda s: s.served_name is None or s.served_name not in _adapter_names(s),
            field_path=".adapters",
        ),
    )

    model: str = Field(min_length=6, max_length=1024, pattern=MODEL_SOURCE_PATTERN)
    """Where the weights come from: ``hf://org/name``, ``s3://bucket/path`` or
    ``pvc://claim/path``."""

    served_name: str | None = Field(default=None, pattern=SERVED_NAME_PATTERN, max_length=128)
    """The name clients send as ``model``; defaults to the object's name."""

    engine: Engine
    """Inference engine: vllm, sglang, tgi, trtllm, llamacpp (llama.cpp's server, GGUF files,
    CPU or GPU), or sim (inferscale's GPU-free engine)."""

    image: str | None = Field(default=None, min_length=1, max_length=1024)
    """Container image; empty uses the operator's default image for the engine."""

    args: list[str] = Field(default_factory=list, max_length=256)
    """Extra engine arguments, appended after the ones the operator derives from this spec."""

    env: list[EnvVar] = Field(default_factory=list, max_length=256)
    """Extra environment variables of the engine container."""

    hf_token_secret_ref: SecretKeyRef | None = None
    """Secret key that holds a Hugging Face token, for gated ``hf://`` models."""

    resources: Resources = nested(Resources)
    """GPUs, CPU and memory of each replica."""

    scheduling: Scheduling = nested(Scheduling)
    """Node selector, tolerations and priority class of the replicas."""

    optimization: Optimization = nested(Optimization)
    """Quantisation, parallelism, caching and decoding settings."""

    cache: ModelCache = nested(ModelCache)
    """Where downloaded weights are kept."""

    security: EngineSecurity = nested(EngineSecurity)
    """The engine's user and root filesystem (docs/engines.md, "Engine pods")."""

    replicas: int | None = Field(default=None, ge=0, le=10_000)
    """Replica count when autoscaling is disabled; set by ``kubectl scale``, HPA or KEDA through
    the scale subresource. Defaults to ``minReplicas``."""

    min_replicas: int = Field(default=1, ge=0, le=10_000)
    """Fewest replicas; 0 allows scale to zero (requests are held while a replica starts)."""

    max_replicas: int = Field(default=4, ge=0, le=10_000)
    """Most replicas."""

    autoscaling: Autoscaling = nested(Autoscaling)
    """Autoscaling policy settings."""

    serving: Serving = nested(Serving)
    """Start-up and shutdown behaviour."""

    adapters: list[Adapter] = Field(
        default_factory=list,
        max_length=MAX_ADAPTERS,
        # A map-list keyed by name: the API server itself refuses two adapters with one name.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """LoRA adapters served on this model's replicas, each under its own name (vllm and sglang
    only; the sim imitates vLLM). The first adapter turns LoRA on in the engine, which restarts
    the replicas once."""

    adapter_slots: int = Field(default=4, ge=1, le=MAX_ADAPTERS)
    """Adapters one replica holds on its GPUs at once (vLLM ``--max-loras``, SGLang
    ``--max-loras-per-batch``); a request for another one waits while it is swapped in."""

    @field_validator("adapters")
    @classmethod
    def _unique_adapter_names(cls, adapters: list[Adapter]) -> list[Adapter]:
        names = [a.name for a in adapters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"adapters must have unique names (repeated: {', '.join(duplicates)})")
        return adapters


def _adapter_names(spec: InferenceModelSpec) -> set[str]:
    return {a.name for a in spec.adapters}


class ObservedSignals(ApiModel):
    """The load signals behind the last autoscaling decision."""

    in_flight: float | None = Field(default=None, ge=0)
    """Requests running plus waiting across all replicas."""

    waiting: float | None = Field(default=None, ge=0)
    """Requests queued inside the engines."""

    held: int | None = Field(default=None, ge=0)
    """Requests held by the routers while no replica is ready."""

    kv_cache_usage: float | None = Field(default=None, ge=0)
    """Mean KV-cache use of the ready replicas, from 0 to 1."""

    observed_at: str | None = None
    """When the signals were read (RFC 3339)."""


AdapterPhase = Literal["Loaded", "Loading", "Pending", "Failed"]
"""Where an adapter stands: on every ready replica, on some, on none yet, or refused."""

MAX_REPLICAS_LISTED: Final = 1000
"""Most pod names one adapter's status lists (the count stays exact beyond it)."""


class AdapterStatus(ApiModel):
    """One adapter of ``spec.adapters`` as the operator last saw it on the replicas."""

    name: str = Field(pattern=SERVED_NAME_PATTERN, max_length=128)
    """The adapter's name (``spec.adapters[].name``)."""

    phase: AdapterPhase
    """Loaded (on every ready replica), Loading (on some), Pending (no ready replica yet) or
    Failed (its source is refused, or the last load failed on every replica that lacks it)."""

    loaded_replicas: int = Field(default=0, ge=0)
    """Ready replicas that serve the adapter."""

    ready_replicas: int = Field(default=0, ge=0)
    """Ready replicas in all (the N of "loaded on M of N")."""

    loaded_on: list[str] = Field(default_factory=list, max_length=MAX_REPLICAS_LISTED)
    """The pods that serve it, sorted: the routers prefer these for the adapter's requests."""

    message: str | None = Field(default=None, max_length=1024)
    """The last error (an engine's refusal, an unreachable replica, a refused source)."""


class CacheStatus(ApiModel):
    """The weight cache as the last preload Job left it (``spec.cache.preload``)."""

    job: str | None = Field(default=None, max_length=253)
    """The preload Job's name."""

    bytes: int | None = Field(default=None, ge=0)
    """Bytes of weights the Job put in the cache, as it reported them."""

    seconds: float | None = Field(default=None, ge=0)
    """How long the Job took, from its start to its completion."""

    completed_at: str | None = None
    """When the Job finished (RFC 3339)."""


class InferenceModelStatus(ApiModel):
    """The observed state of a self-hosted model, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""

    replicas: int | None = Field(default=None, ge=0)
    """Replicas that exist (the scale subresource's ``status.replicas``)."""

    ready_replicas: int | None = Field(default=None, ge=0)
    """Replicas that pass their readiness probe."""

    desired_replicas: int | None = Field(default=None, ge=0)
    """Replicas the operator currently wants."""

    selector: str | None = None
    """Label selector of the replicas' pods, for the scale subresource (HPA, KEDA)."""

    served_name: str | None = None
    """The name under which the model is routable."""

    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready, Progressing and Degraded, with reasons a person understands; ScalingActive says
    whether the autoscaler can see the load (False: it holds the replica count, and why);
    Cached, with ``cache.preload``, whether the weights are in the cache (False: the replicas
    wait, and why); CostAware whether the autoscaler weighs replicas against spilling to a
    hosted provider (False: the ordinary policy runs, and why: no spillover, a price missing or
    out of range); ScalingLimited whether a floor keeps replicas standing above
    ``max(minReplicas, 1)`` after a burst (True: the floor, how it is learned and when it
    would fall)."""

    last_scale_time: str | None = None
    """When the replica count last changed (RFC 3339)."""

    last_scale_reason: str | None = Field(default=None, max_length=1024)
    """Why, in words: for example ``scaled 2 -> 5: 78 in flight, target 16 per replica``."""

    signals: ObservedSignals | None = None
    """The signals behind the last decision."""

    time_to_ready_seconds: float | None = Field(default=None, ge=0)
    """How long the last replica took from creation to Ready."""

    learned_floor: int | None = Field(default=None, ge=0)
    """Replicas the autoscaler keeps standing whatever the load wants: the learned floor of
    the balanced and latency presets, or the cost-aware mode's spill-budget count (0: none).
    Scale-downs stop there; the ScalingLimited condition says why, and when it would fall."""

    autoscaler_state: str | None = Field(default=None, max_length=65_536)
    """The autoscaler's memory (its windows' load samples, when load last fell, when it last
    scaled), kept here so an operator restart keeps its windows. Written by the operator."""

    adapters: list[AdapterStatus] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """Each LoRA adapter of ``spec.adapters``: on how many ready replicas it is loaded, and
    the last error. The AdaptersReady condition sums them up."""

    cache: CacheStatus | None = None
    """The preloaded weight cache: the Job, bytes and time taken. The Cached condition says
    whether the replicas may start."""


class InferenceModel(Resource[InferenceModelSpec, InferenceModelStatus]):
    """A whole InferenceModel object, as ``kubectl apply`` sends it."""

    kind: Literal["InferenceModel"] = KIND
    """Kind."""
