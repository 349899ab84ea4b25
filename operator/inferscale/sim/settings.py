"""``SimSettings``: every setting of the sim server, read once (flags and ``INFERSCALE_SIM_*``).

Built by ``cli/sim.py`` and passed to ``create_app``; nothing below the CLI reads the
environment. Engine parameters start from a preset and are overridden field by field through
``engine`` (``INFERSCALE_SIM_ENGINE__MAX_NUM_SEQS=8`` or ``--max-num-seqs 8``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferscale.protocol.kvevents import KvEventsConfig
from inferscale.sim.model import EngineParams
from inferscale.sim.presets import PresetName, preset
from inferscale.sim.startup import (
    Manifest,
    StartupPlan,
    WeightSource,
    plan_startup,
    profile_for,
    weight_source,
)

MetricsDialect = Literal["vllm", "sglang", "tgi"]


class FailureSettings(BaseModel):
    """Failures the server injects on purpose (latency spikes and slow start are engine knobs)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    error_rate: float = Field(0.0, ge=0, le=1)
    """Fraction of inference requests answered with ``error_status`` instead of a result."""
    error_status: int = Field(500, ge=400, le=599)
    """HTTP status of an injected error."""
    crash_after_requests: int | None = Field(None, ge=0)
    """Exit the process abruptly when inference request number N+1 arrives."""
    hang_after_requests: int | None = Field(None, ge=0)
    """From inference request N+1 on, never answer anything again (``/health`` included)."""


class SimSettings(BaseSettings):
    """Settings of one sim server process."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSCALE_SIM_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    host: str = "0.0.0.0"
    """Address to bind; all interfaces by default, because the sim runs as a pod."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (vLLM's default 8000; 0 picks a free one)."""
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    """Served model name: the only accepted ``model`` and the ``model_name`` metric label."""
    preset: PresetName = "llama-3.1-8b-h100"
    """Engine preset the ``engine`` overrides apply to."""
    engine: dict[str, int | float] = Field(default_factory=dict)
    """Per-field overrides of the preset's ``EngineParams``."""
    failures: FailureSettings = Field(default_factory=FailureSettings)
    """Failure injection."""
    metrics_dialect: MetricsDialect = "vllm"
    """Whose metric names ``/metrics`` speaks."""
    seed: int = 0
    """Seed of the output text, the injected failures and the latency spikes."""
    default_max_tokens: int = Field(16, ge=1)
    """Output length when a request sets no ``max_tokens``."""
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    embedding_dimensions: int = Field(256, ge=1, le=8192)
    """Length of the vectors ``/v1/embeddings`` returns."""
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish."""
    enable_lora: bool = False
    """Serve LoRA adapters (vLLM ``--enable-lora``): the load and unload endpoints and the
    ``vllm:lora_requests_info`` metric exist only then."""
    lora_modules: list[str] = Field(default_factory=list, max_length=1024)
    """Adapters loaded at start, as ``NAME=PATH`` (vLLM ``--lora-modules``)."""
    lora_load_seconds: float = Field(0.0, ge=0, le=3600)
    """How long ``/v1/load_lora_adapter`` takes (reading the adapter's weights)."""
    weights_cache: str | None = Field(None, min_length=1, max_length=4096)
    """The weight cache directory: a start finds the preset's weights there when a preload
    filled it, and skips the download (``docs/sim.md``, "Start-up phases")."""
    preload: bool = False
    """Fill ``weights_cache`` (the download at the preset's network rate) and exit, instead of
    serving: what the operator's preload Job runs."""
    preload_report: str | None = Field(None, min_length=1, max_length=4096)
    """With ``preload``: a file to write ``{"bytes": N}`` to (the Job's termination message)."""
    kv_events_config: str | None = None
    """vLLM's ``--kv-events-config`` JSON: with ``enable_kv_cache_events``, publish the KV
    cache's events on a ZMQ PUB socket at ``endpoint`` (``docs/sim.md``)."""

    @field_validator("kv_events_config")
    @classmethod
    def _kv_events_parse(cls, text: str | None) -> str | None:
        if text is not None:
            KvEventsConfig.from_json(text)  # its ValueError names what is wrong
        return text

    def kv_events(self) -> KvEventsConfig | None:
        """The parsed ``kv_events_config``, if given."""
        return (
            None
            if self.kv_events_config is None
            else KvEventsConfig.from_json(self.kv_events_config)
        )

    @field_validator("lora_modules")
    @classmethod
    def _name_equals_path(cls, modules: list[str]) -> list[str]:
        names = [m.partition("=")[0] for m in modules]
        for module, name in zip(modules, names, strict=True):
            if not name or not module.partition("=")[2]:
                raise ValueError(f"lora module {module!r} is not NAME=PATH")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"lora modules repeat a name: {', '.join(repeated)}")
        return modules

    @model_validator(mode="after")
    def _preload_needs_a_cache(self) -> SimSettings:
        if self.preload and self.weights_cache is None:
            raise ValueError("preload needs weights_cache (the directory to fill)")
        return self

    @model_validator(mode="after")
    def _lora_modules_need_lora(self) -> SimSettings:
        if self.lora_modules and not self.enable_lora:
            raise ValueError("lora_modules needs enable_lora")
        if self.model in self.adapters():
            raise ValueError(f"lora module {self.model!r} has the served model's name")
        return self

    def adapters(self) -> dict[str, str]:
        """The start-up adapters, name to path."""
        return dict(m.split("=", 1) for m in self.lora_modules)

    def engine_params(self) -> EngineParams:
        """The preset with the overrides applied, validated."""
        base = preset(self.preset).model_dump()
        return EngineParams.model_validate({**base, **self.engine})

    def startup_plan(self, manifest: Manifest | None = None) -> StartupPlan:
        """This start's phases: from the cache when ``manifest`` names this model and preset.

        ``startup_delay_seconds`` is the cold start from the network; the phases keep the
        preset's proportions within it.
        """
        source: WeightSource = "network"
        if self.weights_cache is not None:
            source = weight_source(manifest, self.model, self.preset)
        total = self.engine_params().startup_delay_seconds
        return plan_startup(profile_for(self.preset), total, source)
