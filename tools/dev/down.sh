#!/usr/bin/env bash
# `make dev-down`: stop everything `make dev` started (the control plane, Prometheus, the
# launcher and every pod process, their network namespaces and the bridge) and remove the
# cluster's state; its logs stay in <state dir>/logs. Also cleans up after a crash, and is a
# no-op when nothing runs. Exit status 1 if a network namespace of the cluster survived.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

say "stopping the local cluster in $(shown "$INFERSCALE_CLUSTER_DIR")"
inferscale cluster down --name "$DEV_CLUSTER_NAME"
shopt -s nullglob
left=(/run/netns/"is-$DEV_CLUSTER_NAME-"*)
[[ ${#left[@]} == 0 ]] || die "network namespaces left behind: ${left[*]} (ip netns del NAME removes one)"
say "nothing of the cluster is left running"
