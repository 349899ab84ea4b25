#!/usr/bin/env bash
# Settings shared by the kind scripts (sourced, not run). Override any of them in the
# environment: CLUSTER=demo GPUS_PER_NODE=8 e2e/kind/up.sh
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${CLUSTER:-inferscale}
CONTEXT="kind-$CLUSTER"
NAMESPACE=${NAMESPACE:-inferscale-system}
RELEASE=${RELEASE:-inferscale}
MONITORING_NAMESPACE=${MONITORING_NAMESPACE:-monitoring}
# kube-prometheus-stack's release name: its Prometheus selects ServiceMonitors and PodMonitors
# labelled release=<this>, as charts/inferscale/ci/kind-values.yaml labels ours.
PROMETHEUS_RELEASE=${PROMETHEUS_RELEASE:-prometheus}
# Fake GPUs per worker node, and per sim replica (0 lets the sim run without any).
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
GPUS_PER_REPLICA=${GPUS_PER_REPLICA:-1}
# Images are built locally with this tag and loaded into the nodes, never pulled.
TAG=${TAG:-dev}
IMAGES=(operator router sim)
# Where `kubectl port-forward` exposes the router on this machine.
LOCAL_PORT=${LOCAL_PORT:-8080}
INFERSCALE=${INFERSCALE:-inferscale}

say() { printf '\033[1m[kind %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { say "missing: $tool (see docs/install.md, kind quick start)"; exit 1; }
  done
}

kc() { kubectl --context "$CONTEXT" "$@"; }
