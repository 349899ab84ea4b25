"""What each inference engine needs to run: image, command, flags, ports, paths (pure).

One :class:`EngineProfile` per engine in :data:`ENGINES`, and one flag mapper per engine that
turns the typed fields of ``spec.optimization`` into that engine's own flags, following each
engine's documentation:

- vLLM: ``vllm serve`` (``--tensor-parallel-size``, ``--quantization``,
  ``--[no-]enable-prefix-caching``, ``--max-model-len``, ``--kv-cache-dtype``,
  ``--gpu-memory-utilization``, ``--speculative-config`` JSON).
- SGLang: ``python3 -m sglang.launch_server`` (``--tp-size``, ``--dp-size``, ``--quantization``,
  ``--disable-radix-cache``, ``--context-length``, ``--kv-cache-dtype``,
  ``--mem-fraction-static``, ``--speculative-algorithm``); metrics need ``--enable-metrics``.
- TGI: ``text-generation-launcher`` (``--num-shard``, ``--quantize``, ``--max-total-tokens``,
  ``--kv-cache-dtype fp8_e4m3fn|fp8_e5m2``, ``--cuda-memory-fraction``, ``--speculate``);
  prefix caching is the ``PREFIX_CACHING`` environment variable, and TGI has no served-name flag
  (it answers whatever ``model`` a request names).
- TensorRT-LLM: ``trtllm-serve`` (``--tp_size``, ``--max_seq_len``,
  ``--kv_cache_free_gpu_memory_fraction``); KV-cache and speculative settings only exist in the
  ``--extra_llm_api_options`` YAML file, which a small shell wrapper writes from an environment
  variable before ``exec``-ing the server.
- llama.cpp: ``llama-server`` (``--model`` a GGUF file or ``--hf-repo org/repo[:quant]``,
  ``--alias``, ``--ctx-size``, ``--parallel``, ``--threads``, ``--n-gpu-layers``,
  ``--[no-]cache-prompt``, ``--cache-type-k/-v``); ``--metrics`` turns ``/metrics`` on and
  ``/health`` answers 200 once the model is loaded. Its context is shared by its slots, so the
  context size is ``maxModelLen`` times the slots, which each get ``maxModelLen`` tokens.
- sim: ``inferscale sim`` (``--model`` is the served name, ``--port``, ``--max-model-len``,
  ``--shutdown-grace-seconds``). GPU-only knobs are accepted and ignored, so a manifest can be
  tried on the sim before it meets a GPU.

LoRA adapters (``spec.adapters``) only switch LoRA on and size it: vLLM ``--enable-lora
--max-loras --max-lora-rank`` with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, SGLang ``--enable-lora
--max-loras-per-batch --max-lora-rank --lora-target-modules all``, the sim ``--enable-lora
--max-loras``. The adapters themselves are loaded at run time through the engines'
``load_lora_adapter`` endpoints, never listed in the args (``--lora-modules``,
``--lora-paths``), so adding or removing one changes no pod template and restarts no replica.
TGI and TensorRT-LLM are refused.

An engine that cannot do what the spec asks raises :class:`UnsupportedSpec` (a
:class:`~inferscale.errors.SpecError`) naming every problem at once, instead of building a pod
that would crash-loop on a flag the engine rejects. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from inferscale import __version__
from inferscale.api.v1alpha1.inference_model import Engine, InferenceModelSpec, SpeculativeDecoding
from inferscale.errors import SpecError
from inferscale.protocol.kvevents import DEFAULT_PORT as KV_EVENTS_PORT
from inferscale.protocol.kvevents import DEFAULT_TOPIC, KvEventsConfig

MODEL_SOURCE_MOUNT: Final = "/mnt/model-source"
"""Where a ``pvc://claim/path`` model's claim is mounted (read-only)."""

MODEL_CACHE_MOUNT: Final = "/models"
"""Where the model-cache volume (PVC or emptyDir) is mounted; ``HF_HOME`` points into it."""

HF_HOME: Final = f"{MODEL_CACHE_MOUNT}/huggingface"

TRTLLM_OPTIONS_ENV: Final = "INFERSCALE_TRTLLM_OPTIONS"
TRTLLM_OPTIONS_FILE: Final = "/tmp/extra-llm-api-options.yaml"
# JSON is YAML, so the options travel as one environment variable and need no ConfigMap child.
_TRTLLM_WRAPPER: Final = (
    f'printf "%s" "${TRTLLM_OPTIONS_ENV}" > {TRTLLM_OPTIONS_FILE} && exec trtllm-serve "$@"'
)


class UnsupportedSpec(SpecError):
    """The engine cannot do what the spec asks; ``problems`` lists each thing, in words."""

    def __init__(self, engine: str, problems: list[str]) -> None:
        super().__init__(f"engine {engine} cannot serve this spec: " + "; ".join(problems))
        self.engine = engine
        self.problems = problems


@dataclass(frozen=True)
class EngineCommand:
    """The container's command, args and engine-specific environment."""

    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelSource:
    """Where the engine loads weights from, after ``hf://`` / ``s3://`` / ``pvc://`` resolution."""

    scheme: str
    """``hf``, ``s3`` or ``pvc``."""
    path: str
    """What the engine is given: a hub id, an ``s3://`` URL or a path under the mount."""
    claim: str | None = None
    """The PVC to mount read-only at :data:`MODEL_SOURCE_MOUNT` (``pvc://`` only)."""


@dataclass(frozen=True)
class Layout:
    """How a replica's GPUs are used: one model copy over ``tp`` GPUs, ``dp`` copies per pod."""

    gpus: int
    tp: int
    dp: int


@dataclass
class _Flags:
    """Accumulates one engine's args, env and problems while the mapper runs."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, *items: object) -> None:
        self.args.extend(str(i) for i in items)


@dataclass(frozen=True)
class AdapterEndpoints:
    """An engine's HTTP paths that load and unload a LoRA adapter at run time.

    Both take JSON: ``{"lora_name", "lora_path"}`` to load, ``{"lora_name"}`` to unload (vLLM's
    ``LoadLoRAAdapterRequest``, SGLang's ``LoadLoRAAdapterReqInput``).
    """

    load: str
    unload: str


VLLM_ADAPTER_ENDPOINTS: Final = AdapterEndpoints("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
SGLANG_ADAPTER_ENDPOINTS: Final = AdapterEndpoints("/load_lora_adapter", "/unload_lora_adapter")


@dataclass(frozen=True)
class EngineProfile:
    """Everything the builders need to know about one engine."""

    name: Engine
    default_image: str
    port: int
    """Port the engine listens on; serving, health and metrics share it."""
    health_path: str
    """HTTP path of the startup, readiness and liveness probes (200 once the model is loaded)."""
    metrics_path: str
    """Prometheus text-format path, advertised through ``prometheus.io/path``."""
    needs_shm: bool
    """Mount a memory-backed ``/dev/shm``: NCCL and the engines' worker IPC use it, and the
    container runtime's 64 MiB default breaks tensor parallelism."""
    needs_weights: bool
    """Loads real weights: gets the model-cache volume, ``HF_HOME`` and the HF token."""
    non_root: bool
    """The image runs as a non-root user; the vendor GPU images run as root and write caches
    under ``/root``, so they keep their user and only lose privilege escalation."""
    model_sources: frozenset[str]
    """Model source schemes the engine can load from."""
    flags: Callable[[InferenceModelSpec, ModelSource, str, Layout, _Flags], None] = field(
        repr=False, compare=False
    )
    """Writes the engine's args (model, served name, optimisations) into ``_Flags``."""
    base_command: tuple[str, ...] = ()
    read_only_root: bool = False
    """The engine writes nothing outside its volumes and ``/tmp`` (an emptyDir), so its root
    filesystem is mounted read-only; the vendor images write caches under ``/root``."""
    adapter_endpoints: AdapterEndpoints | None = None
    """Where LoRA adapters are loaded and unloaded at run time; None: the engine serves none."""

    @property
    def serves_adapters(self) -> bool:
        """Whether ``spec.adapters`` can be served by this engine."""
        return self.adapter_endpoints is not None


# --- flag mappers ---------------------------------------------------------------------------

DEFAULT_ADAPTER_RANK: Final = 16
"""Rank assumed for an adapter that states none (vLLM's default ``--max-lora-rank``)."""

VLLM_LORA_RANKS: Final = (8, 16, 32, 64, 128, 256, 320, 512)
"""The ``--max-lora-rank`` values vLLM accepts (``vllm/config/lora.py``)."""

VLLM_RUNTIME_LORA_ENV: Final = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
"""Without it vLLM has no ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``."""


def max_adapter_rank(spec: InferenceModelSpec) -> int:
    """The largest adapter rank, rounded up to a rank vLLM accepts (SGLang takes any)."""
    largest = max((a.rank or DEFAULT_ADAPTER_RANK for a in spec.adapters), default=0)
    return next(r for r in VLLM_LORA_RANKS if r >= largest)


def _vllm_adapters(spec: InferenceModelSpec, lay: Layout, o: _Flags) -> None:
    if lay.dp > 1:
        # vLLM 0.11's metrics logger raises NotImplementedError for LoRA with data parallelism.
        o.problems.append(
            f"vLLM serves LoRA adapters with one model copy per pod only, so "
            f"optimization.tensorParallelSize ({lay.tp}) must equal resources.gpus ({lay.gpus})"
        )
    o.add("--enable-lora", "--max-loras", spec.adapter_slots)
    o.add("--max-lora-rank", max_adapter_rank(spec))
    o.env[VLLM_RUNTIME_LORA_ENV] = "True"


def _sglang_adapters(spec: InferenceModelSpec, o: _Flags) -> None:
    # With no --lora-paths, SGLang needs the rank and the target modules up front; "all" covers
    # any adapter loaded later, at the cost of buffers for modules an adapter may not touch.
    o.add("--enable-lora", "--max-loras-per-batch", spec.adapter_slots)
    o.add("--max-lora-rank", max_adapter_rank(spec), "--lora-target-modules", "all")


def _draft_model(spec: SpeculativeDecoding, out: _Flags) -> str | None:
    """The draft model as a hub id; other sources would need their own volume."""
    draft = spec.draft_model
    if draft is None:
        return None
    if draft.startswith(("s3://", "pvc://")):
        out.problems.append(
            "speculativeDecoding.draftModel must be a hub name or an hf:// URL "
            f"(got {draft.split('://', 1)[0]}://)"
        )
        return None
    return draft.removeprefix("hf://")


def _vllm(spec: InferenceModelSpec, src: ModelSource, served: str, lay: Layout, o: _Flags) -> None:
    opt = spec.optimization
    o.add(src.path, "--served-model-name", served, "--host", "0.0.0.0", "--port", VLLM.port)
    if src.scheme == "s3":
        # vLLM streams safetensors straight from object storage with the Run:ai streamer.
        o.add("--load-format", "runai_streamer")
    if lay.tp > 1:
        o.add("--tensor-parallel-size", lay.tp)
    if lay.dp > 1:
        o.add("--data-parallel-size", lay.dp)
    if opt.quantization:
        o.add("--quantization", opt.quantization)
    if opt.prefix_caching is not None:
        o.add("--enable-prefix-caching" if opt.prefix_caching else "--no-enable-prefix-caching")
    if opt.max_model_len is not None:
        o.add("--max-model-len", opt.max_model_len)
    if opt.kv_cache_dtype not in (None, "auto"):
        o.add("--kv-cache-dtype", opt.kv_cache_dtype)
    if opt.gpu_memory_utilization is not None:
        o.add("--gpu-memory-utilization", opt.gpu_memory_utilization)
    sd = opt.speculative_decoding
    if sd is not None:
        config: dict[str, Any] = {"num_speculative_tokens": sd.num_speculative_tokens}
        if sd.method != "draft":
            # A draft model is vLLM's default method when "model" is set, so only name others.
            config["method"] = sd.method
        draft = _draft_model(sd, o)
        if draft is not None:
            config["model"] = draft
        o.add("--speculative-config", json.dumps(config, sort_keys=True, separators=(",", ":")))
    if spec.adapters:
        _vllm_adapters(spec, lay, o)


_SGLANG_KV_DTYPE: Final = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}
_SGLANG_SPEC_ALGORITHM: Final = {
    "draft": "STANDALONE",
    "ngram": "NGRAM",
    "eagle": "EAGLE",
    "eagle3": "EAGLE3",
}


def _sglang(
    spec: InferenceModelSpec, src: ModelSource, served: str, lay: Layout, o: _Flags
) -> None:
    opt = spec.optimization
    o.add("--model-path", src.path, "--served-model-name", served)
    o.add("--host", "0.0.0.0", "--port", SGLANG.port, "--enable-metrics")
    if lay.tp > 1:
        o.add("--tp-size", lay.tp)
    if lay.dp > 1:
        o.add("--dp-size", lay.dp)
    if opt.quantization:
        o.add("--quantization", opt.quantization)
    # RadixAttention prefix caching is on by default; it can only be switched off.
    if opt.prefix_caching is False:
        o.add("--disable-radix-cache")
    if opt.max_model_len is not None:
        o.add("--context-length", opt.max_model_len)
    if opt.kv_cache_dtype not in (None, "auto"):
        # SGLang spells the e4m3 format out; vLLM's plain "fp8" means the same e4m3.
        o.add("--kv-cache-dtype", _SGLANG_KV_DTYPE[opt.kv_cache_dtype])
    if opt.gpu_memory_utilization is not None:
        o.add("--mem-fraction-static", opt.gpu_memory_utilization)
    sd = opt.speculative_decoding
    if sd is not None:
        n = sd.num_speculative_tokens
        o.add("--speculative-algorithm", _SGLANG_SPEC_ALGORITHM[sd.method])
        draft = _draft_model(sd, o)
        if draft is not None:
            o.add("--speculative-draft-model-path", draft)
        if sd.method == "ngram":
            o.add("--speculative-num-draft-tokens", n)
        else:
            # A chain (top-k 1) of n steps verifies n drafted tokens plus the bonus one.
            o.add("--speculative-num-steps", n, "--speculative-eagle-topk", 1)
            o.add("--speculative-num-draft-tokens", n + 1)
    if spec.adapters:
        _sglang_adapters(spec, o)


_TGI_KV_DTYPE: Final = {"fp8": "fp8_e4m3fn", "fp8_e4m3": "fp8_e4m3fn", "fp8_e5m2": "fp8_e5m2"}


def _tgi(spec: InferenceModelSpec, src: ModelSource, served: str, lay: Layout, o: _Flags) -> None:
    del served  # TGI has no served-name flag; the router names the model to clients.
    opt = spec.optimization
    o.add("--model-id", src.path, "--hostname", "0.0.0.0", "--port", TGI.port)
    o.add("--huggingface-hub-cache", f"{HF_HOME}/hub")
    if lay.dp > 1:
        o.problems.append(
            f"TGI runs one model copy per pod, so optimization.tensorParallelSize ({lay.tp}) "
            f"must equal resources.gpus ({lay.gpus})"
        )
    if lay.tp > 1:
        o.add("--num-shard", lay.tp)
    if opt.quantization:
        o.add("--quantize", opt.quantization)
    if opt.prefix_caching is not None:
        o.env["PREFIX_CACHING"] = "1" if opt.prefix_caching else "0"
    if opt.max_model_len is not None:
        # TGI refuses max-input-tokens >= max-total-tokens, and its default input limit can
        # exceed a smaller total, so both are set.
        o.add("--max-input-tokens", opt.max_model_len - 1, "--max-total-tokens", opt.max_model_len)
    if opt.kv_cache_dtype not in (None, "auto"):
        o.add("--kv-cache-dtype", _TGI_KV_DTYPE[opt.kv_cache_dtype])
    if opt.gpu_memory_utilization is not None:
        o.add("--cuda-memory-fraction", opt.gpu_memory_utilization)
    sd = opt.speculative_decoding
    if sd is not None:
        if sd.method == "ngram":
            o.add("--speculate", sd.num_speculative_tokens)
        else:
            o.problems.append(
                f"TGI has no {sd.method} speculative decoding (only ngram, or Medusa heads "
                "built into the checkpoint)"
            )


_TRTLLM_SPEC: Final = {"draft": "DraftTarget", "ngram": "NGram", "eagle3": "Eagle3"}


def _trtllm(
    spec: InferenceModelSpec, src: ModelSource, served: str, lay: Layout, o: _Flags
) -> None:
    opt = spec.optimization
    o.add(src.path, "--served_model_name", served, "--host", "0.0.0.0", "--port", TRTLLM.port)
    o.add("--backend", "pytorch")
    if lay.dp > 1:
        o.problems.append(
            f"trtllm-serve runs one model copy per pod, so optimization.tensorParallelSize "
            f"({lay.tp}) must equal resources.gpus ({lay.gpus})"
        )
    if lay.tp > 1:
        o.add("--tp_size", lay.tp)
    if opt.quantization:
        o.problems.append(
            "trtllm-serve has no runtime quantisation: serve a checkpoint quantised with "
            "TensorRT Model Optimizer and leave optimization.quantization empty"
        )
    if opt.max_model_len is not None:
        o.add("--max_seq_len", opt.max_model_len)
    if opt.gpu_memory_utilization is not None:
        # The closest knob: the share of memory left after the weights that the KV cache takes.
        o.add("--kv_cache_free_gpu_memory_fraction", opt.gpu_memory_utilization)
    options: dict[str, Any] = {}
    kv: dict[str, Any] = {}
    if opt.prefix_caching is not None:
        kv["enable_block_reuse"] = opt.prefix_caching
    if opt.kv_cache_dtype == "fp8_e5m2":
        o.problems.append("TensorRT-LLM's fp8 KV cache is e4m3; fp8_e5m2 is not available")
    elif opt.kv_cache_dtype in ("fp8", "fp8_e4m3"):
        kv["dtype"] = "fp8"
    if kv:
        options["kv_cache_config"] = kv
    sd = opt.speculative_decoding
    if sd is not None:
        if sd.method not in _TRTLLM_SPEC:
            o.problems.append(
                "TensorRT-LLM's PyTorch backend has no eagle (EAGLE-1/2) speculative "
                "decoding; use eagle3, draft or ngram"
            )
        else:
            spec_config: dict[str, Any] = {
                "decoding_type": _TRTLLM_SPEC[sd.method],
                "max_draft_len": sd.num_speculative_tokens,
            }
            draft = _draft_model(sd, o)
            if draft is not None:
                spec_config["speculative_model"] = draft
            options["speculative_config"] = spec_config
            if sd.method == "draft":
                # Draft/target decoding does not run with the overlap scheduler.
                options["disable_overlap_scheduler"] = True
    if options:
        o.add("--extra_llm_api_options", TRTLLM_OPTIONS_FILE)
        o.env[TRTLLM_OPTIONS_ENV] = json.dumps(options, sort_keys=True, separators=(",", ":"))


LLAMACPP_CACHE: Final = f"{MODEL_CACHE_MOUNT}/llama.cpp"
"""Where ``llama-server --hf-repo`` keeps the GGUF files it downloads (``LLAMA_CACHE``)."""

# llama.cpp's KV cache types closest to the API's: it has no fp8, only integer quantisations.
_LLAMACPP_UNSUPPORTED_KV: Final = ("fp8", "fp8_e4m3", "fp8_e5m2")


def whole_cpus(quantity: int | str | None) -> int | None:
    """Whole CPUs in a CPU quantity (``2``, ``"1500m"``, ``"2.5"``), at least 1; None if unset.

    A quantity written with another suffix (``"1k"``) gives None: the engine keeps its default.
    """
    if quantity is None:
        return None
    text = str(quantity).strip()
    scale = Decimal(1)
    if text.endswith("m"):
        text, scale = text[:-1], Decimal("0.001")
    try:
        cpus = Decimal(text) * scale
    except InvalidOperation:
        return None
    if not cpus.is_finite():
        return None
    return max(int(cpus), 1)


def _llamacpp(
    spec: InferenceModelSpec, src: ModelSource, served: str, lay: Layout, o: _Flags
) -> None:
    opt = spec.optimization
    if src.scheme == "hf":
        # llama-server downloads the repo's GGUF (``org/repo:Q4_K_M`` picks a quantisation).
        o.add("--hf-repo", src.path)
        o.env["LLAMA_CACHE"] = LLAMACPP_CACHE
    else:
        o.add("--model", src.path)
    o.add("--alias", served, "--host", "0.0.0.0", "--port", LLAMACPP.port)
    o.add("--metrics", "--no-webui")
    # One slot per request the autoscaler aims to put on a replica: at its target a replica
    # decodes them all at once, and what it defers beyond that is load to scale on.
    slots = spec.autoscaling.target_in_flight_per_replica
    o.add("--parallel", slots)
    if opt.max_model_len is not None:
        o.add("--ctx-size", opt.max_model_len * slots)
    threads = whole_cpus(spec.resources.cpu)
    if threads is not None:
        # Without it llama.cpp starts a thread per core of the node, not of the container.
        o.add("--threads", threads)
    if lay.dp > 1:
        o.problems.append(
            f"llama-server runs one model copy per pod, so optimization.tensorParallelSize "
            f"({lay.tp}) must equal resources.gpus ({lay.gpus})"
        )
    if lay.gpus > 0:
        # Every layer on the GPUs (a GPU image such as server-cuda; the CPU image ignores it).
        o.add("--n-gpu-layers", 999)
    if opt.quantization:
        o.problems.append(
            "a GGUF file carries its own quantisation: pick it in the model source "
            "(hf://org/repo:Q4_K_M) and leave optimization.quantization empty"
        )
    if opt.prefix_caching is not None:
        o.add("--cache-prompt" if opt.prefix_caching else "--no-cache-prompt")
    if opt.kv_cache_dtype in _LLAMACPP_UNSUPPORTED_KV:
        o.problems.append(
            "llama.cpp has no fp8 KV cache; pass --cache-type-k/--cache-type-v q8_0 in args"
        )
    if opt.gpu_memory_utilization is not None:
        o.problems.append(
            "llama.cpp has no GPU memory fraction; its memory follows --ctx-size and the "
            "layers offloaded"
        )
    if opt.speculative_decoding is not None:
        o.problems.append(
            f"{opt.speculative_decoding.method} speculative decoding is not mapped for "
            "llama.cpp; pass its --model-draft and --draft-max flags in args"
        )


def _sim(spec: InferenceModelSpec, src: ModelSource, served: str, lay: Layout, o: _Flags) -> None:
    del src, lay  # The sim loads no real weights and uses no GPU.
    o.add("--model", served, "--port", SIM.port)
    if spec.cache.preload:
        # Its start-up reads the cache's manifest: a filled cache is a load from disk.
        o.add("--weights-cache", MODEL_CACHE_MOUNT)
    o.add("--shutdown-grace-seconds", spec.serving.termination_grace_period_seconds)
    if spec.optimization.max_model_len is not None:
        o.add("--max-model-len", spec.optimization.max_model_len)
    if spec.adapters:
        o.add("--enable-lora", "--max-loras", spec.adapter_slots)


# --- the table ------------------------------------------------------------------------------

# The engine releases the default images run, and the ones `make engine-check` parses every
# generated command line with (their own argument parsers, docs/engines.md): one place for both.
VLLM_VERSION: Final = "0.11.0"
SGLANG_VERSION: Final = "0.5.4"

VLLM: Final = EngineProfile(
    name="vllm",
    default_image=f"vllm/vllm-openai:v{VLLM_VERSION}",
    base_command=("vllm", "serve"),
    port=8000,
    health_path="/health",
    metrics_path="/metrics",
    needs_shm=True,
    needs_weights=True,
    non_root=False,
    model_sources=frozenset({"hf", "s3", "pvc"}),
    flags=_vllm,
    adapter_endpoints=VLLM_ADAPTER_ENDPOINTS,
)
SGLANG: Final = EngineProfile(
    name="sglang",
    default_image=f"lmsysorg/sglang:v{SGLANG_VERSION}",
    base_command=("python3", "-m", "sglang.launch_server"),
    port=30000,
    health_path="/health",
    metrics_path="/metrics",
    needs_shm=True,
    needs_weights=True,
    non_root=False,
    model_sources=frozenset({"hf", "pvc"}),
    flags=_sglang,
    adapter_endpoints=SGLANG_ADAPTER_ENDPOINTS,
)
TGI: Final = EngineProfile(
    name="tgi",
    default_image="ghcr.io/huggingface/text-generation-inference:3.3.6",
    base_command=("text-generation-launcher",),
    # The image listens on 80 by default; a high port keeps the option of dropping root.
    port=8080,
    health_path="/health",
    metrics_path="/metrics",
    needs_shm=True,
    needs_weights=True,
    non_root=False,
    model_sources=frozenset({"hf", "pvc"}),
    flags=_tgi,
)
TRTLLM: Final = EngineProfile(
    name="trtllm",
    default_image="nvcr.io/nvidia/tensorrt-llm/release:1.1.0",
    base_command=("trtllm-serve",),
    port=8000,
    health_path="/health",
    # trtllm-serve's /metrics is JSON iteration stats; the Prometheus text lives here.
    metrics_path="/prometheus/metrics",
    needs_shm=True,
    needs_weights=True,
    non_root=False,
    model_sources=frozenset({"hf", "pvc"}),
    flags=_trtllm,
)
LLAMACPP: Final = EngineProfile(
    name="llamacpp",
    # The llama.cpp project's CPU server image; its ENTRYPOINT is /app/llama-server.
    default_image="ghcr.io/ggml-org/llama.cpp:server-b11206",
    base_command=("/app/llama-server",),
    port=8080,
    health_path="/health",
    metrics_path="/metrics",
    needs_shm=False,
    needs_weights=True,
    non_root=False,
    model_sources=frozenset({"hf", "pvc"}),
    flags=_llamacpp,
)
SIM: Final = EngineProfile(
    name="sim",
    default_image=f"ghcr.io/inferscale/sim:{__version__}",
    base_command=("inferscale", "sim"),
    port=8000,
    health_path="/health",
    metrics_path="/metrics",
    needs_shm=False,
    needs_weights=False,
    non_root=True,
    model_sources=frozenset({"hf", "s3", "pvc"}),
    flags=_sim,
    read_only_root=True,
    # The sim imitates vLLM's endpoints.
    adapter_endpoints=VLLM_ADAPTER_ENDPOINTS,
)

ENGINES: Final[Mapping[Engine, EngineProfile]] = {
    p.name: p for p in (VLLM, SGLANG, TGI, TRTLLM, LLAMACPP, SIM)
}
"""Every engine's profile, by the name ``spec.engine`` uses."""


# --- entry points ---------------------------------------------------------------------------


def parse_model_source(model: str) -> ModelSource:
    """``hf://org/name`` -> hub id; ``s3://...`` kept whole; ``pvc://claim/path`` -> mount path.

    Raises:
        SpecError: a source the API pattern lets through but that names nothing.
    """
    scheme, _, rest = model.partition("://")
    rest = rest.strip("/")
    if not rest:
        raise SpecError(f"model {model!r} names no model after {scheme}://")
    if scheme == "hf":
        return ModelSource("hf", rest)
    if scheme == "s3":
        return ModelSource("s3", model)
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        path = f"{MODEL_SOURCE_MOUNT}/{sub}" if sub else MODEL_SOURCE_MOUNT
        return ModelSource("pvc", path, claim=claim)
    raise SpecError(f"model {model!r}: unknown source scheme {scheme}://")


def _check_adapters(
    spec: InferenceModelSpec, profile: EngineProfile, served_name: str, out: _Flags
) -> None:
    if not spec.adapters:
        return
    if not profile.serves_adapters:
        out.problems.append(
            f"{profile.name} cannot serve LoRA adapters (spec.adapters); use vllm or sglang"
        )
    if served_name in {a.name for a in spec.adapters}:
        # The API rule only sees an explicit servedName; the object's name is checked here.
        out.problems.append(
            f"adapter {served_name!r} has the model's own served name; rename the adapter"
        )


KV_EVENTS_ENGINES: Final = ("vllm", "sim")
KV_OFFLOAD_ENGINES: Final = ("vllm", "sglang", "sim")
KV_EVENTS_CONFIG: Final = KvEventsConfig(True, f"tcp://*:{KV_EVENTS_PORT}", DEFAULT_TOPIC)
"""vLLM's ``--kv-events-config``: bind a PUB socket on every interface (the router connects)."""
VLLM_BLOCK_TOKENS: Final = 16
"""vLLM's default KV block size, the unit of its CPU tier's ``num_cpu_blocks``."""
SIM_KV_BYTES_PER_TOKEN: Final = 131_072
"""The sim's presets model Llama-3.1-8B in BF16."""


def _kv_cache(spec: InferenceModelSpec, o: _Flags) -> None:
    """``optimization.kvCacheEvents`` and ``kvCacheOffload``, or why the engine cannot."""
    opt = spec.optimization
    if opt.kv_cache_events:
        if spec.engine in KV_EVENTS_ENGINES:
            o.add("--kv-events-config", KV_EVENTS_CONFIG.to_json())
        else:
            o.problems.append(
                f"optimization.kvCacheEvents: {spec.engine} publishes no KV-cache events "
                f"(supported: {', '.join(KV_EVENTS_ENGINES)})"
            )
    off = opt.kv_cache_offload
    if off is None:
        return
    if spec.engine not in KV_OFFLOAD_ENGINES:
        o.problems.append(
            f"optimization.kvCacheOffload: {spec.engine} has no host-memory KV tier "
            f"(supported: {', '.join(KV_OFFLOAD_ENGINES)})"
        )
        return
    host_bytes = off.host_memory_gib * 2**30
    if spec.engine == "sglang":
        # The hierarchical cache sizes its host pool in GB per rank.
        o.add("--enable-hierarchical-cache", "--hicache-size", max(1, round(off.host_memory_gib)))
        return
    per_token = off.kv_bytes_per_token
    if spec.engine == "sim":
        tokens = int(host_bytes // (per_token or SIM_KV_BYTES_PER_TOKEN))
        o.add("--host-kv-capacity-tokens", tokens)
        return
    if per_token is None:
        o.problems.append(
            "optimization.kvCacheOffload.kvBytesPerToken is required for vLLM, which sizes its "
            "CPU tier in blocks (2 x layers x KV heads x head dim x bytes per value; 131072 for "
            "Llama-3.1-8B in BF16)"
        )
        return
    blocks = int(host_bytes // (per_token * VLLM_BLOCK_TOKENS))
    config = {
        "kv_connector": "OffloadingConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"num_cpu_blocks": max(blocks, 1)},
    }
    o.add("--kv-transfer-config", json.dumps(config, sort_keys=True, separators=(",", ":")))


def layout(spec: InferenceModelSpec) -> Layout:
    """Tensor parallelism defaults to the GPU count; GPUs left over hold more model copies."""
    gpus = spec.resources.gpus
    tp = spec.optimization.tensor_parallel_size or max(gpus, 1)
    dp = gpus // tp if gpus >= tp else 1
    return Layout(gpus=gpus, tp=tp, dp=dp)


def engine_command(spec: InferenceModelSpec, served_name: str) -> EngineCommand:
    """The container command, args and env of ``spec.engine`` for this spec.

    ``spec.args`` come last, so a flag given there overrides the derived one for engines whose
    parsers keep the last value (vLLM, SGLang, the sim).

    Raises:
        UnsupportedSpec: the engine cannot do something the spec asks; every problem is named.
        SpecError: the model source names nothing.
    """
    profile = ENGINES[spec.engine]
    source = parse_model_source(spec.model)
    out = _Flags()
    if source.scheme not in profile.model_sources:
        out.problems.append(
            f"{spec.engine} cannot load {source.scheme}:// models; copy the weights into a "
            "PersistentVolumeClaim and use pvc://claim/path"
        )
    _check_adapters(spec, profile, served_name, out)
    profile.flags(spec, source, served_name, layout(spec), out)
    _kv_cache(spec, out)
    if out.problems:
        raise UnsupportedSpec(spec.engine, out.problems)
    command = profile.base_command
    if TRTLLM_OPTIONS_ENV in out.env:
        # "$@" hands the args to trtllm-serve unchanged, so spec.args still append as usual.
        command = ("/bin/sh", "-c", _TRTLLM_WRAPPER, "trtllm-serve")
    return EngineCommand(
        command=command,
        args=(*out.args, *spec.args),
        env=tuple(out.env.items()),
    )


def check_spec(spec: InferenceModelSpec, served_name: str) -> list[str]:
    """Every reason ``spec.engine`` cannot serve ``spec``; empty when it can."""
    try:
        engine_command(spec, served_name)
    except UnsupportedSpec as error:
        return list(error.problems)
    except SpecError as error:
        return [str(error)]
    return []
