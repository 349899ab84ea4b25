#!/usr/bin/env bash
# Build the operator, router and sim images (and the pause image of the local cluster's container
# node) with podman, with no registry, and print their sizes.
#
# The base is INFERSCALE_IMAGE_BASE when set (for example python:3.11-slim where a registry is
# reachable), else the Debian bookworm base that tools/images/base.sh builds and caches. The
# images are tagged ghcr.io/inferscale/NAME:VERSION, the names the chart and the sim engine use,
# with VERSION the package's (operator/inferscale/__init__.py). Arguments pick some images only.
# The dependencies come from requirements.txt with their hashes; pip in the build trusts
# the CA bundle named by PIP_CERT or SSL_CERT_FILE (passed as a build secret, never stored).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(operator router sim pause)

start=$(date +%s)
say() { echo "[images $(( $(date +%s) - start ))s] $*" >&2; }

command -v podman >/dev/null || { say "podman is missing: apt-get install podman runc"; exit 1; }
base=${INFERSCALE_IMAGE_BASE:-$(bash "$here/base.sh" | tail -n 1)}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/operator/inferscale/__init__.py")
[[ -n $version ]] || { say "no __version__ in operator/inferscale/__init__.py"; exit 1; }

secret=()
ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
[[ -s $ca ]] && secret=(--secret "id=ca-bundle,src=$ca")

for name in "${images[@]}"; do
  [[ -f $repo/images/$name/Dockerfile ]] || { say "no images/$name/Dockerfile"; exit 1; }
  say "building ghcr.io/inferscale/$name:$version on $base"
  # Host networking: the build's pip reaches the package index the way this machine does.
  podman build --quiet --network=host --build-arg "BASE=$base" "${secret[@]}" \
    --file "$repo/images/$name/Dockerfile" --tag "ghcr.io/inferscale/$name:$version" "$repo" >/dev/null
done
say "built"
for name in "${images[@]}"; do
  podman image inspect --format "{{.Size}}" "ghcr.io/inferscale/$name:$version" |
    awk -v n="ghcr.io/inferscale/$name:$version" '{ printf "%-40s %6.1f MB\n", n, $1 / 1e6 }'
done
