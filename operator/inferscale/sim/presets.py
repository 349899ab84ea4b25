"""Named engine presets: Llama-3.1-8B (BF16, vLLM V1) on one H100 and on one L4, and ``zero``.

Each figure is derived in ``docs/sim.md`` ("Presets") from the published measurements cited
there; the derivations are first-order (bandwidth- and FLOP-bound estimates checked against
benchmarks), not fits to a GPU trace. Override any field with a flag or an environment variable.
"""

from __future__ import annotations

from typing import Final, Literal

from inferscale.sim.model import EngineParams
from inferscale.sim.startup import STARTUP_PROFILES

PresetName = Literal["llama-3.1-8b-h100", "llama-3.1-8b-l4", "zero"]

PRESETS: Final[dict[str, EngineParams]] = {
    # H100 SXM: 3.35 TB/s, ~989 dense BF16 TFLOPS. 16 GB of weights read per step -> ~4.8 ms
    # floor; vLLM measures ~6.5 ms per step at batch 8 on the faster H200, so 6 ms here.
    # KV: 128 KiB per token; ~52 GB left after weights at 0.9 utilisation -> ~400k tokens.
    # vLLM V1 defaults max_num_seqs to 1024 on GPUs with >= 70 GiB.
    "llama-3.1-8b-h100": EngineParams(
        max_num_seqs=1024,
        kv_capacity_tokens=400_000,
        block_size=16,
        max_model_len=32_768,
        # The cold start from the network, from its phases (sim/startup.py): 60 s.
        startup_delay_seconds=STARTUP_PROFILES["llama-3.1-8b-h100"].cold_start_seconds(),
        step_base_seconds=0.006,
        prefill_overhead_seconds=0.002,
        prefill_seconds_per_token=0.00004,
        decode_seconds_per_seq=0.00002,
        decode_seconds_per_context_token=0.00000004,
        # Host tier off; when on, 128 KiB per token over PCIe Gen5 x16 (~64 GB/s one way).
        host_transfer_seconds_per_token=0.000002,
    ),
    # L4: 300 GB/s, ~121 dense BF16 TFLOPS, 24 GB. 16 GB of weights per step -> ~53 ms floor,
    # ~68 ms at the ~77 % of peak bandwidth vLLM reaches at batch 1 on an A100; ~4.5 GB left for
    # KV -> ~32k tokens; vLLM's default max_num_seqs below 70 GiB is 256. An estimate: no
    # published L4 run was found to check it against (docs/sim.md).
    "llama-3.1-8b-l4": EngineParams(
        max_num_seqs=256,
        kv_capacity_tokens=32_768,
        block_size=16,
        max_model_len=8_192,
        # From its phases (sim/startup.py): 90 s.
        startup_delay_seconds=STARTUP_PROFILES["llama-3.1-8b-l4"].cold_start_seconds(),
        step_base_seconds=0.068,
        prefill_overhead_seconds=0.005,
        prefill_seconds_per_token=0.00033,
        decode_seconds_per_seq=0.0001,
        decode_seconds_per_context_token=0.00000044,
        # Host tier off; when on, 128 KiB per token over PCIe Gen4 x16 (~32 GB/s one way).
        host_transfer_seconds_per_token=0.000004,
    ),
    # No latency at all: the sim as a fast fake for router benchmarks and functional tests.
    "zero": EngineParams(
        max_num_seqs=100_000,
        kv_capacity_tokens=100_000_000,
        block_size=16,
        max_model_len=131_072,
    ),
}


GPU_HOUR_PRICES: Final[dict[str, float]] = {
    # USD per accelerator-hour, on demand, approximate list prices of early 2026 (they move:
    # pass your own with ``inferscale whatif --gpu-hour-price``). H100 SXM 80 GB: the middle
    # of the specialised GPU clouds' range, about 2.49-3.99 (CoreWeave, Lambda, Crusoe,
    # RunPod); hyperscalers list more, about 3.50-5.00 and up.
    "llama-3.1-8b-h100": 3.00,
    # L4 24 GB: about 0.70-0.85 for a one-L4 instance on demand (GCP g2-standard-4, AWS
    # g6.xlarge), the instance's CPU and memory included.
    "llama-3.1-8b-l4": 0.80,
    # No accelerator: the fake costs nothing.
    "zero": 0.0,
}
"""List price per accelerator-hour of each preset's GPU (one GPU per replica)."""


def preset(name: str) -> EngineParams:
    """The named preset; ``KeyError`` lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
