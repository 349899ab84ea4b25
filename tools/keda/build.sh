#!/usr/bin/env bash
# Build KEDA from its Go module, cached outside the repository, for e2e/test_keda.py (opt-in:
# INFERSCALE_KEDA=1). Never run by default: the first build takes 15 to 30 min on 2 cores.
#
#   keda           KEDA's operator (github.com/kedacore/keda/v2/cmd/operator).
#   keda-adapter   KEDA's metrics API server (cmd/adapter), served behind the aggregation layer
#                  as external.metrics.k8s.io for the HPA that KEDA creates (scaling 1 -> N).
#   config/        the module's config/ (CRDs, RBAC) at the same version, copied from the Go
#                  module cache so the cluster's CRDs always match the binaries.
#
# KEDA's go.mod has replace directives, so `go install module@version` refuses it: the module
# is copied out of the module cache (`go mod download`, checksummed against go.sum's database)
# and built there. KEDA_VERSION is the newest release whose go.mod accepts Go 1.26 (v2.21 wants
# 1.27). The cache directory is keyed by the version and the build's flags, so a second call
# prints it in a second; INFERSCALE_KEDA_ASSETS names prebuilt binaries to use instead.
# The compile runs at `nice -n 19`: the machine's cores are shared. Prints the directory that
# holds the binaries on its last line of stdout.
set -euo pipefail

KEDA_VERSION=v2.20.2
MODULE=github.com/kedacore/keda/v2
commands=(operator adapter)
ldflags="-s -w -X $MODULE/version.Version=${KEDA_VERSION#v} -X $MODULE/version.GitCommit=$KEDA_VERSION"

if [[ -n "${INFERSCALE_KEDA_ASSETS:-}" ]]; then
  if [[ -x "$INFERSCALE_KEDA_ASSETS/keda" && -x "$INFERSCALE_KEDA_ASSETS/keda-adapter" \
        && -d "$INFERSCALE_KEDA_ASSETS/config/crd" ]]; then
    echo "$INFERSCALE_KEDA_ASSETS"; exit 0
  fi
  echo "INFERSCALE_KEDA_ASSETS=$INFERSCALE_KEDA_ASSETS lacks keda, keda-adapter or config/crd; building" >&2
fi

key=$(printf '%s\n' "$KEDA_VERSION" "${commands[@]}" "$ldflags" | sha256sum | cut -c1-16)
cache=${INFERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferscale}
bin="$cache/keda-$KEDA_VERSION-$key"

start=$(date +%s)
say() { echo "[build-keda $(( $(date +%s) - start ))s] $*" >&2; }
# shellcheck source-path=SCRIPTDIR source=../build-progress.sh
source "$(dirname "$0")/../build-progress.sh"

# One build at a time: a second caller waits for the first and reuses its binaries.
mkdir -p "$cache"
exec 9>"$cache/.keda-build.lock"
if ! flock -n 9; then
  say "another build of $bin is running; waiting for it"
  flock 9
fi

if [[ -x "$bin/keda" && -x "$bin/keda-adapter" && -d "$bin/config/crd" ]]; then
  echo "$bin"; exit 0
fi

command -v go >/dev/null || { say "Go 1.26 is needed to build KEDA $KEDA_VERSION"; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
say "downloading $MODULE@$KEDA_VERSION"
dir=$(go mod download -json "$MODULE@$KEDA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d "$dir" ]] || { say "go mod download gave no directory for $MODULE@$KEDA_VERSION"; exit 1; }
mkdir -p "$bin.tmp"
src="$bin.tmp/src"
if [[ ! -f "$src/go.mod" ]]; then
  rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
fi
say "downloading KEDA's dependencies"
(cd "$src" && nice -n 19 go mod download)
say "compiling KEDA ${commands[*]} (the first build takes 15 to 30 min on 2 busy cores)"
log="$bin.tmp/build.log"
pkgs=(); for c in "${commands[@]}"; do pkgs+=("./cmd/$c"); done
(cd "$src" && nice -n 19 go build -v -trimpath -ldflags "$ldflags" -o "$bin.tmp/" "${pkgs[@]}" \
  >"$log" 2>&1) &
wait_for_build $! "$log" "packages compiled" '' || exit 1
mv "$bin.tmp/operator" "$bin.tmp/keda"
mv "$bin.tmp/adapter" "$bin.tmp/keda-adapter"
cp -r "$src/config" "$bin.tmp/config"
rm -rf "$src"
rm -rf "$bin" && mv "$bin.tmp" "$bin"
say "done in $(( $(date +%s) - start ))s: $bin"
echo "$bin"
