"""The simulated inference engine: a GPU-free, vLLM-compatible stand-in with a latency model.

- ``model``: the pure, clock-free replica model (also the what-if simulator's replica);
- ``presets``, ``stats``, ``tokens``: its parameters, counters and token approximation;
- ``driver``, ``server``, ``openai``, ``metrics``, ``settings``: the real-time HTTP server.

Importing this package has no side effects.
"""

from inferscale.sim.model import CPU, GPU, EngineParams, KvEvent, LatencyModel, Seq, SeqState
from inferscale.sim.presets import PRESETS

__all__ = ["CPU", "GPU", "PRESETS", "EngineParams", "KvEvent", "LatencyModel", "Seq", "SeqState"]
