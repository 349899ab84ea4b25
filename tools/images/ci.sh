#!/usr/bin/env bash
# CI's one step for the images: install podman and the base's builder from Debian, then build the
# operator, router and sim images (tools/images/build.sh, base cached under ~/.cache/inferscale).
# e2e/test_images.py then runs them under the chart's security settings; it skips, saying why,
# on a machine where this script has not run. Needs root (apt-get) and `apt-get update` done.
set -euo pipefail
cd "$(dirname "$0")/../.."

# podman with its recommends: netavark, aardvark-dns and iptables publish ports; runc because
# crun fails on this host's cgroups; mmdebstrap builds the base from the apt mirror; containerd
# and the CNI plugins run the local cluster's container node (INFERSCALE_CONTAINER_NODE=1,
# e2e/test_container_node.py; docs/local-cluster.md).
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null \
  || ! command -v containerd >/dev/null || [[ ! -x /usr/lib/cni/bridge ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap containerd \
    containernetworking-plugins >/dev/null
fi
time bash tools/images/build.sh
