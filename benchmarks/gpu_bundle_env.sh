# Sourced on the GPU host from a bundle made by benchmarks/gpu_bundle.sh (copied there as
# setup.sh): unpacks the Java runtime and TorchServe once (into $GPU_BUNDLE_CACHE, default
# ${TMPDIR:-/tmp}/gpubundle) and puts java, torchserve, torch-model-archiver and wrk on PATH,
# TorchServe's packages on PYTHONPATH and wrk's LuaJIT on LD_LIBRARY_PATH.
#
#   source .gpubundle/setup.sh
_b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_d=${GPU_BUNDLE_CACHE:-${TMPDIR:-/tmp}/gpubundle}
if [ ! -x "$_d/jre/bin/java" ] || [ ! -x "$_d/bin/torchserve" ]; then
  mkdir -p "$_d/site" "$_d/bin"
  tar -C "$_d" -xJf "$_b/jre.tar.xz"
  tar -C "$_d/site" -xJf "$_b/torchserve.tar.xz"
  # The frontend's jar travels unpacked (it compresses better): pack it again, stored.
  python3 - "$_d/site/ts/frontend" <<'PY'
import os, sys, zipfile
root = os.path.join(sys.argv[1], "model-server.jar.d")
with zipfile.ZipFile(os.path.join(sys.argv[1], "model-server.jar"), "w", zipfile.ZIP_STORED) as jar:
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            jar.write(p, os.path.relpath(p, root))
PY
  rm -rf "$_d/site/ts/frontend/model-server.jar.d"
  printf '#!/bin/sh\nexec python3 -c "from ts.model_server import start; start()" "$@"\n' > "$_d/bin/torchserve"
  printf '#!/bin/sh\nexec python3 -c "from model_archiver.model_packaging import generate_model_archive; generate_model_archive()" "$@"\n' \
    > "$_d/bin/torch-model-archiver"
  chmod +x "$_d/bin/"*
fi
export JAVA_HOME="$_d/jre"
export PATH="$_b/bin:$_d/bin:$JAVA_HOME/bin:$PATH"
export PYTHONPATH="$_d/site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$_b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset _b _d
