"""Plain HTTPS clients for the local API server, authenticated with the admin certificate.

The cluster tooling talks REST through httpx rather than the ``kubernetes`` package: that
package is reserved to ``inferscale.kube`` (STYLE.md), and the launcher needs async watches,
which httpx streams directly.
"""

from __future__ import annotations

import ssl

import httpx

from inferscale.cluster.config import ClusterConfig
from inferscale.cluster.pki import Pki


def server_address(config: ClusterConfig, netns: bool) -> str:
    """Where the API server listens: the bridge address in netns mode, so pods reach it."""
    return config.gateway_ip if netns else "127.0.0.1"


def ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    """TLS that trusts the cluster CA and presents the admin client certificate."""
    pki = Pki(config.pki_dir)
    context = ssl.create_default_context(cafile=str(pki.ca_crt))
    context.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
    return context


def sync_client(config: ClusterConfig, server: str, timeout: float = 10.0) -> httpx.Client:
    """A blocking admin client for ``server`` (``https://host:port``)."""
    return httpx.Client(base_url=server, verify=ssl_context(config), timeout=timeout)


def async_client(config: ClusterConfig, server: str, timeout: float = 10.0) -> httpx.AsyncClient:
    """An asyncio admin client for ``server`` (``https://host:port``)."""
    return httpx.AsyncClient(base_url=server, verify=ssl_context(config), timeout=timeout)
