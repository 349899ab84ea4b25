#!/usr/bin/env bash
# The kind quick start, for a machine with Docker: a kind cluster whose workers advertise fake
# nvidia.com/gpu capacity, inferscale's images built here and loaded into it, Prometheus and
# Grafana (kube-prometheus-stack), the inferscale chart, and the sim example model.
#
#   e2e/kind/up.sh      # ~5 minutes the first time (image builds, chart downloads)
#   e2e/kind/demo.sh    # load test through the router while the model scales
#   e2e/kind/down.sh    # delete the cluster
#
# Needs docker, kind, kubectl and helm (3.14 or later) on PATH. Re-running it is safe: each
# step updates what is there.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
need docker kind kubectl helm

if kind get clusters | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists; reusing it"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$REPO/e2e/kind/kind-config.yaml" --wait 120s
fi

# Fake GPUs: an extended resource advertised in the node status, as the Kubernetes docs'
# "Advertise Extended Resources for a Node" does. The scheduler counts it like a device
# plugin's; the sim needs no device behind it.
for node in $(kc get nodes -l inferscale.io/node-pool=gpu -o name); do
  say "advertising $GPUS_PER_NODE nvidia.com/gpu on $node"
  kc patch "$node" --subresource=status --type=json -p "[
    {\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$GPUS_PER_NODE\"},
    {\"op\": \"add\", \"path\": \"/status/allocatable/nvidia.com~1gpu\", \"value\": \"$GPUS_PER_NODE\"}]"
  kc label --overwrite "$node" nvidia.com/gpu.product=Fake-GPU-80GB >/dev/null
done

for image in "${IMAGES[@]}"; do
  say "building ghcr.io/inferscale/$image:$TAG"
  docker build --quiet -f "$REPO/images/$image/Dockerfile" -t "ghcr.io/inferscale/$image:$TAG" "$REPO" >/dev/null
  kind load docker-image --name "$CLUSTER" "ghcr.io/inferscale/$image:$TAG"
done

say "installing kube-prometheus-stack (Prometheus, Grafana, prometheus-operator) as $PROMETHEUS_RELEASE"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null 2>&1 || true
helm repo update prometheus-community >/dev/null
helm upgrade --install "$PROMETHEUS_RELEASE" prometheus-community/kube-prometheus-stack \
  --kube-context "$CONTEXT" -n "$MONITORING_NAMESPACE" --create-namespace \
  --set grafana.sidecar.dashboards.searchNamespace=ALL \
  --set prometheus.prometheusSpec.scrapeInterval=5s \
  --wait --timeout 10m

say "installing the inferscale chart as $RELEASE in $NAMESPACE"
helm upgrade --install "$RELEASE" "$REPO/charts/inferscale" \
  --kube-context "$CONTEXT" -n "$NAMESPACE" --create-namespace \
  -f "$REPO/charts/inferscale/ci/kind-values.yaml" --set fullnameOverride="$RELEASE" \
  --set operator.settings.autoscaler.prometheusUrl="http://$PROMETHEUS_RELEASE-kube-prometheus-prometheus.$MONITORING_NAMESPACE:9090" \
  --wait --timeout 5m

say "applying examples/sim-model.yaml ($GPUS_PER_REPLICA fake GPU per replica)"
kc apply -f "$REPO/examples/sim-model.yaml"
if [[ "$GPUS_PER_REPLICA" != 0 ]]; then
  kc patch inferencemodel sim-llama --type merge \
    -p "{\"spec\": {\"resources\": {\"gpus\": $GPUS_PER_REPLICA}}}"
fi

cat >&2 <<MSG

inferscale is running on kind cluster $CLUSTER (kubectl context $CONTEXT).

  kubectl --context $CONTEXT get inferencemodels -A
  kubectl --context $CONTEXT -n $NAMESPACE port-forward service/$RELEASE-router $LOCAL_PORT:80
  curl http://127.0.0.1:$LOCAL_PORT/v1/models

Grafana (admin / prom-operator), dashboard "inferscale":
  kubectl --context $CONTEXT -n $MONITORING_NAMESPACE port-forward service/$PROMETHEUS_RELEASE-grafana 3000:80

Next: e2e/kind/demo.sh runs a load test and shows the model scaling.
MSG
