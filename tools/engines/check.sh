#!/usr/bin/env bash
# `make engine-check`: install the vLLM and SGLang releases that reconcile/engines.py pins (each in
# a venv of its own under ~/.cache/inferscale/engines, reused while the version is unchanged),
# then parse every command line the operator builds with each engine's own parser and rewrite
# docs/engines.md (the support matrix and the record of this run).
#
# Each install is about 10 GB (torch and the CUDA wheels come with the engines even for CPU use)
# and took 12 minutes here, so this is a make target and not a step of every CI run.
# INFERSCALE (the inferscale command of the repo's venv) is set by the Makefile.
set -euo pipefail
cd "$(dirname "$0")/../.."
inferscale=${INFERSCALE:-.venv/bin/inferscale}
python=$(dirname "$inferscale")/python
cache=${INFERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferscale}/engines
mkdir -p "$cache"

start=$(date +%s)
say() { echo "[engine-check $(( $(date +%s) - start ))s] $*" >&2; }

versions=$("$python" -c 'from inferscale.reconcile import engines as e; print(e.VLLM_VERSION, e.SGLANG_VERSION)')
read -r vllm_version sglang_version <<<"$versions"

# vLLM installs from PyPI as it is.
vllm=$cache/vllm-$vllm_version
if [[ ! -x $vllm/.installed ]]; then
  say "installing vllm==$vllm_version into $vllm (about 10 GB)"
  rm -rf "$vllm" && python3.11 -m venv "$vllm"
  "$vllm/bin/pip" install --quiet "vllm==$vllm_version"
  install -m 0755 /dev/null "$vllm/.installed"
fi

# SGLang's dependencies, less flashinfer_python: the release pins 0.4.1, of which PyPI has only
# the source, whose build needs apache-tvm-ffi==0.1.0b15, no longer on PyPI. The argument
# parser does not import it.
sglang=$cache/sglang-$sglang_version
if [[ ! -x $sglang/.installed ]]; then
  say "installing sglang==$sglang_version into $sglang (about 10 GB)"
  rm -rf "$sglang" && python3.11 -m venv "$sglang"
  "$sglang/bin/pip" install --quiet --no-deps "sglang==$sglang_version"
  "$sglang/bin/python" - >"$sglang/requirements.txt" <<'PY'
import importlib.metadata
for requirement in importlib.metadata.requires("sglang") or []:
    if "extra ==" not in requirement and not requirement.lower().startswith("flashinfer"):
        print(requirement)
PY
  "$sglang/bin/pip" install --quiet --only-binary=:all: -r "$sglang/requirements.txt"
  install -m 0755 /dev/null "$sglang/.installed"
fi

say "parsing every command line"
"$inferscale" engine-check --engine-python "vllm=$vllm/bin/python" \
  --engine-python "sglang=$sglang/bin/python" --docs docs/engines.md
say "done"
