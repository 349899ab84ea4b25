"""The local cluster's PKI: the aggregation layer's client certificate has a CA of its own."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from inferscale.cluster.pki import FRONT_PROXY_CLIENT, ensure_front_proxy, ensure_pki

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _verifies(ca: str, crt: str) -> bool:
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", ca, crt], capture_output=True, text=True, check=False
    )
    return done.returncode == 0


def test_the_front_proxy_client_is_signed_by_its_own_ca_not_the_clusters(tmp_path):
    pki = ensure_pki(tmp_path, ips=["127.0.0.1"], dns_names=["localhost"])
    ca, client = ensure_front_proxy(pki)
    assert _verifies(str(ca), str(client))
    # The cluster CA also signs approved CSRs: it must not be able to vouch for this name.
    assert not _verifies(str(pki.ca_crt), str(client))
    subject = subprocess.run(
        ["openssl", "x509", "-in", str(client), "-noout", "-subject"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"CN = {FRONT_PROXY_CLIENT}" in subject or f"CN={FRONT_PROXY_CLIENT}" in subject
    # Kept as they are on the next start.
    before = client.read_bytes()
    assert ensure_front_proxy(pki) == (ca, client) and client.read_bytes() == before
