#!/usr/bin/env bash
# Delete the kind cluster of up.sh, with everything in it. The built images stay in Docker.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
need kind
say "deleting kind cluster $CLUSTER"
kind delete cluster --name "$CLUSTER"
