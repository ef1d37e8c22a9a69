#!/usr/bin/env bash
# Check and time the MXFP4 GPU kernels (quantizer, W4A16 tensor-core and
# streaming kernels, W4A4 fused and prequant) against an in-harness oracle,
# a CPU double reference and cuBLASLt's heuristic BF16 default.
#   bash bench/device/mxgpu.sh              build if needed, then run (device)
#   bash bench/device/mxgpu.sh --build-only build here (no GPU needed)
#   bash bench/device/mxgpu.sh --quick      fewer sizes
#   bash bench/device/mxgpu.sh --quant-only the quantizer's byte checks, then the copy and
#                                           the quantizer timed with a clean and a dirty flush
# The binary in build-mxgpu/ is reused when its recorded source hash
# matches, so a build made here can be carried to the device machine.
# Results: $OUT/log.txt, $OUT/mxgpu.csv, $OUT/ptxas.txt, $OUT/sass_ops.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=build-mxgpu
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I include -I src"
KSRCS="src/cuda/mxfp4_quant.cu src/cuda/w4a16_mma.cu src/cuda/w4a4.cu src/cuda/l2_flush.cu"
[ -f src/cuda/w4a16_stream.cu ] && KSRCS="$KSRCS src/cuda/w4a16_stream.cu"
REF=""
[ -f src/mxfp4/mxfp4_ref.c ] && REF=src/mxfp4/mxfp4_ref.c
HDRS=$(ls src/cuda/*.cuh src/cuda/*.h) # every header a kernel may include
HASH=$(cat bench/device/mxgpu_harness.cu bench/device/cuda_check.cuh $KSRCS $REF $HDRS \
  src/core/backend.h src/core/dtype_convert.h include/tgemm.h bench/device/mxgpu.sh |
  sha256sum | cut -c1-16)
mkdir -p $B
if [ ! -x $B/mxgpu_harness ] || [ "$(cat $B/hash 2>/dev/null)" != "$HASH" ]; then
  echo "building ($HASH)"
  rm -f $B/hash $B/ptxas.txt
  OBJS=""
  DEFS=""
  if [ -n "$REF" ]; then
    gcc -O2 -std=gnu11 -I include -I src -c $REF -o $B/mxfp4_ref.o
    OBJS="$B/mxfp4_ref.o"
    DEFS="-DMXGPU_HAVE_REF"
  fi
  pids=""
  for s in $KSRCS; do
    o=$B/$(basename $s .cu).o
    $NVCC $FLAGS -Xptxas -v -c $s -o $o 2>>$B/ptxas.txt &
    pids="$pids $!"
    OBJS="$OBJS $o"
  done
  $NVCC $FLAGS $DEFS -Xcompiler -fopenmp -c bench/device/mxgpu_harness.cu -o $B/mxgpu_harness.o &
  pids="$pids $!"
  for p in $pids; do wait $p; done
  $NVCC -gencode=arch=compute_90a,code=sm_90a $B/mxgpu_harness.o $OBJS -lcublasLt -lgomp \
    -o $B/mxgpu_harness
  echo "$HASH" >$B/hash
else
  echo "using prebuilt $B/mxgpu_harness ($HASH)"
fi
[ "${1:-}" = "--build-only" ] && exit 0

OUT=${OUT:-/tmp/mxgpu_out}
mkdir -p "$OUT"
cp $B/ptxas.txt "$OUT/ptxas.txt" 2>/dev/null || true
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw \
  --format=csv || true
# Opcode histogram per kernel: are the MMAs, 16-byte loads and cp.async there.
for o in $B/*.o; do
  cuobjdump -sass $o 2>/dev/null | awk '
    /Function :/ { fn = $3 }
    /^ +\/\*[0-9a-f]+\*\// { op = $2; if (op ~ /^@/) op = $3; sub(/;$/, "", op); cnt[fn " " op]++ }
    END { for (k in cnt) print k, cnt[k] }' | sort >>"$OUT/sass_ops.txt" || true
done
QUICK=""
SAN=0
for a in "$@"; do
  [ "$a" = "--quick" ] && QUICK=--quick
  [ "$a" = "--sanitize" ] && SAN=1
done
# Checks and timing in separate processes, so that a crash in one still
# leaves the other's results.
set +e
for a in "$@"; do
  if [ "$a" = "--quant-only" ]; then
    timeout ${TIME_LIMIT:-200} $B/mxgpu_harness "$OUT" --quant-only 2>&1 | tee "$OUT/log.txt"
    rc=${PIPESTATUS[0]}
    echo "quant exit $rc" | tee -a "$OUT/log.txt"
    exit $rc
  fi
done
timeout ${CHECK_LIMIT:-150} $B/mxgpu_harness "$OUT" --checks-only $QUICK 2>&1 | tee "$OUT/log.txt"
echo "checks exit ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
cp "$OUT/mxgpu.csv" "$OUT/checks.csv" 2>/dev/null
if [ $SAN = 1 ]; then
  timeout ${SAN_LIMIT:-60} compute-sanitizer --tool memcheck --print-limit 20 \
    $B/mxgpu_harness /tmp --mini 2>&1 | tail -40 | tee "$OUT/sanitizer.txt"
fi
timeout ${TIME_LIMIT:-200} $B/mxgpu_harness "$OUT" --timing-only $QUICK 2>&1 | tee -a "$OUT/log.txt"
echo "timing exit ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
for a in "$@"; do
  if [ "$a" = "--profile" ]; then
    timeout ${PROF_LIMIT:-60} ncu -k regex:mx_mma_kernel --section SpeedOfLight \
      --section WarpStateStats --section SchedulerStats --section Occupancy \
      $B/mxgpu_harness /tmp --profile >"$OUT/ncu.txt" 2>&1
    echo "ncu exit $?" | tee -a "$OUT/log.txt"
  fi
done
