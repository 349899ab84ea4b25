#!/usr/bin/env bash
# `make dev`: the local cluster (no Docker, no GPU), the inferscale chart installed into it with
# Helm, the sim example model, and a two-minute load test through the router that shows the
# model scaling up and back down. The cluster keeps running afterwards; `make dev-down` (down.sh)
# removes it. Running it again reuses the cluster, upgrades the release and reruns the load test.
#
#   make dev                 # what the README's first command runs (install + binaries first)
#   DEV_SHORT=1 make dev     # a 38 s load test with shorter autoscaling windows
#
# Exit status: 0 when the load test saw a scale-up and a scale-down and no request failed
# (`inferscale loadtest --expect-scaling --max-error-ratio 0`), else non-zero with the reason.
# Every wait is bounded. Settings: tools/dev/common.sh. Guide: docs/dev.md.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

# --- the cluster -------------------------------------------------------------------------------
cluster_dir=$(shown "$INFERSCALE_CLUSTER_DIR")
if inferscale cluster status >/dev/null 2>&1; then
  say "reusing the local cluster running from $cluster_dir"
  read -r network scrape < <("$DEV_PYTHON" -c 'import json, sys
config = json.load(open(sys.argv[1]))
print(config["network"], config["scrape_interval"])' "$INFERSCALE_CLUSTER_DIR/cluster.json")
  [[ "$network" == netns ]] || die "that cluster gives pods loopback addresses, where the chart's
    routers and the sim replicas would contend for the same ports: \`make dev-down\`, then \`make dev\` as root"
  [[ "$scrape" == 2.0 ]] || say "note: its Prometheus scrapes every ${scrape}s (make dev uses 2 s); scaling reacts later"
else
  # Pods need network namespaces of their own: in the loopback fallback every router and sim
  # replica would bind the same host ports (docs/local-cluster.md, "Pod network").
  [[ "$(id -u)" == 0 ]] || die "make dev needs root: the local cluster gives each pod a network namespace
    (ip netns), which only root may create"
  say "starting the local cluster in $cluster_dir (name $DEV_CLUSTER_NAME, ports $DEV_PORT_BASE-$((DEV_PORT_BASE + 7)), pods $DEV_POD_CIDR)"
  inferscale cluster up --name "$DEV_CLUSTER_NAME" --port-base "$DEV_PORT_BASE" \
    --pod-cidr "$DEV_POD_CIDR" --network netns --scrape-interval 2 \
    || die "the local cluster did not start (the reason is above). A port in use: another program or
    cluster holds it (DEV_PORT_BASE=21443 make dev moves all 8 ports); a cluster half up or stale
    state: \`make dev-down\` clears it"
fi
# KUBECONFIG, kubectl and helm on PATH, INFERSCALE_PROMETHEUS_URL.
env_lines=$(inferscale cluster env) || die "cannot read the cluster's settings in $cluster_dir"
eval "$env_lines"
command -v helm >/dev/null || die "helm is missing from the cluster's binaries: run \`make kube-binaries\`"

# --- the chart ---------------------------------------------------------------------------------
# The launcher runs the chart's images (ghcr.io/inferscale/operator, router, sim) as local
# processes (inferscale/cluster/images.yaml), so no image needs building or pulling. The operator
# reads load from the cluster's Prometheus and decides every second. No bundled Redis: the local
# cluster has no DNS for its Service name (docs/access.md), and the demo sets no client limits.
say "installing the chart as release $DEV_RELEASE in $DEV_NAMESPACE (helm upgrade --install --wait)"
read -r -a extra_helm_args <<<"$DEV_HELM_ARGS"
helm upgrade --install "$DEV_RELEASE" "$REPO/charts/inferscale" \
  -n "$DEV_NAMESPACE" --create-namespace \
  --set fullnameOverride="$DEV_RELEASE" \
  --set operator.settings.autoscaler.prometheusUrl="$INFERSCALE_PROMETHEUS_URL" \
  --set operator.settings.autoscaler.intervalSeconds=1 \
  --set router.drainSeconds=1 \
  --set redis.mode=none \
  "${extra_helm_args[@]}" \
  --wait --timeout 180s >/dev/null \
  || die "helm did not get the operator and routers Ready within 180 s; look at
    kubectl -n $DEV_NAMESPACE get pods
    $(shown "$DEV_PYTHON") -m inferscale cluster logs -n $DEV_NAMESPACE <pod>"

# --- the model ---------------------------------------------------------------------------------
say "applying examples/sim-model.yaml as $DEV_MODEL_NAMESPACE/$MODEL with the demo's autoscaling settings"
kubectl patch --local -f "$REPO/examples/sim-model.yaml" --type merge -p "$MODEL_PATCH" -o yaml \
  | kubectl apply -n "$DEV_MODEL_NAMESPACE" -f - >/dev/null
kubectl -n "$DEV_MODEL_NAMESPACE" wait --for=condition=Ready "inferencemodel/$MODEL" --timeout=120s >/dev/null \
  || die "$MODEL is not Ready after 120 s: kubectl -n $DEV_MODEL_NAMESPACE describe inferencemodel $MODEL"

# --- the router --------------------------------------------------------------------------------
# The local cluster has no kube-proxy, so the router Service's address leads nowhere: use a ready
# router pod's address from the Service's EndpointSlices (what kube-proxy would pick from).
router_ip=$(kubectl -n "$DEV_NAMESPACE" get endpointslices -l "kubernetes.io/service-name=$DEV_RELEASE-router" \
  -o jsonpath='{range .items[*].endpoints[*]}{.conditions.ready}{" "}{.addresses[0]}{"\n"}{end}' \
  | awk '$1 == "true" { print $2; exit }')
[[ -n "$router_ip" ]] || die "service/$DEV_RELEASE-router has no ready endpoint: kubectl -n $DEV_NAMESPACE get pods"
ROUTER_URL="http://$router_ip:$ROUTER_PORT"
# The routers learn the model from the operator's push, within a second of Ready.
"$DEV_PYTHON" - "$ROUTER_URL" "$SERVED" 60 <<'PY' || die "the router at $ROUTER_URL does not route $SERVED"
import json, sys, time, urllib.request

url, served, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod IPs: no proxy
deadline, last = time.monotonic() + timeout, "no answer"
while time.monotonic() < deadline:
    try:
        with opener.open(f"{url}/v1/models", timeout=2) as response:
            ids = [m["id"] for m in json.load(response)["data"]]
        if served in ids:
            sys.exit(0)
        last = f"it lists {ids}"
    except (OSError, ValueError, KeyError, TypeError) as error:
        last = str(error)
    time.sleep(0.5)
print(f"{url}/v1/models after {timeout:.0f}s: {last}", file=sys.stderr)
sys.exit(1)
PY

# --- the load test -----------------------------------------------------------------------------
say "load test through the router at $ROUTER_URL: stages $STAGES (requests/s); $MODEL should go from 1 replica to 3-4 and back"
loadtest_status=0
inferscale loadtest --url "$ROUTER_URL" --model "$SERVED" --stages "$STAGES" \
  --namespace "$DEV_MODEL_NAMESPACE" --expect-scaling --max-error-ratio 0 \
  --json-file "$LOADTEST_JSON" || loadtest_status=$?

# --- how to reach it ---------------------------------------------------------------------------
venv_bin=$(shown "$(dirname "$DEV_PYTHON")")
cat <<MSG

inferscale runs on the local cluster in $cluster_dir (\`make dev-down\` removes it; \`make dev\` again reruns the load test).

kubectl (and helm) on the cluster:
  eval "\$($venv_bin/inferscale cluster env)"
  kubectl get inferencemodels -A
  kubectl -n $DEV_NAMESPACE get pods -o wide
  $venv_bin/inferscale top

The OpenAI API, through a router pod (no kube-proxy here: the Service address is not routed):
  $venv_bin/python - <<'PY'
  from openai import OpenAI

  client = OpenAI(base_url="$ROUTER_URL/v1", api_key="unused")
  answer = client.chat.completions.create(
      model="$SERVED", messages=[{"role": "user", "content": "Hello!"}], max_tokens=16
  )
  print(answer.choices[0].message.content)
  PY

Load it again:  $venv_bin/inferscale loadtest --url $ROUTER_URL --stages 30s@12 -n $DEV_MODEL_NAMESPACE
The run's summary as JSON: $(shown "$LOADTEST_JSON")
MSG
if [[ "$loadtest_status" != 0 ]]; then
  die "the load test failed (exit $loadtest_status; the summary above says why); the cluster is left running to look at: kubectl -n $DEV_MODEL_NAMESPACE describe inferencemodel $MODEL"
fi
