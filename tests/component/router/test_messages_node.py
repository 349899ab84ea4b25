"""The Node Anthropic SDK (``@anthropic-ai/sdk``) against the router in front of a sim.

The package is pinned in ``tests/component/router/node/package.json`` (and its lock file);
``npm ci --prefix tests/component/router/node`` installs it (``.ci/run`` does). Skips, saying
why, where node or the installed package is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.component.router.conftest import MODEL, RunningRouter, address

NODE_DIR = Path(__file__).parent / "node"


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the Node SDK check needs Node.js 18 or later)")
    if not (NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk").is_dir():
        pytest.skip(f"@anthropic-ai/sdk is not installed: run `npm ci --prefix {NODE_DIR}`")
    return node


def test_the_node_sdk_creates_streams_and_gets_errors(router: RunningRouter, sims):
    node = node_or_skip()
    assert router.push({MODEL: [address(s) for s in sims]}).status_code == 200
    env = {**os.environ, "ROUTER_URL": router.base_url, "MODEL": MODEL}
    done = subprocess.run(
        [node, "check.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["message"]["stop"] == "max_tokens" and report["message"]["output"] == 4
    assert report["message"]["text"]
    stream = report["stream"]
    assert stream["events"][0] == "message_start" and stream["events"][-1] == "message_stop"
    assert stream["stop"] == "max_tokens" and stream["output"] == 3
    assert report["error"] == {"status": 404, "type": "not_found_error"}
