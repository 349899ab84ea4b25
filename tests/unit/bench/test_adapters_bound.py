"""bench/routing/adapters.py's best case: Belady's fewest swaps, by hand and against runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from inferscale.sim.presets import preset

ROUTING = Path(__file__).resolve().parents[3] / "bench" / "routing"
sys.path.append(str(ROUTING))  # adapters.py imports its sibling virtual.py by name
spec = importlib.util.spec_from_file_location("bench_routing_adapters", ROUTING / "adapters.py")
assert spec is not None and spec.loader is not None
adapters = importlib.util.module_from_spec(spec)
sys.modules["bench_routing_adapters"] = adapters
spec.loader.exec_module(adapters)


def test_fewest_swaps_evicts_the_adapter_needed_furthest_ahead():
    # 2 slots, a b c a b: c evicts b (needed at 4, after a at 3), so a hits: 4 swaps (LRU: 5).
    assert adapters.fewest_swaps(["a", "b", "c", "a", "b"], 2) == 4
    assert adapters.fewest_swaps(["a", "b", "a", "b"], 2) == 2  # first loads count, as the sim's
    assert adapters.fewest_swaps([], 4) == 0
    assert adapters.fewest_swaps(["a", "b", "c"], 8) == 3


def test_fewest_swaps_is_below_every_picker_in_the_sim():
    params = preset("llama-3.1-8b-h100").model_copy(
        update={"max_loras": 2, "lora_swap_seconds": 0.02, "startup_delay_seconds": 0.0}
    )
    requests = adapters.workload(300, 10.0, 8, 1.1, 1, 200, 20)
    best = adapters.fewest_swaps([r.adapter for r in requests], 2 * params.max_loras)
    assert best >= 8  # every adapter is loaded at least once
    for picker in ("leastInFlight", "adapterHash", "adapterAffinity"):
        assert int(adapters.run(picker, requests, params, 2, 1.25)["swaps"]) >= best


def test_ttft_growth_compares_the_last_quarter_of_arrivals_with_the_first():
    assert adapters.ttft_growth([1.0] * 8) == 1.0  # keeping up
    assert adapters.ttft_growth([1.0, 1.0, 2.0, 3.0, 5.0, 6.0, 8.0, 8.0]) == 8.0  # queues grow
    assert adapters.ttft_growth([0.5, 0.7]) == 1.0  # too few to tell
    assert adapters.ttft_growth([0.0, 0.0, 0.0, 1.0]) == 1.0  # no first-quarter time to divide


def test_swap_free_runs_every_request_on_one_adapter():
    params = preset("llama-3.1-8b-h100").model_copy(
        update={"max_loras": 2, "lora_swap_seconds": 0.02, "startup_delay_seconds": 0.0}
    )
    requests = adapters.workload(300, 10.0, 8, 1.1, 1, 200, 20)
    free = adapters.run("swapFree", requests, params, 2, 1.25)
    # One adapter loads once per replica, whatever the arrivals' adapters were.
    assert int(free["swaps"]) <= 2
    assert float(free["ttft_mean_ms"]) <= float(
        adapters.run("leastInFlight", requests, params, 2, 1.25)["ttft_mean_ms"]
    )
