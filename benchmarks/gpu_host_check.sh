#!/usr/bin/env bash
# The service's checks on a GPU host, as one command: the CUDA tests, a batch's profile, the GPU
# wait schedules under load and a short benchmark. Each stage has its own time limit, so that one
# that hangs still leaves the others' results.
#
#   bash benchmarks/gpu_host_check.sh bundle [DIR]
#       On a host with internet access, a JDK and wrk: an offline bundle (default .gpubundle/,
#       git-ignored, about 50 MB: benchmarks/gpu_bundle.sh) for a GPU host that has PyTorch but
#       no Java, TorchServe or wrk, and perhaps no network (an air-gapped one). Copy it there
#       with the repository.
#   bash benchmarks/gpu_host_check.sh [--out DIR] [--bundle DIR] [--limit STAGE=SECONDS]... [STAGE...]
#       On the GPU host. Uses the bundle where there is one (--bundle, else .gpubundle/ or an
#       older .devbundle/ holding a setup.sh); Python is $PYTHON, else .venv/bin/python where it
#       exists, else python3. Logs and reports go to --out (default gpu-check/, git-ignored):
#       gpu-host-check.log holds every stage's output.
#
# Stages, in the order given (default: tests profile cuda-sync bench), and their time limits in
# seconds (--limit STAGE=SECONDS, or the environment variable in brackets):
#   tests      the CUDA tests (pytest -m gpu)                                   90 [GPU_CHECK_TESTS_S]
#   profile    make profile, cuda_sync auto and block: a batch's launches,      60 [GPU_CHECK_PROFILE_S]
#              copies, syncs, the device's busy time, the stages (one
#              process, no HTTP)                           -> batch-profile-gpu.{json,md}
#   cuda-sync  the service with cuda_sync auto, then block, at concurrency 128  150 [GPU_CHECK_CUDA_SYNC_S]
#                                                          -> cuda-sync.{json,md}
#   bench      the short make bench: in-process ceiling, no-op and service at   270 [GPU_CHECK_BENCH_S]
#              concurrency 1 and 128, no pairs             -> bench-gpu.{json,md,png}
# With the default limits all four take at most 9.5 minutes. `make agreement` on the GPU needs
# MNIST's files, which the bundle does not hold: not a stage.
set -uo pipefail
here=$PWD
cd "$(dirname "$0")/.."
if [ "${1:-}" = bundle ]; then
  target=$PWD/.gpubundle
  [ -n "${2:-}" ] && target=$(cd "$here" && realpath -m "$2")
  exec bash benchmarks/gpu_bundle.sh "$target"
fi

usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; }
declare -A limit=([tests]=${GPU_CHECK_TESTS_S:-90} [profile]=${GPU_CHECK_PROFILE_S:-60}
                  [cuda-sync]=${GPU_CHECK_CUDA_SYNC_S:-150} [bench]=${GPU_CHECK_BENCH_S:-270})
out=gpu-check
bundle=
stages=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$(cd "$here" && realpath -m "${2:?--out needs a folder}"); shift 2 ;;
    --bundle) bundle=$(cd "$here" && realpath -m "${2:?--bundle needs a folder}"); shift 2 ;;
    --limit) [[ ${2:-} =~ ^([a-z-]+)=([0-9]+)$ ]] && [ -n "${limit[${BASH_REMATCH[1]}]:-}" ] \
               || { echo "--limit takes STAGE=SECONDS (stages: ${!limit[*]}), got '${2:-}'" >&2; exit 2; }
             limit[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) stages+=("$1"); shift ;;
  esac
done
[ ${#stages[@]} -gt 0 ] || stages=(tests profile cuda-sync bench)
mkdir -p "$out"
log=$out/gpu-host-check.log

if [ -z "$bundle" ]; then
  for candidate in .gpubundle .devbundle; do
    [ -f "$candidate/setup.sh" ] && { bundle=$PWD/$candidate; break; }
  done
fi
if [ -n "$bundle" ]; then
  [ -f "$bundle/setup.sh" ] || { echo "no setup.sh in the bundle $bundle" >&2; exit 2; }
  # shellcheck source=benchmarks/gpu_bundle_env.sh
  source "$bundle/setup.sh"
  # A bundle made before setup.sh put its own bin/ and lib/ on the paths.
  export PATH="$bundle/bin:$PATH" LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
# Short load levels, so that the cuda-sync and bench stages fit their limits.
short=(--warmup 10 --duration 6)
status=0

run_stage() {  # name, command...
  local name=$1 seconds=${limit[$1]}
  shift
  echo "== $name (at most ${seconds} s): $*" | tee -a "$log"
  timeout "$seconds" "$@" >>"$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc$([ "$rc" = 124 ] && echo " (over its ${seconds} s limit)")" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$log"
for stage in "${stages[@]}"; do
  case $stage in
    tests) run_stage tests "$py" -m pytest -q -m gpu -p no:cacheprovider ;;
    profile) run_stage profile "$py" -m benchmarks.batch_profile --cuda-sync auto block --seconds 1 --profiled 4 \
               --out "$out" ;;
    cuda-sync) run_stage cuda-sync "$py" -m benchmarks.bench --cuda-sync auto block "${short[@]}" --concurrency 128 \
                 --out "$out" ;;
    bench) run_stage bench "$py" -m benchmarks.bench --pairs 0 "${short[@]}" --concurrency 1 128 --out "$out" ;;
    *) echo "unknown stage: $stage (tests, profile, cuda-sync, bench)" | tee -a "$log"; status=1 ;;
  esac
done
echo "logs and reports: $out"
exit $status
