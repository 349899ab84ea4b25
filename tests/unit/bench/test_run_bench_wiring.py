"""bench/routing/run_bench.py's wiring: sims publish KV events, the table names them."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from inferscale.cli.main import build_parser
from inferscale.cli.sim import settings_from_args
from inferscale.protocol.table import RoutingTable

ROUTING = Path(__file__).resolve().parents[3] / "bench" / "routing"
sys.path.append(str(ROUTING))  # run_bench.py imports its siblings by name
spec = importlib.util.spec_from_file_location("bench_routing_run_bench", ROUTING / "run_bench.py")
assert spec is not None and spec.loader is not None
run_bench = importlib.util.module_from_spec(spec)
sys.modules["bench_routing_run_bench"] = run_bench
spec.loader.exec_module(run_bench)


def bench_args(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    run_bench.add_workload_arguments(ap)
    ap.add_argument("--request-timeout", type=float, default=300.0)
    return ap.parse_args(list(argv))


def test_the_table_names_each_sims_kv_events_publisher():
    args = bench_args("--replicas", "2")
    prompts = run_bench.Prompts(512)
    raw = run_bench.routing_table("predictedTTFT", [8001, 8002], [9001, None], prompts, args)
    table = RoutingTable.model_validate(raw)  # what the router's --table-file loads
    route = table.models[run_bench.MODEL]
    assert route.route.strategy == "predictedTTFT"
    first, second = route.endpoints
    assert (first.address, first.engine, first.kv_events) == (
        "127.0.0.1:8001",
        "sim",
        "127.0.0.1:9001",
    )
    assert second.kv_events is None  # a sim without events: scored without its cache


def test_a_sim_publishes_on_its_port_with_the_host_tier_asked_for():
    args = bench_args("--host-factor", "4")
    params = run_bench.engine_params(args.preset, 1.0, args.kv_factor, args.host_factor)
    command = run_bench.sim_command(8001, 9001, args, params)
    assert command[1:4] == ["-m", "inferscale", "sim"]
    settings = settings_from_args(build_parser().parse_args(command[3:]))
    events = settings.kv_events()
    assert events is not None and events.enable
    assert events.endpoint == "tcp://127.0.0.1:9001"
    engine = settings.engine_params()
    assert engine.host_kv_capacity_tokens == 4 * engine.kv_capacity_tokens
    assert engine.host_transfer_seconds_per_token > 0
    quiet = settings_from_args(
        build_parser().parse_args(run_bench.sim_command(8001, None, args, params)[3:])
    )
    assert quiet.kv_events() is None
