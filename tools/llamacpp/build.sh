#!/usr/bin/env bash
# Build llama.cpp's llama-server for CPU and a tiny GGUF model, cached outside the repository.
#
#   llama-server  compiled with cmake from the llama.cpp tree vendored in the llama-cpp-python
#                 sdist on PyPI (pinned version and sha256 below), static, CPU only, without the
#                 web UI (its build would download it) and without TLS.
#   model.gguf    a llama-architecture model with random weights and GPT-2's BPE vocabulary,
#                 written by make_model.py with the gguf-py of the same llama.cpp tree (fixed
#                 seed, about 8 MB): real shapes and tokenisation, noise for text.
#
# The directory is keyed by the sdist, the cmake flags and this CPU's flags (the build uses
# -march=native), so an unchanged machine reuses it in a second; make_model.py changes remake
# the model only. INFERSCALE_LLAMACPP (a directory holding llama-server and model.gguf) is used
# instead when given. `build.sh --dir` prints the directory without building anything.
# Needs cmake and a C++17 compiler (Debian: cmake g++); ninja is used when present.
# Prints the directory that holds llama-server and model.gguf on its last line of stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SDIST_VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# llama.cpp commit 0c1e570 (the sdist's vendor/llama.cpp): the official image closest to it is
# ghcr.io/ggml-org/llama.cpp:server-b11206, the engine's default image.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_CCACHE=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
)
JOBS=${INFERSCALE_BUILD_JOBS:-2}
# pip fetches the sdist; make_model.py needs numpy and PyYAML (the project's virtualenv has both).
venv_python="$here/../../.venv/bin/python"
[[ -x "$venv_python" ]] || venv_python=python3
PYTHON=${PYTHON:-$venv_python}

cache=${INFERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferscale}
cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m)
key=$(printf '%s\n' "$SDIST_VERSION" "$SDIST_SHA256" "${CMAKE_FLAGS[*]}" "$cpu" | sha256sum | cut -c1-16)
dir="$cache/llamacpp-$SDIST_VERSION-$key"
model_key=$(cat "$here/make_model.py" | sha256sum | cut -c1-16)

if [[ "${1:-}" == "--dir" ]]; then echo "${INFERSCALE_LLAMACPP:-$dir}"; exit 0; fi
if [[ -n "${INFERSCALE_LLAMACPP:-}" ]]; then
  if [[ -x "$INFERSCALE_LLAMACPP/llama-server" && -f "$INFERSCALE_LLAMACPP/model.gguf" ]]; then
    echo "$INFERSCALE_LLAMACPP"; exit 0
  fi
  echo "INFERSCALE_LLAMACPP=$INFERSCALE_LLAMACPP lacks llama-server or model.gguf" >&2; exit 1
fi

start=$(date +%s)
say() { echo "[build-llamacpp $(( $(date +%s) - start ))s] $*" >&2; }
# shellcheck source-path=SCRIPTDIR source=../build-progress.sh
source "$here/../build-progress.sh"

src="$cache/llamacpp-src-$SDIST_VERSION"
unpack() {
  [[ -f "$src/.unpacked" ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  say "downloading the llama-cpp-python $SDIST_VERSION sdist from PyPI"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
    --dest "$tmp" "llama-cpp-python==$SDIST_VERSION" >&2
  echo "$SDIST_SHA256  $tmp/llama_cpp_python-$SDIST_VERSION.tar.gz" | sha256sum --check --quiet >&2
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$tmp/llama_cpp_python-$SDIST_VERSION.tar.gz" -C "$src" --strip-components=1
  touch "$src/.unpacked"
}

if [[ ! -x "$dir/llama-server" ]]; then
  for tool in cmake c++; do
    command -v "$tool" >/dev/null || { say "$tool is needed (Debian: apt-get install cmake g++)"; exit 1; }
  done
  unpack
  generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
  build="$dir.build"
  mkdir -p "$build"
  log="$build/build.log"
  say "configuring llama.cpp (vendored in llama-cpp-python $SDIST_VERSION)"
  cmake -S "$src/vendor/llama.cpp" -B "$build" "${generator[@]}" "${CMAKE_FLAGS[@]}" >"$log" 2>&1 \
    || { say "cmake failed; last lines of $log:"; tail -n 30 "$log" >&2; exit 1; }
  say "compiling llama-server with $JOBS jobs (about 200 files; tens of minutes on 2 shared cores)"
  cmake --build "$build" --target llama-server -j "$JOBS" >>"$log" 2>&1 &
  wait_for_build $! "$log" "build steps done" '^\[' || exit 1
  mkdir -p "$dir"
  install -m 0755 "$build/bin/llama-server" "$dir/llama-server.tmp"
  mv "$dir/llama-server.tmp" "$dir/llama-server"
  rm -rf "$build"
  say "llama-server built"
fi

if [[ ! -f "$dir/model.gguf" || "$(cat "$dir/model.key" 2>/dev/null)" != "$model_key" ]]; then
  unpack
  say "writing the tiny random-weight model"
  PYTHONPATH="$src/vendor/llama.cpp/gguf-py" "$PYTHON" "$here/make_model.py" \
    --vocab "$src/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf" --out "$dir/model.gguf.tmp" >&2
  mv "$dir/model.gguf.tmp" "$dir/model.gguf"
  echo "$model_key" >"$dir/model.key"
fi

say "ready: $dir"
echo "$dir"
