"""The container node: a real kubelet whose pods run in containerd with runc (opt-in).

Beside the launcher's nodes (pods as local processes) and KWOK's (pods that only exist), a
cluster brought up with ``container_node=True`` (``INFERSCALE_CONTAINER_NODE=1``) gets one node,
``containers-0``, run by the upstream kubelet of the same release against a containerd of its
own, so ``helm install`` can run the operator and the routers as real containers from the images
``make images`` builds (no registry: they are copied in with ``podman save --format
oci-archive`` and ``ctr images import``). What this host needs, measured:

- cgroup v1 controllers with a cgroup2 mount beside them: the kubelet of v1.36 refuses cgroup
  v1 unless ``failCgroupV1: false``; the driver is cgroupfs (no systemd here), under a
  ``cgroupRoot`` of the cluster's own so two clusters never share ``/kubepods``.
- runc (crun refuses the hybrid cgroups).
- Pod network: the CNI bridge plugin puts each pod on the cluster's own bridge, with addresses
  from the node's /24 of the pod range, so container pods, launcher pods, the API server and
  this machine reach each other as in netns mode. Nothing runs kube-proxy: one DNAT rule sends
  the ``kubernetes`` Service's address (what in-cluster clients use) to the API server, for
  packets from this node's pods only.
- Images: the kubelet never pulls (``imagePullPolicy: IfNotPresent`` finds them) and never
  garbage-collects them (the thresholds are 100%): they could not come back.

containerd's content and snapshots are kept outside the state directory (in the cache,
one folder per cluster name) so that an image is imported once, not at every ``up``; what
``down`` removes is the node's runtime state, its containers and their mounts and cgroups.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import inferscale
from inferscale.cluster.config import POOL_LABEL, RUNNER_LABEL, ClusterConfig
from inferscale.cluster.kubeapi import sync_client
from inferscale.cluster.process import ClusterError

#: The node's name and pool; its pods are the chart's when told to tolerate the taint.
NODE_NAME = "containers-0"
POOL = "containers"
#: Keeps every pod that does not ask for real containers off the node.
TAINT = {"key": "inferscale.io/containers", "value": "true", "effect": "NoSchedule"}
#: The images the node gets from podman (``make images``), the sandbox ("pause") image first.
IMAGES = tuple(
    f"ghcr.io/inferscale/{name}:{inferscale.__version__}"
    for name in ("pause", "operator", "router", "sim")
)
PAUSE_IMAGE = IMAGES[0]
#: The ``kubernetes`` Service's address and port, where in-cluster clients look for the server.
API_SERVICE_PORT = 443
CTR_TIMEOUT = 120.0
#: How long ``down`` waits for the kubelet to stop the node's pods before it kills them.
DRAIN_SECONDS = 30.0


class Paths:
    """Where the container node keeps its files (runtime state in the cluster's directory)."""

    def __init__(self, config: ClusterConfig, cache: Path | None = None) -> None:
        """Lay out the node's folders for ``config``; ``cache`` holds containerd's images."""
        base = config.state_dir / "containers"
        self.base = base
        self.containerd_state = base / "containerd-state"
        self.socket = base / "containerd.sock"
        self.runc_root = base / "runc"
        self.containerd_config = base / "containerd.toml"
        self.cni_conf_dir = base / "cni" / "net.d"
        self.cni_ipam_dir = base / "cni" / "ipam"
        self.kubelet_root = base / "kubelet"
        self.kubelet_config = base / "kubelet.yaml"
        self.kubeconfig = base / "kubelet.kubeconfig"
        self.resolv_conf = base / "resolv.conf"
        self.pod_logs = config.log_dir / "container-pods"
        cache_root = cache or Path(
            os.environ.get("INFERSCALE_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inferscale"
        )
        self.containerd_root = cache_root / "containerd" / config.name


def kubelet_port(config: ClusterConfig) -> int:
    """The kubelet's API port (logs, exec): the 9th port of the cluster's range."""
    return config.port_base + 8


def kubelet_healthz_port(config: ClusterConfig) -> int:
    """The kubelet's plain-HTTP health port, on loopback."""
    return config.port_base + 9


def cgroup_root(config: ClusterConfig) -> str:
    """The cgroup under which the kubelet puts its pods (one per cluster on this machine)."""
    return f"/inferscale-{config.name}"


def node_pod_cidr(config: ClusterConfig) -> str:
    """The node's /24: the one after the launcher nodes' in the pod range."""
    return config.node_pod_cidr(len(config.launcher_node_names()))


def node_labels(config: ClusterConfig) -> dict[str, str]:
    """The labels the kubelet registers its node with."""
    return {POOL_LABEL: POOL, RUNNER_LABEL: "containerd"}


def render_containerd_config(paths: Paths) -> str:
    """The configuration of containerd 1.6 (TOML, version 2): CRI with runc and our CNI folders."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    disabled = [
        f"io.containerd.snapshotter.v1.{name}" for name in ("aufs", "btrfs", "zfs", "devmapper")
    ]
    lines = [
        "version = 2",
        f"root = {json.dumps(str(paths.containerd_root))}",
        f"state = {json.dumps(str(paths.containerd_state))}",
        f"disabled_plugins = {json.dumps([*disabled, 'io.containerd.tracing.processor.v1.otlp'])}",
        "[grpc]",
        f"  address = {json.dumps(str(paths.socket))}",
        "[ttrpc]",
        f"  address = {json.dumps(str(paths.socket) + '.ttrpc')}",
        "[metrics]",
        '  address = ""',
        f"[{cri}]",
        f"  sandbox_image = {json.dumps(PAUSE_IMAGE)}",
        # The kubelet streams logs and exec through this server: loopback, any free port.
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        # The kubelet asks for negative oom_score_adj values (-998 for sandboxes); this host
        # withholds CAP_SYS_RESOURCE from root, so runc fails ("nsexec: failed to update
        # /proc/self/oom_score_adj: Permission denied"): no lower than containerd's own.
        "  restrict_oom_score_adj = true",
        f"[{cri}.containerd]",
        '  default_runtime_name = "runc"',
        '  snapshotter = "overlayfs"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        # No systemd on these machines: cgroupfs, like the kubelet's driver.
        "  SystemdCgroup = false",
        # runc's own state beside containerd's, not in the machine-wide /run/containerd/runc.
        f"  Root = {json.dumps(str(paths.runc_root))}",
        f"[{cri}.cni]",
        f"  bin_dir = {json.dumps(_cni_bin_dir())}",
        f"  conf_dir = {json.dumps(str(paths.cni_conf_dir))}",
    ]
    return "\n".join(lines) + "\n"


def _cni_bin_dir() -> str:
    """Debian's containernetworking-plugins live in /usr/lib/cni; upstream's in /opt/cni/bin."""
    for candidate in ("/usr/lib/cni", "/opt/cni/bin"):
        if Path(candidate, "bridge").exists():
            return candidate
    return "/usr/lib/cni"


def render_cni_config(config: ClusterConfig, paths: Paths) -> dict[str, Any]:
    """A CNI network that attaches pods to the cluster's bridge, addressed from the node's /24.

    The bridge already holds the gateway address (``network.setup_bridge``): the plugin must
    not take it (``isGateway: false``) but route through it.
    """
    node_net = ipaddress.ip_network(node_pod_cidr(config))
    return {
        "cniVersion": "1.0.0",
        "name": f"inferscale-{config.name}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": config.bridge_name,
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": config.pod_cidr,
                                "rangeStart": str(node_net[2]),
                                "rangeEnd": str(node_net[-2]),
                                "gateway": config.gateway_ip,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def render_kubelet_config(config: ClusterConfig, paths: Paths, ca_file: Path) -> dict[str, Any]:
    """The KubeletConfiguration: this host's cgroups, our ports, no image GC, no evictions."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This host mounts cgroup v1 controllers (with a cgroup2 mount beside them); v1.36
        # refuses to start on cgroup v1 unless told not to.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(config),
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "address": config.gateway_ip,
        "port": kubelet_port(config),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": kubelet_healthz_port(config),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "failSwapOn": False,
        "registerWithTaints": [TAINT],
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet_root / "volume-plugins"),
        # The images were imported from podman and cannot be pulled back: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared development machine's disk is often fuller than a node's thresholds allow.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "maxPods": 30,
        "serializeImagePulls": False,
    }


def kubelet_argv(config: ClusterConfig, paths: Paths, assets: Path) -> list[str]:
    """The kubelet's command line (everything else is in its configuration file)."""
    labels = ",".join(f"{k}={v}" for k, v in node_labels(config).items())
    return [
        str(assets / "kubelet"),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.kubelet_root / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={config.gateway_ip}",
        f"--node-labels={labels}",
        "--v=1",
    ]


def containerd_argv(paths: Paths) -> list[str]:
    """The command line of containerd."""
    return [_require("containerd"), f"--config={paths.containerd_config}"]


def _require(command: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise ClusterError(
            "containers",
            f"{command} is missing: apt-get install containerd runc containernetworking-plugins "
            "(the container node needs them; see docs/local-cluster.md)",
        )
    return found


def missing_prerequisites(assets: Path | None = None) -> list[str]:
    """What this machine lacks for a container node (empty when it can run one)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (containerd and the kubelet run as root)")
    for command in ("containerd", "ctr", "runc", "podman", "iptables"):
        if shutil.which(command) is None:
            out.append(f"the {command} command")
    if not Path(_cni_bin_dir(), "bridge").exists():
        out.append("the CNI plugins (apt-get install containernetworking-plugins)")
    if assets is not None and not os.access(assets / "kubelet", os.X_OK):
        out.append(f"{assets / 'kubelet'} (bash tools/kube/build.sh kubelet)")
    return out


def write_files(config: ClusterConfig, paths: Paths, ca_file: Path) -> None:
    """containerd's, the CNI plugin's and the kubelet's configuration files."""
    for folder in (paths.base, paths.containerd_root, paths.cni_conf_dir, paths.pod_logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(render_containerd_config(paths))
    cni = render_cni_config(config, paths)
    (paths.cni_conf_dir / "10-inferscale.conflist").write_text(json.dumps(cni, indent=2))
    kubelet = render_kubelet_config(config, paths, ca_file)
    paths.kubelet_config.write_text(json.dumps(kubelet, indent=2))
    # Pods get no DNS (as in netns mode): a lookup fails at once instead of waiting out a
    # resolver that their namespace cannot reach.
    paths.resolv_conf.write_text("# inferscale local pod network: no DNS\noptions attempts:1\n")


def ctr(paths: Paths, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ctr -n k8s.io ARGS`` against the node's containerd (bounded)."""
    argv = [_require("ctr"), "--address", str(paths.socket), "-n", "k8s.io", *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=CTR_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ClusterError("containerd", f"ctr {' '.join(args)} hung") from error
    if check and done.returncode != 0:
        raise ClusterError("containerd", f"ctr {' '.join(args)}: {done.stderr.strip()}")
    return done


def containerd_ready(paths: Paths) -> bool:
    """True once containerd answers on its socket."""
    return paths.socket.exists() and ctr(paths, "version", check=False).returncode == 0


def service_dnat_rule(config: ClusterConfig) -> list[str]:
    """The iptables rule (nat PREROUTING) from the ``kubernetes`` Service to the API server.

    Only packets from this node's pods match, so clusters on one machine never meet.
    """
    service_ip = str(ipaddress.ip_network(config.service_cidr)[1])
    return [
        "PREROUTING",
        "-s", node_pod_cidr(config),
        "-d", f"{service_ip}/32",
        "-p", "tcp",
        "--dport", str(API_SERVICE_PORT),
        "-m", "comment", "--comment", f"inferscale-{config.name} kubernetes service",
        "-j", "DNAT",
        "--to-destination", f"{config.gateway_ip}:{config.apiserver_port}",
    ]  # fmt: skip


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_require("iptables"), "-w", "5", "-t", "nat", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def add_service_rule(config: ClusterConfig) -> None:
    """Install the DNAT rule once (``-C`` first: ``up`` after a crash finds it there)."""
    rule = service_dnat_rule(config)
    if _iptables("-C", *rule).returncode == 0:
        return
    done = _iptables("-A", *rule)
    if done.returncode != 0:
        raise ClusterError("containers", f"iptables -A {' '.join(rule)}: {done.stderr.strip()}")


def remove_service_rule(config: ClusterConfig) -> bool:
    """Delete the DNAT rule (every copy); True if one was there."""
    removed = False
    for _ in range(10):  # bounded: each round deletes one copy
        if shutil.which("iptables") is None:
            break
        if _iptables("-D", *service_dnat_rule(config)).returncode != 0:
            break
        removed = True
    return removed


def task_ids(paths: Paths) -> list[str]:
    """The containers that containerd runs for the node (sandboxes included)."""
    if not containerd_ready(paths):
        return []
    return ctr(paths, "tasks", "ls", "-q", check=False).stdout.split()


def kill_tasks(paths: Paths) -> list[str]:
    """SIGKILL every task containerd still runs; the ones that were killed."""
    killed = task_ids(paths)
    for task in killed:
        ctr(paths, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
    return killed


def kill_cgroup(config: ClusterConfig, root: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """SIGKILL every process left in the node's cgroups, then remove them (deepest first)."""
    killed: list[int] = []
    folders = [d for d in root.glob(f"*{cgroup_root(config)}") if d.is_dir()]
    for folder in folders:
        for procs in folder.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in map(int, procs.read_text().split()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
    if killed:
        time.sleep(0.5)
    for folder in folders:
        for sub in sorted((d for d in folder.rglob("*") if d.is_dir()), key=_depth, reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()
    return killed


def _depth(path: Path) -> int:
    return len(path.parts)


def unmount_under(folders: list[Path], mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Unmount every mount point below ``folders`` (deepest first); the ones unmounted."""
    points = []
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            fields = line.split(" ")
            if len(fields) > 4:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
                if any(point.startswith(f"{folder}/") for folder in folders):
                    points.append(point)
    done = []
    for point in sorted(set(points), key=len, reverse=True):
        result = subprocess.run(
            ["umount", "-l", point], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode == 0:
            done.append(point)
    return done


def shim_pids(paths: Paths, proc: Path = Path("/proc")) -> list[int]:
    """The runc shims of this node's containerd (their command line names its socket)."""
    address = str(paths.socket)
    out = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address.encode() in argv:
                out.append(int(entry.name))
    return out


def cleanup(config: ClusterConfig, paths: Paths | None = None) -> list[str]:
    """Remove what the node leaves on the machine once its kubelet and containerd stopped.

    Idempotent, so that ``down`` cleans up after a crash too: the containers' processes (by
    cgroup) and shims, the mounts under the node's folders, its cgroups and the DNAT rule.
    """
    paths = paths or Paths(config)
    done = []
    for pid in kill_cgroup(config):
        done.append(f"killed container process {pid}")
    for pid in shim_pids(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed containerd shim {pid}")
    done += [f"unmounted {p}" for p in unmount_under([paths.base, paths.containerd_root])]
    if remove_service_rule(config):
        done.append("removed the kubernetes Service's DNAT rule")
    return done


def prepare_cgroups(config: ClusterConfig, root: Path = Path("/sys/fs/cgroup")) -> None:
    """Create the kubelet's cgroupRoot in every hierarchy (the kubelet refuses a missing one).

    A new cpuset cgroup starts with no CPUs and no memory nodes, where no process may join:
    it gets its parent's.
    """
    name = cgroup_root(config).lstrip("/")
    for hierarchy in sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []:
        target = hierarchy / name
        with contextlib.suppress(FileExistsError):
            target.mkdir()
        for knob in ("cpuset.cpus", "cpuset.mems"):
            parent, child = hierarchy / knob, target / knob
            if parent.exists() and child.exists() and not child.read_text().strip():
                child.write_text(parent.read_text())


def _imported_marker(paths: Paths, image: str) -> Path:
    return paths.containerd_root / "imported" / re.sub(r"[^A-Za-z0-9_.-]", "_", image)


def podman_image_id(image: str) -> str | None:
    """The podman ID of ``image``, or None when podman does not have it."""
    done = subprocess.run(
        [_require("podman"), "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def import_images(paths: Paths, images: list[str], say: Callable[[str], None] = print) -> list[str]:
    """Copy ``images`` from podman into the node's containerd; the ones that were copied.

    An image whose podman ID was imported before (a marker beside containerd's content) is
    skipped: the first import of the four images took 5.7 min on a busy 2-core machine.

    Raises:
        ClusterError: podman lacks an image (``make images`` builds them) or the copy failed.
    """
    copied = []
    for image in images:
        image_id = podman_image_id(image)
        if image_id is None:
            raise ClusterError(
                "containers", f"podman has no image {image}: run `make images` first"
            )
        marker = _imported_marker(paths, image)
        if marker.exists() and marker.read_text() == image_id:
            listed = ctr(paths, "images", "ls", "-q", check=False).stdout.split()
            if image in listed:
                continue
        say(f"importing {image} into the container node's containerd")
        archive = paths.base / "image.tar"
        try:
            subprocess.run(
                [_require("podman"), "save", "--format", "oci-archive", "-o", str(archive), image],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            ctr(paths, "images", "import", "--base-name", image.rsplit(":", 1)[0], str(archive))
        except subprocess.CalledProcessError as error:
            raise ClusterError("containers", f"podman save {image}: {error.stderr}") from error
        finally:
            archive.unlink(missing_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(image_id)
        copied.append(image)
    return copied


def node_ready(client: httpx.Client) -> bool:
    """True once the kubelet registered the node and reports it Ready (runtime, CNI)."""
    response = client.get(f"/api/v1/nodes/{NODE_NAME}")
    if response.status_code != 200:
        return False
    conditions = response.json().get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def drain(config: ClusterConfig, server: str) -> list[str]:
    """Cordon the node and delete its pods, then wait (bounded) until containerd runs none.

    The kubelet stops them properly (SIGTERM, CNI teardown, unmounts) while it still runs;
    ``cleanup`` kills whatever is left after ``DRAIN_SECONDS``.
    """
    paths = Paths(config)
    done = []
    with contextlib.suppress(httpx.HTTPError, OSError), sync_client(config, server) as client:
        client.patch(
            f"/api/v1/nodes/{NODE_NAME}",
            json={"spec": {"unschedulable": True}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        pods = client.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={NODE_NAME}"})
        for pod in pods.json().get("items", []) if pods.status_code == 200 else []:
            meta = pod["metadata"]
            client.request(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                json={"gracePeriodSeconds": 2},
            )
            done.append(f"deleted pod {meta['namespace']}/{meta['name']} on {NODE_NAME}")
    deadline = time.monotonic() + DRAIN_SECONDS
    while task_ids(paths) and time.monotonic() < deadline:
        time.sleep(0.5)
    return done
