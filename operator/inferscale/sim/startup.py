"""The sim's start-up in phases: image pull, weight load (from a cache or the network), warm-up.

A real engine's cold start is mostly moving weights: a replica that finds them on a local cache
reads them at disk speed, one that does not first downloads them from the hub. Each preset has a
:class:`StartupProfile` (derived in ``docs/sim.md``, "Start-up phases"): the weights' size, the
network and disk bandwidths, the image pull and the warm-up (engine init, memory profiling, CUDA
graph capture). :func:`plan_startup` turns it into phase times for a weight source.

The preset's ``startup_delay_seconds`` is the cold start from the network, derived from its
profile here (:meth:`StartupProfile.cold_start_seconds`); the phases are scaled so their
network total equals the configured delay, so ``--startup-delay-seconds 6`` (a test's short start)
keeps the preset's proportions and a filled cache still saves the download's share.

The weight cache is a directory (``--weights-cache``) holding :data:`MANIFEST` once a preload
filled it (``inferscale sim --preload``, the operator's preload Job): it names the served model,
the preset and the bytes. A missing, unreadable or foreign manifest means "from the network".
Pure: ``sim/weights.py`` reads and fills the directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

WeightSource = Literal["cache", "network"]


@dataclass(frozen=True)
class StartupProfile:
    """What a cold start spends its time on, for one preset's model and machine."""

    weights_bytes: int
    """Bytes of weights (BF16 safetensors)."""
    network_bytes_per_second: float
    """Download rate from the model hub."""
    disk_bytes_per_second: float
    """Read rate of the cache volume into GPU memory (safetensors load)."""
    image_pull_seconds: float
    """Pulling the engine image on a node that lacks it (0: cached on the node)."""
    warmup_seconds: float
    """Engine init, memory profiling and CUDA graph capture, after the weights are in."""

    def raw(self, source: WeightSource) -> tuple[tuple[str, float], ...]:
        """The phases in seconds, unscaled: the download joins the load when from the network."""
        load = self.weights_bytes / self.disk_bytes_per_second if self.weights_bytes else 0.0
        if source == "network" and self.weights_bytes:
            load += self.weights_bytes / self.network_bytes_per_second
        return (
            ("image_pull", self.image_pull_seconds),
            ("weight_load", load),
            ("warmup", self.warmup_seconds),
        )

    def total(self, source: WeightSource) -> float:
        """Seconds from pod start to ready, unscaled."""
        return sum(seconds for _, seconds in self.raw(source))

    def cold_start_seconds(self) -> float:
        """The preset's ``startup_delay_seconds``: the network total in whole seconds.

        The presets (``sim/presets.py``) take their cold start from here, so the two figures
        cannot drift apart; whole seconds because the phases' rates are round estimates
        (docs/sim.md quotes 60 s and 90 s), not measurements to the tenth.
        """
        return float(round(self.total("network")))

    def download_seconds(self) -> float:
        """The network's share of the weight load: what a preload spends, unscaled."""
        return self.weights_bytes / self.network_bytes_per_second if self.weights_bytes else 0.0


LLAMA_8B_BF16_BYTES: Final = 16_060_000_000
"""Llama-3.1-8B: 8.03 B parameters x 2 bytes."""

STARTUP_PROFILES: Final[dict[str, StartupProfile]] = {
    # 16.06 GB from the hub at ~500 MB/s (32 s), then read from local NVMe at ~2 GB/s (8 s);
    # vLLM's init, profiling and graph capture ~20 s; the image is on the node. 60 s in all.
    "llama-3.1-8b-h100": StartupProfile(
        weights_bytes=LLAMA_8B_BF16_BYTES,
        network_bytes_per_second=500e6,
        disk_bytes_per_second=2e9,
        image_pull_seconds=0.0,
        warmup_seconds=20.0,
    ),
    # The same download; a network disk at ~1 GB/s (16 s); a slower GPU's warm-up, 42 s. 90 s.
    "llama-3.1-8b-l4": StartupProfile(
        weights_bytes=LLAMA_8B_BF16_BYTES,
        network_bytes_per_second=500e6,
        disk_bytes_per_second=1e9,
        image_pull_seconds=0.0,
        warmup_seconds=42.0,
    ),
    "zero": StartupProfile(
        weights_bytes=0,
        network_bytes_per_second=1.0,
        disk_bytes_per_second=1.0,
        image_pull_seconds=0.0,
        warmup_seconds=0.0,
    ),
}
"""Each preset's start-up (``docs/sim.md``, "Start-up phases")."""


@dataclass(frozen=True)
class StartupPlan:
    """One start-up's phases, scaled to the configured cold start."""

    source: WeightSource
    phases: tuple[tuple[str, float], ...]
    """(name, seconds) in order: ``image_pull``, ``weight_load``, ``warmup``."""
    scale: float
    """Seconds of this start per second of the profile's (the cold start / the profile's)."""

    @property
    def total(self) -> float:
        """Seconds from process start to ready."""
        return sum(seconds for _, seconds in self.phases)

    def describe(self) -> str:
        """One log line: each phase and the total."""
        parts = ", ".join(f"{name.replace('_', ' ')} {s:.1f} s" for name, s in self.phases)
        return f"start-up with weights from the {self.source}: {parts}; ready in {self.total:.1f} s"


def plan_startup(
    profile: StartupProfile, network_total_seconds: float, source: WeightSource
) -> StartupPlan:
    """The phases of a start whose cold start from the network takes ``network_total_seconds``."""
    full = profile.total("network")
    scale = network_total_seconds / full if full > 0 else 0.0
    phases = tuple((name, seconds * scale) for name, seconds in profile.raw(source))
    if full <= 0:
        # A profile with no phases (the zero preset) still honours a configured delay.
        phases = (("image_pull", 0.0), ("weight_load", 0.0), ("warmup", network_total_seconds))
    return StartupPlan(source=source, phases=phases, scale=scale)


def profile_for(preset: str) -> StartupProfile:
    """The preset's start-up profile (a preset without one starts in its warm-up alone)."""
    return STARTUP_PROFILES.get(preset, STARTUP_PROFILES["zero"])


# --- what a filled cache says ---------------------------------------------------------------

MANIFEST: Final = "inferscale-sim/manifest.json"
"""Where in the cache directory a filled cache says what it holds."""


@dataclass(frozen=True)
class Manifest:
    """What a filled cache says it holds."""

    model: str
    preset: str
    bytes: int

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps({"model": self.model, "preset": self.preset, "bytes": self.bytes})


def parse_manifest(text: str) -> Manifest | None:
    """The manifest in ``text``, or ``None`` when it is not one."""
    try:
        data = json.loads(text)
        manifest = Manifest(str(data["model"]), str(data["preset"]), int(data["bytes"]))
    except (ValueError, KeyError, TypeError):
        return None
    return manifest if manifest.bytes >= 0 else None


def weight_source(manifest: Manifest | None, model: str, preset: str) -> WeightSource:
    """``cache`` when the cache holds this model of this preset, else ``network``."""
    if manifest is not None and manifest.model == model and manifest.preset == preset:
        return "cache"
    return "network"
