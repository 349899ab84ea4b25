"""``inferscale cluster up|down|status|env|logs``: the local Kubernetes of DESIGN.md section 5.

The state directory (``--dir``, else ``$INFERSCALE_CLUSTER_DIR``, else ``./.cluster``) holds
everything a cluster needs to be found again, so every subcommand but ``up`` takes no other
flags. Exit status 1 with the failing component's name and log tail when something fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from inferscale.cluster.config import CONTAINER_NODE_ENV, ClusterConfig, NodePool
from inferscale.cluster.process import ClusterError

DIR_ENV = "INFERSCALE_CLUSTER_DIR"


def state_dir(args: argparse.Namespace) -> Path:
    """The state directory the user chose, made absolute."""
    chosen = getattr(args, "dir", None) or os.environ.get(DIR_ENV) or ".cluster"
    return Path(chosen).absolute()


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--node-label wants KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def cmd_up(args: argparse.Namespace) -> int:
    """Start a cluster and print how to use it."""
    from inferscale.cluster.control import up

    pools = [
        NodePool(
            name="gpu",
            count=args.nodes,
            gpus=args.gpus,
            labels={"nvidia.com/gpu.product": "Simulated-GPU-80GB", **_labels(args.node_label)},
        )
    ]
    if args.kwok_nodes:
        pools.append(
            NodePool(
                name="kwok",
                count=args.kwok_nodes,
                gpus=args.gpus,
                runner="kwok",
                labels=_labels(args.node_label),
            )
        )
    config = ClusterConfig(
        state_dir=state_dir(args),
        name=args.name,
        port_base=args.port_base,
        pod_cidr=args.pod_cidr,
        network=args.network,
        pools=pools,
        scrape_interval=args.scrape_interval,
        image_map=str(Path(args.image_map).absolute()) if args.image_map else "",
        container_node=args.container_node,
    )
    try:
        started = up(config, assets=args.assets)
    except ClusterError as error:
        print(f"cluster up failed: {error}", file=sys.stderr)
        return 1
    print(f"cluster {config.name} is up in {started.seconds:.1f}s: {started.server}")
    print(f"  network: {started.config.network}; Prometheus: {started.config.prometheus_url}")
    print(f"  use it:  eval $(inferscale cluster env --dir {config.state_dir})")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop everything and remove the state (the logs stay)."""
    from inferscale.cluster.control import down

    expected = ClusterConfig(state_dir=state_dir(args), name=args.name) if args.name else None
    done = down(state_dir(args), quiet=True, expected=expected)
    for line in done:
        print(line)
    print("cluster is down" if done else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the components, nodes and pod count; exit 1 unless everything runs."""
    from inferscale.cluster.control import status

    report: dict[str, Any] = status(state_dir(args))
    print(json.dumps(report, indent=2))
    return 0 if report.get("running") else 1


def cmd_restart(args: argparse.Namespace) -> int:
    """Stop one control-plane component, keep it down a while, start it again as it was."""
    from inferscale.cluster.control import restart

    try:
        record = restart(state_dir(args), args.component, args.down_seconds)
    except ClusterError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{args.component} serves again (pid {record.pid})")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    """Lose a launcher node as when its machine dies, or bring it back."""
    from inferscale.cluster.control import lose_node, restore_node

    try:
        if args.action == "lose":
            killed = lose_node(state_dir(args), args.node)
            print(f"{args.node} lost; pods killed: {', '.join(killed) or 'none'}")
        else:
            restore_node(state_dir(args), args.node)
            print(f"{args.node} back and Ready")
    except ClusterError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print shell exports for kubectl, helm and the tests."""
    from inferscale.cluster.control import env_lines

    try:
        lines = env_lines(state_dir(args))
    except ClusterError as error:
        print(error, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a pod's container logs (or a component's, with --component)."""
    base = state_dir(args) / "logs"
    if args.component:
        files = [base / f"{args.pod}.log"]
    else:
        folder = base / "pods" / f"{args.namespace}_{args.pod}"
        pattern = f"{args.container}.log" if args.container else "*.log"
        files = sorted(folder.glob(pattern))
    files = [f for f in files if f.is_file()]
    if not files:
        print(f"no logs for {args.pod} under {base}", file=sys.stderr)
        return 1
    for path in files:
        if len(files) > 1:
            print(f"==> {path.stem} <==")
        sys.stdout.write(path.read_text(errors="replace"))
    return 0


def register(subparsers: Any) -> None:
    """Add ``cluster`` and its subcommands to the CLI."""
    cluster = subparsers.add_parser(
        "cluster", help="a local Kubernetes without Docker (control plane, KWOK, pod launcher)"
    )
    where = f"state directory (default ${DIR_ENV} or ./.cluster)"
    cluster.add_argument("--dir", help=where)
    # --dir also after the action; SUPPRESS keeps a subparser from resetting the one before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help=where)
    sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")

    p = sub.add_parser("up", help="start the cluster", parents=[common])
    p.add_argument("--name", default="dev", help="distinguishes clusters on one machine")
    p.add_argument("--port-base", type=int, default=16443, help="API server port; 7 more follow")
    p.add_argument("--pod-cidr", default="10.244.0.0/16", help="pod range (this machine only)")
    p.add_argument("--network", choices=["auto", "netns", "loopback"], default="auto")
    p.add_argument("--nodes", type=int, default=2, help="launcher nodes (pods really run)")
    p.add_argument("--gpus", type=int, default=4, help="nvidia.com/gpu per node")
    p.add_argument("--kwok-nodes", type=int, default=0, help="extra nodes whose pods only exist")
    p.add_argument("--node-label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--scrape-interval", type=float, default=15.0, help="seconds")
    p.add_argument("--image-map", help="extra image map (YAML, like cluster/images.yaml)")
    p.add_argument(
        "--container-node",
        action="store_true",
        default=os.environ.get(CONTAINER_NODE_ENV) == "1",
        help=f"add a kubelet node whose pods run in containerd (also ${CONTAINER_NODE_ENV}=1)",
    )
    p.add_argument("--assets", help="directory with the binaries (default: build or cache)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", parents=[common], help="stop everything, also after a crash")
    p.add_argument(
        "--name",
        help="when the state directory is gone: remove the network namespaces and bridge "
        "that a cluster of this name left behind",
    )
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", parents=[common], help="components, nodes, pods")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "restart",
        parents=[common],
        help="restart etcd, the API server or Prometheus (rehearse an outage)",
    )
    p.add_argument("component", choices=["etcd", "kube-apiserver", "prometheus"])
    p.add_argument(
        "--down-seconds", type=float, default=0.0, help="how long it stays down (default 0)"
    )
    p.set_defaults(func=cmd_restart)
    p = sub.add_parser(
        "node",
        parents=[common],
        help="lose a launcher node (its pods killed, its heartbeat stopped) or restore it",
    )
    p.add_argument("action", choices=["lose", "restore"])
    p.add_argument("node", help="a launcher node's name (see `inferscale cluster status`)")
    p.set_defaults(func=cmd_node)
    p = sub.add_parser("env", parents=[common], help="print shell exports (KUBECONFIG, PATH)")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("logs", parents=[common], help="print a pod's logs")
    p.add_argument("pod", help="pod name (or component name with --component)")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-c", "--container", help="one container only")
    p.add_argument("--component", action="store_true", help="a control-plane component's log")
    p.set_defaults(func=cmd_logs)
