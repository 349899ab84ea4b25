#!/usr/bin/env bash
# Build the local cluster's upstream binaries from Go modules, cached outside the repository.
#
#   kube     kube-apiserver, kube-controller-manager, kube-scheduler and etcd in one binary
#            (busybox-style: one component per process, chosen by argv[0]), with the version
#            ldflags set so /version reports the real release.
#   kwok     KWOK's controller, for simulated nodes.
#
# The cache directory is keyed by a hash of this folder's inputs, so an unchanged checkout reuses
# the binaries in seconds and any change to go.mod, go.sum or main.go rebuilds them.
# INFERSCALE_KUBE_ASSETS (like envtest's KUBEBUILDER_ASSETS) names a directory of prebuilt
# binaries that is used instead when it holds them all.
# Prints the directory that holds the binaries on its last line of stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
KUBE_VERSION=v1.36.3
KWOK_VERSION=v0.8.0
components=(kube-apiserver kube-controller-manager kube-scheduler etcd)

if [[ -n "${INFERSCALE_KUBE_ASSETS:-}" ]]; then
  missing=0
  for c in "${components[@]}" kwok; do [[ -x "$INFERSCALE_KUBE_ASSETS/$c" ]] || missing=1; done
  if [[ $missing == 0 ]]; then echo "$INFERSCALE_KUBE_ASSETS"; exit 0; fi
  echo "INFERSCALE_KUBE_ASSETS=$INFERSCALE_KUBE_ASSETS lacks some of: ${components[*]} kwok; building" >&2
fi

key=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)
cache=${INFERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferscale}
bin="$cache/kube-$KUBE_VERSION-$key"

if [[ -x "$bin/kube" && -x "$bin/kwok" ]]; then echo "$bin"; exit 0; fi

mkdir -p "$bin.tmp"
start=$(date +%s)
say() { echo "[build-kube $(( $(date +%s) - start ))s] $*" >&2; }

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w
 -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION
 -X k8s.io/component-base/version.gitMajor=1
 -X k8s.io/component-base/version.gitMinor=$minor
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/component-base/version.gitCommit=0000000000000000000000000000000000000000
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"

say "downloading modules (Kubernetes $KUBE_VERSION)"
(cd "$here" && go mod download)
say "compiling kube-apiserver, kube-controller-manager, kube-scheduler, etcd (the first build takes 15-30 min on 2 cores)"
# -v prints each package as it is compiled: the progress of a long first build.
log="$bin.tmp/build.log"
(cd "$here" && CGO_ENABLED=0 go build -v -trimpath -ldflags "$ldflags" -o "$bin.tmp/kube" . >"$log" 2>&1) &
pid=$!
while kill -0 $pid 2>/dev/null; do
  sleep 30
  say "$(wc -l <"$log") packages compiled so far"
done
if ! wait $pid; then say "go build failed; last lines of $log:"; tail -n 30 "$log" >&2; exit 1; fi
[[ -x "$bin.tmp/kube" ]] || { say "go build failed"; exit 1; }
for c in "${components[@]}"; do ln -sf kube "$bin.tmp/$c"; done
say "installing kwok $KWOK_VERSION"
GOBIN="$bin.tmp" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
rm -rf "$bin" && mv "$bin.tmp" "$bin"
say "done: $bin"
echo "$bin"
