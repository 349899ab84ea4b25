"""``inferscale sim`` as the process launcher starts it: env plus args, then SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_env_and_flags_then_sigterm_lets_in_flight_requests_finish():
    port = free_port()
    env = {
        **os.environ,
        "INFERSCALE_SIM_MODEL": "env-model",
        "INFERSCALE_SIM_PRESET": "zero",
        "INFERSCALE_SIM_ENGINE__STEP_BASE_SECONDS": "0.01",
        "INFERSCALE_SIM_SHUTDOWN_GRACE_SECONDS": "10",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferscale", "sim", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "sim did not become healthy"
            time.sleep(0.1)
        assert httpx.get(base + "/v1/models").json()["data"][0]["id"] == "env-model"

        result: dict = {}

        def slow_request():
            # 50 tokens at 10 ms a step: in flight for ~0.5 s when SIGTERM arrives.
            result["response"] = httpx.post(
                base + "/v1/completions",
                json={"model": "env-model", "prompt": "x", "max_tokens": 50},
                timeout=20,
            )

        worker = threading.Thread(target=slow_request)
        worker.start()
        deadline = time.monotonic() + 10
        while "vllm:num_requests_running{" not in (text := httpx.get(base + "/metrics").text) or (
            'vllm:num_requests_running{engine="0",model_name="env-model"} 0.0' in text
        ):
            assert time.monotonic() < deadline, "request never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        worker.join(20)
        assert result["response"].status_code == 200
        assert result["response"].json()["usage"]["completion_tokens"] == 50
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


def test_process_age_counts_from_the_process_start() -> None:
    # The sim's cold start counts from its process's start (interpreter and imports included).
    import subprocess
    import sys

    code = (
        "import time; time.sleep(0.6); "
        "from inferscale.sim.server import process_age; print(process_age())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    age = float(out.stdout)
    assert 0.6 <= age < 30
