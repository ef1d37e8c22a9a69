#!/usr/bin/env bash
# Check and time the decode kernels (skinny BF16, streaming W4A16) against
# cuBLASLt's heuristic default on the DeepSeek-V3 attention projections.
#   bash bench/device/skinny.sh              build if needed, then run (device)
#   bash bench/device/skinny.sh --build-only build here (no GPU needed)
# The binary in build-skinny/ is reused when its recorded source hash
# matches, so a build made here can be carried to the device machine.
# Results in $OUT: log_*.txt, skinny_<family>.csv, sanitizer.txt,
# sass.txt (opcode counts per kernel).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=build-skinny
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
FLAGS="-O3 -arch=sm_90 -std=c++17 -I include -I src"
SRCS="bench/device/skinny_harness.cu src/cuda/skinny_bf16.cu src/cuda/w4a16_stream.cu"
HASH=$(cat $SRCS bench/device/cuda_check.cuh src/cuda/*.cuh src/cuda/*.h \
  src/core/backend.h include/tgemm.h bench/device/skinny.sh | sha256sum | cut -c1-16)
mkdir -p $B
if [ ! -x $B/skinny_harness ] || [ "$(cat $B/hash 2>/dev/null)" != "$HASH" ]; then
  echo "building ($HASH)"
  rm -f $B/hash
  $NVCC $FLAGS -Xcompiler -fopenmp -c bench/device/skinny_harness.cu -o $B/skinny_harness.o &
  $NVCC $FLAGS -Xptxas -v -c src/cuda/skinny_bf16.cu -o $B/skinny_bf16.o 2>$B/ptxas_skinny.txt &
  $NVCC $FLAGS -Xptxas -v -c src/cuda/w4a16_stream.cu -o $B/w4a16_stream.o 2>$B/ptxas_w4.txt &
  wait %1 && wait %2 && wait %3
  $NVCC -arch=sm_90 $B/skinny_harness.o $B/skinny_bf16.o $B/w4a16_stream.o -lcublasLt -lgomp \
    -o $B/skinny_harness
  echo "$HASH" >$B/hash
else
  echo "using prebuilt $B/skinny_harness ($HASH)"
fi
[ "${1:-}" = "--build-only" ] && exit 0

OUT=${OUT:-/tmp/skinny_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw \
  --format=csv || true
# Opcode histograms per kernel (are the loads 16 bytes wide, the MMAs there).
for o in skinny_bf16 w4a16_stream; do
  cuobjdump -sass $B/$o.o 2>/dev/null | awk '
    /Function :/ { fn = $3 }
    /^ +\/\*[0-9a-f]+\*\// { op = $2; if (op ~ /^@/) op = $3; sub(/;$/, "", op); cnt[fn " " op]++ }
    END { for (k in cnt) print k, cnt[k] }' | sort >>"$OUT/sass.txt" || true
done
# Separate processes, so that a fault in one part cannot hide the others.
# Per-point lines go to the logs; the summary tables are printed last.
rc=0
SKINNY_PARTS=odd $B/skinny_harness "$OUT" >"$OUT/log_odd.txt" 2>&1 || rc=1
grep -E "^(device|copy|empty|FAIL|correctness|   odd)" "$OUT/log_odd.txt" | head -40 || true
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    SKINNY_PARTS=odd-small timeout 120 compute-sanitizer --tool $tool --print-limit 20 \
      $B/skinny_harness "$OUT" >"$OUT/tool.txt" 2>&1 || rc=1
    echo "$tool: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|correctness" "$OUT/tool.txt" | tr '\n' ' ')"
    { echo "=== $tool"; cat "$OUT/tool.txt"; } >>"$OUT/sanitizer.txt"
    rm -f "$OUT/tool.txt"
  done
fi
for fam in w4a16_stream skinny_bf16; do
  SKINNY_PARTS=deepseek SKINNY_ONLY=$fam $B/skinny_harness "$OUT" >"$OUT/log_$fam.txt" 2>&1 || rc=1
  grep -E "^FAIL" "$OUT/log_$fam.txt" | head -10 || true
  sed -n '/^== /,$p' "$OUT/log_$fam.txt"
done
exit $rc
