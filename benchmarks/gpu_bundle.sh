#!/usr/bin/env bash
# An offline bundle for benchmarks/gpu_host_check.sh: what a GPU host with PyTorch but without
# Java, TorchServe, wrk or internet access needs to serve and benchmark the model.
#
#   bash benchmarks/gpu_bundle.sh [DIR]        # default .gpubundle (git-ignored); about 50 MB
#
# Made on a host with internet access, a JDK 17+ (jlink: openjdk-17-jdk-headless) and wrk:
#   jre.tar.xz          a Java runtime trimmed by jlink to the modules TorchServe's frontend uses
#   torchserve.tar.xz   the torchserve and torch-model-archiver wheels pinned in
#                       requirements-serve.txt, unpacked (the frontend's jar too, so xz compresses it)
#   bin/wrk, lib/       wrk and the LuaJIT library it links
#   setup.sh            benchmarks/gpu_bundle_env.sh: sourced on the GPU host, unpacks the above
#                       and puts java, torchserve, torch-model-archiver and wrk on the paths
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-.gpubundle}")
py=${PYTHON:-python3}  # for pip download; the repository's venv where there is one
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=$PWD/.venv/bin/python
command -v jlink >/dev/null || { echo "jlink not found: install a JDK 17 (openjdk-17-jdk-headless)" >&2; exit 1; }
wrk=$(command -v wrk) || { echo "wrk not found: install it (apt-get install wrk)" >&2; exit 1; }
mapfile -t pins < <(grep -E '^(torchserve|torch-model-archiver)==' requirements-serve.txt)
[ ${#pins[@]} = 2 ] || { echo "torchserve and torch-model-archiver pins not found in requirements-serve.txt" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/bin" "$out/lib"

echo "Java runtime (jlink)"
jlink --add-modules java.base,java.logging,java.management,java.naming,java.sql,jdk.unsupported,java.xml,java.desktop,jdk.crypto.ec,java.scripting,jdk.management,java.net.http,java.instrument,jdk.zipfs \
      --strip-debug --no-man-pages --no-header-files --compress=2 --output "$tmp/jre"
tar -C "$tmp" -cJf "$out/jre.tar.xz" jre

echo "${pins[*]}"
"$py" -m pip download -q --no-deps -d "$tmp/wheels" "${pins[@]}"
mkdir -p "$tmp/site"
for wheel in "$tmp"/wheels/*.whl; do (cd "$tmp/site" && python3 -m zipfile -e "$wheel" .); done
jar_dir="$tmp/site/ts/frontend/model-server.jar.d"
mkdir -p "$jar_dir"
(cd "$jar_dir" && python3 -m zipfile -e ../model-server.jar .)
rm "$tmp/site/ts/frontend/model-server.jar"
tar -C "$tmp/site" -cJf "$out/torchserve.tar.xz" .

echo "wrk ($wrk)"
cp "$wrk" "$out/bin/"
ldd "$wrk" | awk '/luajit/ {print $3}' | xargs -r cp -L -t "$out/lib/"

cp benchmarks/gpu_bundle_env.sh "$out/setup.sh"
du -sh "$out"
