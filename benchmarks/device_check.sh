#!/usr/bin/env bash
# Issue 13's checks on a lent GPU machine, as one prepared command (the device time is 15 minutes a
# session, the machine's start included; one command may run 10). Results land in $OUT.
#
#   here, once:   bash benchmarks/device_check.sh bundle
#                 (.devbundle/, git-ignored: Java + TorchServe from ../shared/tools/device-bundle.sh,
#                 wrk and its LuaJIT; ~50 MB, under the 64 MiB that travels)
#   device run:   bash benchmarks/device_check.sh [STAGE...]    carry: [".devbundle"], timeout_s: 600
#
# Stages, in the order given (default: all four; at most 9.5 minutes, the sum of their limits):
#   tests      the CUDA tests (pytest -m gpu)
#   profile    make profile, cuda_sync auto and block: a batch's launches, copies, syncs,
#              the device's busy time, the stages (one process, no HTTP)     -> batch-profile-gpu.{json,md}
#   cuda-sync  the service with cuda_sync auto, then block, at concurrency 128  -> cuda-sync.{json,md}
#   bench      the short make bench: in-process ceiling, no-op and service at
#              concurrency 1 and 128, no pairs                                  -> bench-gpu.{json,md,png}
# Every stage's output also goes to device-check.log: 8 files in all, the most the device tool
# returns. Each stage has its own time limit, so that one that hangs still leaves the others'
# results. (`make agreement` on the GPU needs MNIST's files, over the size that travels with the
# bundle: not a stage.)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/device-check}"
mkdir -p "$out"
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests profile cuda-sync bench)

if [ "${stages[0]}" = bundle ]; then  # on this machine, not the device: it has no wrk and no internet
  ../shared/tools/device-bundle.sh .devbundle || exit
  mkdir -p .devbundle/bin .devbundle/lib
  cp "$(command -v wrk)" .devbundle/bin/ && cp /lib/x86_64-linux-gnu/libluajit-5.1.so.2 .devbundle/lib/ || exit
  du -sh .devbundle
  exit
fi

if [ -f .devbundle/setup.sh ]; then
  source .devbundle/setup.sh
  export PATH="$PWD/.devbundle/bin:$PATH" LD_LIBRARY_PATH="$PWD/.devbundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PYTHONUNBUFFERED=1
py=python3  # the device's own, with torch; here, the project's venv
[ -x .venv/bin/python ] && py=.venv/bin/python
# The short load levels that fit the device time (README, "Performance": GPU host).
short=(--warmup 10 --duration 6)
status=0

run_stage() {  # name, seconds, command...
  local name=$1 seconds=$2
  shift 2
  echo "== $name (at most ${seconds} s): $*" | tee -a "$out/device-check.log"
  timeout "$seconds" "$@" >>"$out/device-check.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc" | tee -a "$out/device-check.log"
  [ "$rc" = 0 ] || status=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$out/device-check.log"
for stage in "${stages[@]}"; do
  case $stage in
    tests) run_stage gpu-tests 90 "$py" -m pytest -q -m gpu -p no:cacheprovider ;;
    profile) run_stage profile 60 "$py" -m benchmarks.batch_profile --cuda-sync auto block --seconds 1 --profiled 4 \
               --out "$out" ;;
    cuda-sync) run_stage cuda-sync 150 "$py" -m benchmarks.bench --cuda-sync auto block "${short[@]}" \
                 --concurrency 128 --out "$out" ;;
    bench) run_stage bench 270 "$py" -m benchmarks.bench --pairs 0 "${short[@]}" --concurrency 1 128 --out "$out" ;;
    *) echo "unknown stage: $stage (tests, profile, cuda-sync, bench)"; status=1 ;;
  esac
done
tail -n 60 "$out/device-check.log"
exit $status
