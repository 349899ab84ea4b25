"""The pod network: one Linux bridge per cluster and one network namespace per launched pod.

Each pod's namespace holds ``lo`` and an ``eth0`` (one end of a veth pair whose other end is
on the bridge) with an address from the cluster's pod range; the bridge holds the range's
first address, which is also where the API server listens, so a process in a pod binds
``0.0.0.0:PORT`` as in a real pod, reaches other pods and the API server, and the host (probes,
Prometheus, tests) reaches it. The range exists only on this machine: nothing routes it
elsewhere and no NAT is set up.

Where namespaces are impossible (not root, no ``ip``), pods get distinct 127.0.0.0/8 addresses
instead (``loopback`` mode); see docs/local-cluster.md for what that costs.

Every function is idempotent so that ``down`` can clean up after any crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from inferscale.cluster.config import ClusterConfig
from inferscale.cluster.process import ClusterError

IP_TIMEOUT = 20.0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (bounded), raising ``ClusterError`` with its stderr on failure."""
    try:
        result = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except FileNotFoundError as error:
        raise ClusterError(
            "network", "the ip command is missing (apt-get install iproute2)"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise ClusterError("network", f"ip {' '.join(args)} hung for {IP_TIMEOUT:.0f}s") from error
    if check and result.returncode != 0:
        raise ClusterError("network", f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def netns_supported() -> bool:
    """True if this process may create network namespaces and bridges (root with iproute2)."""
    if os.geteuid() != 0:
        return False
    probe = f"is-probe-{os.getpid()}"
    try:
        ok = ip("netns", "add", probe, check=False).returncode == 0
    except ClusterError:
        return False
    if ok:
        ip("netns", "del", probe, check=False)
    return ok


def resolve_mode(config: ClusterConfig) -> str:
    """``netns`` or ``loopback``: ``auto`` picks netns where it works."""
    if config.network == "auto":
        return "netns" if netns_supported() else "loopback"
    if config.network == "netns" and not netns_supported():
        raise ClusterError(
            "network", "network namespaces need root and iproute2; use --network loopback"
        )
    return config.network


def _prefixlen(config: ClusterConfig) -> int:
    return ipaddress.ip_network(config.pod_cidr).prefixlen


def setup_bridge(config: ClusterConfig) -> None:
    """Create the bridge with the gateway address (kept if it is already there)."""
    bridge = config.bridge_name
    if ip("link", "show", bridge, check=False).returncode != 0:
        ip("link", "add", bridge, "type", "bridge")
    address = f"{config.gateway_ip}/{_prefixlen(config)}"
    if address not in ip("-o", "addr", "show", "dev", bridge).stdout:
        ip("addr", "add", address, "dev", bridge)
    ip("link", "set", bridge, "up")


def teardown_bridge(config: ClusterConfig) -> None:
    """Remove the bridge if present."""
    if ip("link", "show", config.bridge_name, check=False).returncode == 0:
        ip("link", "del", config.bridge_name, check=False)


def netns_name(config: ClusterConfig, pod_uid: str) -> str:
    """The network namespace of a pod."""
    return config.netns_prefix + pod_uid.replace("-", "")[:12]


def _host_veth(namespace: str) -> str:
    return "isv" + hashlib.sha256(namespace.encode()).hexdigest()[:12]


def _etc_dir(namespace: str) -> Path:
    return Path("/etc/netns") / namespace


def create_pod_netns(
    config: ClusterConfig, namespace: str, address: str, hostname: str = ""
) -> None:
    """Create ``namespace`` with ``eth0`` at ``address`` on the bridge and a default route.

    ``ip netns exec`` bind-mounts the files of ``/etc/netns/NAME/`` over ``/etc``: the pod gets
    an ``/etc/hosts`` with its own name (as a kubelet writes one) and a ``resolv.conf`` with
    no servers. The pod network has no DNS, and the host's resolver is unreachable from the
    namespace, so without this every lookup (even Python's ``HTTPServer`` start-up) would wait
    for a resolver timeout instead of failing at once.
    """
    delete_pod_netns(namespace)
    etc = _etc_dir(namespace)
    etc.mkdir(parents=True, exist_ok=True)
    names = f"{address}\t{hostname}\n" if hostname else ""
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{names}")
    (etc / "resolv.conf").write_text("# inferscale local pod network: no DNS\noptions attempts:1\n")
    host_end = _host_veth(namespace)
    ip("link", "del", host_end, check=False)
    ip("netns", "add", namespace)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("link", "set", host_end, "master", config.bridge_name)
        ip("link", "set", host_end, "up")
        inside = ("-n", namespace)
        ip(*inside, "addr", "add", f"{address}/{_prefixlen(config)}", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "route", "add", "default", "via", config.gateway_ip)
    except ClusterError:
        delete_pod_netns(namespace)
        raise


def netns_pids(namespace: str) -> list[int]:
    """The processes that still live in a network namespace."""
    result = ip("netns", "pids", namespace, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def delete_pod_netns(namespace: str, grace: float = 0.0) -> None:
    """Kill whatever still runs inside ``namespace``, then delete it, its veth pair and files."""
    if namespace not in list_netns(namespace):
        shutil.rmtree(_etc_dir(namespace), ignore_errors=True)
        return
    pids = netns_pids(namespace)
    if pids and grace > 0:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while netns_pids(namespace) and time.monotonic() < deadline:
            time.sleep(0.1)
    for pid in netns_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ip("netns", "del", namespace, check=False)
    shutil.rmtree(_etc_dir(namespace), ignore_errors=True)


def list_netns(prefix: str) -> list[str]:
    """Names of the network namespaces that start with ``prefix``."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def loopback_address(config: ClusterConfig, node_index: int, pod_index: int) -> str:
    """A pod address in loopback mode: 127.<port_base % 200 + 20>.<node>.<pod>."""
    second = 20 + config.port_base % 200
    return f"127.{second}.{node_index + 1}.{pod_index}"
