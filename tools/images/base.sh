#!/usr/bin/env bash
# Build the images' base locally, with no registry: a Debian bookworm root filesystem (its
# Python is 3.11) made by mmdebstrap from the machine's own apt mirror, imported into podman.
#
# The root filesystem is cached outside the repository (like tools/kube/build.sh), keyed by a
# hash of this script and the mirror, so a second run imports the cached tar in seconds, and a
# run that finds the image already in podman's storage does nothing. Delete the cache folder to
# pick up Debian's newer packages.
#
# The mirror is the first bookworm `deb` source in /etc/apt/sources.list{,.d/} (deb822 or
# one-line format); INFERSCALE_APT_MIRROR overrides it.
# Prints the image reference (localhost/inferscale-base:KEY) on its last line of stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
SUITE=bookworm
# python3-venv: the images' virtual environment; ca-certificates: the router's HTTPS providers.
PACKAGES=python3,python3-venv,ca-certificates

start=$(date +%s)
say() { echo "[images-base $(( $(date +%s) - start ))s] $*" >&2; }

apt_mirror() {
  local file
  # deb822: a stanza whose Suites name the suite itself (not bookworm-security); its first URI.
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f $file ]] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (uri != "" && ok && deb) { print uri; exit } uri = ""; ok = 0; deb = 0; next }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      END { if (uri != "" && ok && deb) print uri }
    ' "$file"
  done
  # One-line format: "deb [options] URI SUITE COMPONENTS".
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v suite="$SUITE" '$1 == "deb" { sub(/\[[^]]*\] */, ""); if ($3 == suite) print $2 }'
  return 0  # a missing sources.list is no error: the caller checks that some mirror was found
}

mirrors=$(apt_mirror)
mirror=${INFERSCALE_APT_MIRROR:-${mirrors%%$'\n'*}}
if [[ -z $mirror ]]; then
  say "no '$SUITE' deb source in /etc/apt/sources.list{,.d/}; set INFERSCALE_APT_MIRROR"
  exit 1
fi

key=$( (cat "$0"; echo "$mirror") | sha256sum | cut -c1-16)
image=localhost/inferscale-base:$key
if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

cache=${INFERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferscale}/images
rootfs=$cache/base-$SUITE-$key.tar
mkdir -p "$cache"
if [[ ! -s $rootfs ]]; then
  command -v mmdebstrap >/dev/null || { say "mmdebstrap is missing: apt-get install mmdebstrap"; exit 1; }
  say "mmdebstrap $SUITE from $mirror (about 2 minutes)"
  # Documentation, man pages and translations are dropped: nothing in a container reads them.
  mmdebstrap --variant=apt --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --aptopt='Acquire::Retries "3"' --format=tar \
    "$SUITE" "$rootfs.tmp" "$mirror" >&2
  mv "$rootfs.tmp" "$rootfs"
fi
say "importing $rootfs as $image"
podman import --quiet --change 'CMD ["/bin/bash"]' "$rootfs" "$image" >/dev/null
echo "$image"
