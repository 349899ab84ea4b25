"""Bring the local cluster up, report on it, and take it down, leaving nothing behind.

``up`` starts, in order and each only once the previous one is healthy: etcd, the API server
(``--authorization-mode=Node,RBAC``), the controller manager, the scheduler, KWOK, the nodes,
Prometheus and the pod launcher. A component that fails stops the whole start: what was
started is stopped again and the error names the component with the tail of its log.

``down`` works from the state directory alone, so it also cleans up after a crash or a killed
test run: recorded processes (by pid and start time), pod network namespaces and whatever
still runs in them, the bridge, and the mount points the launcher created (but not one that a
pod of another cluster on this machine still mounts on). It keeps ``logs/`` for post-mortems
and removes everything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from inferscale.cluster import containers, kwok, network, prometheus
from inferscale.cluster.assets import find_assets
from inferscale.cluster.config import KWOK_NODE_ANNOTATION, ClusterConfig
from inferscale.cluster.kubeapi import server_address, ssl_context, sync_client
from inferscale.cluster.pki import (
    FRONT_PROXY_CLIENT,
    Pki,
    ensure_client_cert,
    ensure_front_proxy,
    ensure_pki,
    write_kubeconfig,
)
from inferscale.cluster.process import (
    ClusterError,
    ProcessRecord,
    port_free,
    read_records,
    spawn,
    tail,
    wait_healthy,
)

#: Start order; ``down`` stops in reverse (the launcher first, so pods get their SIGTERM).
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "prometheus",
    "launcher",
    "containerd",
    "kubelet",
)
STOP_GRACE = {"launcher": 30.0, "kube-apiserver": 10.0, "etcd": 10.0, "containerd": 10.0}
HEALTH_TIMEOUT = {"kube-apiserver": 120.0, "kubelet": 120.0}
DEFAULT_HEALTH_TIMEOUT = 60.0
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: Files the launcher keeps about host paths it had to create as mount points.
CREATED_MOUNTPOINTS = "created-mountpoints.json"
#: The API server's audit log, in the log directory (JSON lines, one per request).
AUDIT_LOG = "kube-apiserver-audit.log"
#: Who asked for what (the Metadata level: no bodies, so no Secret data) for every
#: ServiceAccount outside kube-system: what the operator and workloads really call, which the
#: RBAC end-to-end tests check against the roles (e2e/test_rbac_least_privilege.py).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


def _say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Started:
    """What ``up`` returns: the saved config, where the API server is, and how long it took."""

    config: ClusterConfig
    server: str
    seconds: float


def _probe(url: str, verify: Any = False, expect: str | None = None) -> bool:
    try:
        response = httpx.get(url, verify=verify, timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and (expect is None or expect in response.text)


def _stale(config: ClusterConfig) -> list[str]:
    reasons = [f"process record {r.name} (pid {r.pid})" for r in read_records(config.state_dir)]
    if (config.state_dir / "etcd").exists():
        reasons.append(f"etcd data in {config.state_dir / 'etcd'}")
    reasons += [f"network namespace {n}" for n in network.list_netns(config.netns_prefix)]
    return reasons


def up(config: ClusterConfig, assets: str | None = None) -> Started:
    """Start every component of the cluster and return once it serves pods.

    Raises:
        ClusterError: a port is taken, a binary is missing, the state directory is stale
            (run ``down``), or a component failed; the message says which and why.
    """
    began = time.monotonic()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    alive = [r for r in read_records(config.state_dir) if r.alive()]
    if alive:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in alive)
        raise ClusterError("up", f"a cluster already runs from {config.state_dir}: {names}")
    stale = _stale(config)
    if stale:
        raise ClusterError(
            "up",
            f"stale state in {config.state_dir} from a cluster that did not shut down "
            f"({'; '.join(stale)}); run `inferscale cluster down --dir {config.state_dir} "
            f"--name {config.name}` first",
        )
    assets_dir = find_assets(assets, kubelet=config.container_node)
    mode = network.resolve_mode(config)
    if config.container_node:
        missing = containers.missing_prerequisites(assets_dir)
        if mode != "netns":
            missing.append("netns network mode (pods join the cluster's bridge)")
        if missing:
            raise ClusterError("containers", f"the container node needs {'; '.join(missing)}")
    config = replace(config, network=mode, assets_dir=str(assets_dir))  # type: ignore[arg-type]
    address = server_address(config, mode == "netns")
    ports = {
        "etcd": ("127.0.0.1", config.etcd_port),
        "etcd (peer)": ("127.0.0.1", config.etcd_peer_port),
        "kube-apiserver": ("127.0.0.1", config.apiserver_port),
        "kube-controller-manager": ("127.0.0.1", config.controller_manager_port),
        "kube-scheduler": ("127.0.0.1", config.scheduler_port),
        "kwok": ("127.0.0.1", config.kwok_port),
        "launcher": ("127.0.0.1", config.launcher_port),
        "prometheus": ("127.0.0.1", config.prometheus_port),
    }
    if config.container_node:
        ports["kubelet"] = ("127.0.0.1", containers.kubelet_healthz_port(config))
        # The bridge address does not exist yet: 0.0.0.0 also finds a listener on it.
        ports["kubelet (API)"] = ("0.0.0.0", containers.kubelet_port(config))
    for component, (host, port) in ports.items():
        if not port_free(host, port):
            raise ClusterError(component, f"port {host}:{port} is already in use")
    config.save()
    try:
        server = _start(config, assets_dir, address)
    except (ClusterError, KeyboardInterrupt):
        _say("start failed; stopping what was started")
        down(config.state_dir, quiet=True)
        raise
    return Started(config, server, time.monotonic() - began)


def _start(config: ClusterConfig, assets: Path, address: str) -> str:
    """Start every component in order, each once the one before is healthy; the server URL."""
    if config.network == "netns":
        network.setup_bridge(config)
    pki = ensure_pki(
        config.pki_dir,
        ips=sorted({"127.0.0.1", address, "10.96.0.1"}),
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    )
    server = f"https://{address}:{config.apiserver_port}"
    write_kubeconfig(config.kubeconfig, pki, server, f"inferscale-{config.name}")
    starter = _Starter(config, assets, address, server, pki, ssl_context(config))
    starter.etcd()
    starter.apiserver()
    starter.controller_manager()
    starter.scheduler()
    starter.kwok()
    _create_nodes(config, server, address)
    starter.prometheus()
    starter.launcher()
    _wait_default_service_account(config, server)
    if config.container_node:
        starter.container_node()
    return server


def _aggregation_flags(front_proxy: tuple[Path, Path]) -> list[str]:
    """The aggregation layer: the API server proxies APIServices (KEDA's metrics API server).

    It authenticates to an extension server with the ``front-proxy-client`` certificate (of a
    CA of its own, ``pki.ensure_front_proxy``) and passes the user in ``X-Remote-*`` headers,
    which the extension trusts from that certificate only. Services have no ClusterIP routing
    here, so the API server dials their endpoints instead.
    """
    ca, client = front_proxy
    return [
        f"--requestheader-client-ca-file={ca}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={client}",
        f"--proxy-client-key-file={client.with_suffix('.key')}",
        "--enable-aggregator-routing=true",
    ]


@dataclass(frozen=True)
class _Starter:
    """Starts one component at a time, with the addresses and certificates they share."""

    config: ClusterConfig
    assets: Path
    address: str
    server: str
    pki: Pki
    ca: ssl.SSLContext

    @property
    def _serving(self) -> list[str]:
        return [
            f"--tls-cert-file={self.pki.serving_crt}",
            f"--tls-private-key-file={self.pki.serving_key}",
        ]

    @property
    def _etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.config.etcd_port}"

    def run(
        self, name: str, argv: list[str], healthy_url: str, verify: Any = False
    ) -> ProcessRecord:
        """Spawn ``name`` and wait until ``healthy_url`` answers 200 (ClusterError if never)."""
        _say(f"starting {name}")
        record = spawn(self.config.state_dir, name, argv)
        wait_healthy(
            record,
            self.config.log_dir / f"{name}.log",
            lambda: _probe(healthy_url, verify),
            HEALTH_TIMEOUT.get(name, DEFAULT_HEALTH_TIMEOUT),
        )
        return record

    def etcd(self) -> None:
        """Start etcd on loopback: a single member with throwaway data."""
        etcd_url = self._etcd_url
        peer_url = f"http://127.0.0.1:{self.config.etcd_peer_port}"
        argv = [
            str(self.assets / "etcd"),
            "--name=local",
            f"--data-dir={self.config.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            "--unsafe-no-fsync",  # throwaway data: durability is not worth the disk waits
            "--log-level=warn",
        ]
        self.run("etcd", argv, f"{etcd_url}/health")

    def apiserver(self) -> None:
        """The API server with Node and RBAC authorization, on the cluster's address."""
        config, pki = self.config, self.pki
        front_proxy = ensure_front_proxy(pki)
        argv = [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers={self._etcd_url}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={config.apiserver_port}",
            *self._serving,
            f"--client-ca-file={pki.ca_crt}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={config.service_cidr}",
            # Nothing routes the kubernetes Service; do not publish the bridge address there.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={config.state_dir / 'apiserver-certs'}",
            *_aggregation_flags(front_proxy),
            *self._audit(),
        ]
        self.run("kube-apiserver", argv, f"{self.server}/readyz", verify=self.ca)

    def _audit(self) -> list[str]:
        """The audit log of what workloads ask (:data:`AUDIT_POLICY`), beside the other logs."""
        policy = self.config.state_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.config.log_dir / AUDIT_LOG}",
            "--audit-log-maxsize=64",
            "--audit-log-maxbackup=1",
        ]

    def _common(self) -> list[str]:
        """The flags the controller manager and the scheduler share."""
        kubeconfig = str(self.config.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            *self._serving,
        ]

    def controller_manager(self) -> None:
        """The controller manager, signing with the cluster CA."""
        config, pki = self.config, self.pki
        argv = [
            str(self.assets / "kube-controller-manager"),
            *self._common(),
            f"--secure-port={config.controller_manager_port}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_crt}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca_crt}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={config.service_cidr}",
            # The default 20 QPS creates pods at about 5 per second: far too slow for the
            # 1,000-model scale bench, and unlike a real cluster's many kubelets, nothing here
            # needs protecting from one busy controller.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ]
        url = f"https://127.0.0.1:{config.controller_manager_port}/healthz"
        self.run("kube-controller-manager", argv, url, verify=self.ca)

    def scheduler(self) -> None:
        """The scheduler."""
        port = self.config.scheduler_port
        argv = [str(self.assets / "kube-scheduler"), *self._common(), f"--secure-port={port}"]
        self.run("kube-scheduler", argv, f"https://127.0.0.1:{port}/healthz", verify=self.ca)

    def kwok(self) -> None:
        """KWOK, managing only the nodes annotated as fake, with our stages."""
        config = self.config
        stages = config.state_dir / "kwok-stages.yaml"
        stages.write_text(kwok.render_stages(config))
        argv = [
            str(self.assets / "kwok"),
            f"--kubeconfig={config.kubeconfig}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--node-lease-duration-seconds={kwok.NODE_LEASE_SECONDS}",
            f"--server-address=127.0.0.1:{config.kwok_port}",
            f"--cidr={config.kwok_pod_cidr}",
            f"--node-ip={self.address}",
        ]
        self.run("kwok", argv, f"http://127.0.0.1:{config.kwok_port}/healthz")

    def prometheus(self) -> None:
        """Prometheus, with file-based discovery of the launcher's targets."""
        config = self.config
        config.targets_dir.mkdir(parents=True, exist_ok=True)
        prom_config = config.state_dir / "prometheus" / "prometheus.yml"
        prom_config.write_text(prometheus.render_config(config))
        argv = [
            str(self.assets / "prometheus"),
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={config.state_dir / 'prometheus' / 'data'}",
            f"--web.listen-address={config.prometheus_url.removeprefix('http://')}",
            "--storage.tsdb.retention.time=1d",
        ]
        self.run("prometheus", argv, f"{config.prometheus_url}/-/ready")

    def launcher(self) -> None:
        """The pod launcher (our own process), which runs the pods that must really serve."""
        argv = [sys.executable, "-m", "inferscale.cluster.launcher", str(self.config.state_dir)]
        self.run("launcher", argv, f"http://127.0.0.1:{self.config.launcher_port}/healthz")

    def container_node(self) -> None:
        """containerd, the images, then the kubelet; returns once its node is Ready."""
        config = self.config
        paths = containers.Paths(config)
        containers.write_files(config, paths, self.pki.ca_crt)
        ensure_client_cert(
            self.pki, "kubelet", f"system:node:{containers.NODE_NAME}", ("system:nodes",)
        )
        write_kubeconfig(paths.kubeconfig, self.pki, self.server, "local", client="kubelet")
        containers.prepare_cgroups(config)
        containers.add_service_rule(config)
        _say("starting containerd")
        record = spawn(config.state_dir, "containerd", containers.containerd_argv(paths))
        log = config.log_dir / "containerd.log"
        wait_healthy(record, log, lambda: containers.containerd_ready(paths), 60.0)
        containers.import_images(paths, list(containers.IMAGES), say=_say)
        url = f"http://127.0.0.1:{containers.kubelet_healthz_port(config)}/healthz"
        record = self.run("kubelet", containers.kubelet_argv(config, paths, self.assets), url)
        with sync_client(config, self.server) as client:
            wait_healthy(
                record,
                config.log_dir / "kubelet.log",
                lambda: containers.node_ready(client),
                120.0,
                what=f"registered with node {containers.NODE_NAME} Ready",
            )
        _say(f"node {containers.NODE_NAME} Ready (pods in containerd with runc)")


def _create_nodes(config: ClusterConfig, server: str, address: str) -> None:
    nodes = kwok.node_objects(config, address)
    with sync_client(config, server) as client:
        for node in nodes:
            response = client.post("/api/v1/nodes", json=node)
            if response.status_code not in (201, 409):
                raise ClusterError("nodes", f"creating {node['metadata']['name']}: {response.text}")
        names = {n["metadata"]["name"] for n in nodes}
        deadline = time.monotonic() + 60
        while True:
            items = client.get("/api/v1/nodes").json().get("items", [])
            ready = {
                n["metadata"]["name"]
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions") or []
                )
            }
            if names <= ready:
                _say(f"{len(names)} nodes Ready")
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    "kwok",
                    f"nodes not Ready after 60s: {sorted(names - ready)}; last log lines:\n"
                    + tail(config.log_dir / "kwok.log"),
                )
            time.sleep(0.3)


def _wait_default_service_account(config: ClusterConfig, server: str) -> None:
    """Pods in ``default`` are refused until the controller manager made its ServiceAccount."""
    with sync_client(config, server) as client:
        deadline = time.monotonic() + 60
        while client.get("/api/v1/namespaces/default/serviceaccounts/default").status_code != 200:
            if time.monotonic() > deadline:
                raise ClusterError(
                    "kube-controller-manager",
                    "no default ServiceAccount after 60s; last log lines:\n"
                    + tail(config.log_dir / "kube-controller-manager.log"),
                )
            time.sleep(0.3)


def _load(state_dir: Path) -> ClusterConfig | None:
    try:
        return ClusterConfig.load(state_dir)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


def down(state_dir: Path, quiet: bool = False, expected: ClusterConfig | None = None) -> list[str]:
    """Stop everything the cluster in ``state_dir`` started and remove its state but the logs.

    Args:
        state_dir: the cluster's state directory.
        quiet: print nothing.
        expected: the configuration the cluster would have had, used when ``state_dir`` holds
            none (a fresh checkout on a machine where a killed run left network namespaces and
            a bridge behind: those live outside the directory and survive its removal).

    Returns:
        One line per thing that was stopped or removed (what ``cluster down`` prints).
    """
    done: list[str] = []
    records = {r.name: r for r in read_records(state_dir)}
    config = _load(state_dir) or expected
    # The container node's pods go first, while its kubelet and the API server still run: the
    # kubelet stops them properly (SIGTERM, CNI teardown, unmounts).
    if (
        config is not None
        and config.container_node
        and _all_alive(records, "kubelet", "kube-apiserver")
    ):
        address = server_address(config, config.network == "netns")
        done += containers.drain(config, f"https://{address}:{config.apiserver_port}")
    order = [n for n in reversed(COMPONENTS) if n in records]
    order += [n for n in records if n not in order]
    for name in order:
        record = records[name]
        if record.alive():
            killed = record.stop(STOP_GRACE.get(name, 5.0))
            done.append(f"stopped {name} (pid {record.pid}{', killed' if killed else ''})")
    if config is not None and config.container_node:
        done += containers.cleanup(config)
    if config is not None:
        # Whatever the launcher left behind if it died: pod processes by record, then namespaces.
        for pid_file in config.pods_dir.glob("*/pids/*.json"):
            with contextlib.suppress(ValueError, KeyError, OSError):
                data = json.loads(pid_file.read_text())
                record = ProcessRecord(data["name"], int(data["pid"]), int(data["started"]))
                if record.alive():
                    record.stop(2.0)
                    done.append(f"stopped pod process {record.name} (pid {record.pid})")
        for namespace in network.list_netns(config.netns_prefix):
            network.delete_pod_netns(namespace, grace=2.0)
            done.append(f"deleted network namespace {namespace}")
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()  # only if empty: the per-pod files are gone by now
        if config.network != "loopback" and network.netns_supported():
            if network.ip("link", "show", config.bridge_name, check=False).returncode == 0:
                network.teardown_bridge(config)
                done.append(f"deleted bridge {config.bridge_name}")
        done += _remove_mountpoints(state_dir)
    for child in sorted(state_dir.iterdir()) if state_dir.is_dir() else []:
        if child.name == "logs":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if not quiet:
        for line in done:
            _say(line)
    return done


def _all_alive(records: dict[str, ProcessRecord], *names: str) -> bool:
    return all(name in records and records[name].alive() for name in names)


def _remove_mountpoints(state_dir: Path, proc: Path = Path("/proc")) -> list[str]:
    path = state_dir / CREATED_MOUNTPOINTS
    try:
        created = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    # Another cluster on this machine may create the same mount points (every pod mounts its
    # token at /var/run/secrets/kubernetes.io/serviceaccount). Its pods' bind mounts live in
    # their own mount namespaces, so the host's directory looks empty; yet removing it would
    # detach those mounts (Linux >= 3.18 lets rmdir succeed and unmounts lazily) and the
    # other cluster's running pods would lose their files.
    # mountinfo names the path with its symlinks resolved: /var/run is a link to /run on most
    # distributions, so the token's mount point shows as /run/secrets/... there.
    in_use = mounted_anywhere(proc)
    out = []
    # Deepest first, and only while empty: never remove anything that holds files.
    for directory in sorted(created, key=len, reverse=True):
        if directory in in_use or os.path.realpath(directory) in in_use:
            continue
        with contextlib.suppress(OSError):
            Path(directory).rmdir()
            out.append(f"removed mount point {directory}")
    return out


def mounted_anywhere(proc: Path = Path("/proc")) -> set[str]:
    """Every path that is a mount point in the mount namespace of some process on this machine.

    Reads ``/proc/PID/mountinfo`` once per mount namespace; processes that vanish or cannot be
    read (another user's, without root) are skipped.
    """
    namespaces: set[str] = set()
    points: set[str] = set()
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            namespace = os.readlink(entry / "ns" / "mnt")
            if namespace in namespaces:
                continue
            text = (entry / "mountinfo").read_text()
        except OSError:
            continue
        namespaces.add(namespace)
        for line in text.splitlines():
            fields = line.split(" ")
            if len(fields) > 4:
                # The kernel writes space, tab, newline and backslash as octal escapes.
                points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
    return points


def status(state_dir: Path) -> dict[str, Any]:
    """Components (alive or not), nodes, pods: what ``cluster status`` prints."""
    config = _load(state_dir)
    components = {r.name: r.alive() for r in read_records(state_dir)}
    report: dict[str, Any] = {"state_dir": str(state_dir), "components": components}
    if config is None:
        report["running"] = False
        return report
    address = server_address(config, config.network == "netns")
    server = f"https://{address}:{config.apiserver_port}"
    report.update(
        server=server,
        kubeconfig=str(config.kubeconfig),
        network=config.network,
        prometheus=config.prometheus_url,
    )
    report["running"] = bool(components) and all(components.values())
    if not components.get("kube-apiserver"):
        return report
    with (
        contextlib.suppress(httpx.HTTPError, ClusterError, OSError),
        sync_client(config, server, timeout=3.0) as client,
    ):
        nodes = client.get("/api/v1/nodes").json().get("items", [])
        report["nodes"] = {
            n["metadata"]["name"]: next(
                (
                    c["status"]
                    for c in n.get("status", {}).get("conditions") or []
                    if c["type"] == "Ready"
                ),
                "Unknown",
            )
            for n in nodes
        }
        pods = client.get("/api/v1/pods").json().get("items", [])
        report["pods"] = len(pods)
    return report


def env_lines(state_dir: Path) -> list[str]:
    """Shell lines that point kubectl and friends at the cluster."""
    config = _load(state_dir)
    if config is None:
        raise ClusterError("env", f"no cluster in {state_dir}; run `inferscale cluster up`")
    return [
        f"export KUBECONFIG={config.kubeconfig}",
        f'export PATH="{config.assets_dir}:$PATH"',
        f"export INFERSCALE_CLUSTER_DIR={state_dir}",
        f"export INFERSCALE_PROMETHEUS_URL={config.prometheus_url}",
    ]


def pki_of(config: ClusterConfig) -> Pki:
    """The cluster's PKI paths."""
    return Pki(config.pki_dir)


#: Components ``restart`` can bring back, and how to tell each is serving again.
RESTARTABLE = ("etcd", "kube-apiserver", "prometheus")


def _health_check(config: ClusterConfig, name: str) -> Callable[[], bool]:
    """A no-argument check that ``name`` serves again, as ``up`` waited for it."""
    if name == "etcd":
        return lambda: _probe(f"http://127.0.0.1:{config.etcd_port}/health")
    if name == "kube-apiserver":
        address = server_address(config, config.network == "netns")
        url = f"https://{address}:{config.apiserver_port}/readyz"
        context = ssl_context(config)
        return lambda: _probe(url, verify=context)
    return lambda: _probe(f"{config.prometheus_url}/-/ready")


def restart(state_dir: Path, name: str, down_seconds: float = 0.0) -> ProcessRecord:
    """Stop one control-plane component, leave it down a while, and start it as it was.

    For fault tests and for users rehearsing an outage: the component is stopped as ``down``
    stops it (SIGTERM, SIGKILL past its grace), stays down ``down_seconds``, and is started
    again with the argv, environment and working directory it ran with (read from
    ``/proc``), keeping its data (etcd's store, Prometheus's TSDB). Everything else runs on.

    Raises:
        ClusterError: no such running component, one ``restart`` does not support, or it did
            not serve again in time (with its log's tail).
    """
    if name not in RESTARTABLE:
        raise ClusterError(name, f"restart supports {', '.join(RESTARTABLE)}, not {name!r}")
    config = _load(state_dir)
    record = {r.name: r for r in read_records(state_dir)}.get(name)
    if config is None or record is None or not record.alive():
        raise ClusterError(name, f"not running from {state_dir}")
    proc = Path("/proc") / str(record.pid)
    try:
        argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        env_items = (proc / "environ").read_bytes().rstrip(b"\0").decode().split("\0")
        cwd = Path(os.readlink(proc / "cwd"))
    except OSError as error:
        raise ClusterError(name, f"cannot read how it was started: {error}") from error
    env = dict(item.split("=", 1) for item in env_items if "=" in item)
    _say(f"stopping {name} (pid {record.pid})")
    record.stop(STOP_GRACE.get(name, 5.0))
    time.sleep(max(down_seconds, 0.0))
    _say(f"starting {name} again")
    started = spawn(state_dir, name, argv, env=env, cwd=cwd)
    wait_healthy(
        started,
        config.log_dir / f"{name}.log",
        _health_check(config, name),
        HEALTH_TIMEOUT.get(name, DEFAULT_HEALTH_TIMEOUT),
    )
    return started


def _server(config: ClusterConfig) -> str:
    return f"https://{server_address(config, config.network == 'netns')}:{config.apiserver_port}"


def _launcher_node(config: ClusterConfig, node: str, action: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{config.launcher_port}/nodes/{node}/{action}"
    try:
        response = httpx.post(url, timeout=60.0)
    except httpx.HTTPError as error:
        raise ClusterError("launcher", f"{action} {node}: {error}") from error
    if response.status_code != 200:
        raise ClusterError("launcher", f"{action} {node}: {response.text}")
    answer: dict[str, Any] = response.json()
    return answer


def lose_node(state_dir: Path, node: str) -> list[str]:
    """Lose a launcher node as when its machine dies; returns the pods killed on it.

    Its pods' processes are killed at once (SIGKILL: no preStop, no grace) and their addresses
    go with their network; the launcher says nothing more of them; and the node's heartbeat
    stops (KWOK no longer renews it), so the node controller marks it NotReady after its grace
    period. The Node and its pods stay in the API as they were: deleting the Node (what a
    cloud's node lifecycle does for a machine that is gone) lets the pod garbage collector
    force-delete them within about a minute. :func:`restore_node` brings it back.

    Raises:
        ClusterError: no such cluster, or the launcher has no such node.
    """
    config = _load(state_dir)
    if config is None:
        raise ClusterError("lose-node", f"no cluster in {state_dir}")
    killed: list[str] = _launcher_node(config, node, "lose").get("killed", [])
    with sync_client(config, _server(config)) as client:
        response = client.patch(
            f"/api/v1/nodes/{node}",
            json={"metadata": {"annotations": {KWOK_NODE_ANNOTATION: None}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    if response.status_code not in (200, 404):
        raise ClusterError("lose-node", f"stopping the heartbeat of {node}: {response.text}")
    _say(f"node {node} lost: {len(killed)} pods killed")
    return killed


def restore_node(state_dir: Path, node: str, timeout: float = 60.0) -> None:
    """Bring a lost node back, as a new machine under its name; returns once it is Ready.

    Its Node is as ``up`` made it (created again if it was deleted), KWOK keeps its heartbeat
    again, and the launcher runs its pods.

    Raises:
        ClusterError: no such cluster or node, or the node not Ready within ``timeout``.
    """
    config = _load(state_dir)
    if config is None:
        raise ClusterError("restore-node", f"no cluster in {state_dir}")
    server = _server(config)
    address = server_address(config, config.network == "netns")
    objects = [n for n in kwok.node_objects(config, address) if n["metadata"]["name"] == node]
    if not objects:
        raise ClusterError("restore-node", f"no node {node!r} in the cluster's pools")
    with sync_client(config, server) as client:
        created = client.post("/api/v1/nodes", json=objects[0])
        if created.status_code == 409:
            created = client.patch(
                f"/api/v1/nodes/{node}",
                json={"metadata": {"annotations": objects[0]["metadata"]["annotations"]}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        if created.status_code not in (200, 201):
            raise ClusterError("restore-node", f"{node}: {created.text}")
        _launcher_node(config, node, "restore")
        deadline = time.monotonic() + timeout
        while not _node_ready(client.get(f"/api/v1/nodes/{node}").json()):
            if time.monotonic() > deadline:
                raise ClusterError("restore-node", f"{node} not Ready after {timeout:g}s")
            time.sleep(0.5)
    _say(f"node {node} restored and Ready")


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
