#!/usr/bin/env bash
# The CUDA backend's GPU tests on the device machine: test_cuda_backend,
# test_cuda_graph, test_cuda_kernels, then compute-sanitizer memcheck over
# test_cuda_kernels with the reduced shape set (TGEMM_TEST_QUICK=1).
#   bash bench/device/cudabe.sh --pack   here: build (-DTGEMM_CUDA=ON) and pack
#                                        the three tests with their shared
#                                        libraries into build-cudabe-carry/
#   bash bench/device/cudabe.sh          device: unpack and run (carry
#                                        build-cudabe-carry); logs in $OUT
# Building here and carrying the binaries saves device time; the build
# links OpenBLAS, which the device image may lack, so libopenblas and its
# runtime libraries go along (LD_LIBRARY_PATH).
set -uo pipefail
cd "$(dirname "$0")/../.."
P=build-cudabe-carry
if [ "${1:-}" = "--pack" ]; then
  B=${B:-build-cudabe}
  cmake -S . -B "$B" -DTGEMM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null &&
    cmake --build "$B" -j2 --target test_cuda_backend test_cuda_graph test_cuda_kernels || exit 1
  S=$(mktemp -d)
  mkdir -p "$S/lib" "$P"
  cp "$B"/test_cuda_backend "$B"/test_cuda_graph "$B"/test_cuda_kernels "$S/"
  for l in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libgomp.so.1; do
    cp -L "/lib/x86_64-linux-gnu/$l" "$S/lib/"
  done
  tar cJf "$P/pack.tar.xz" -C "$S" . && rm -rf "$S"
  ls -la "$P"
  exit 0
fi

OUT=${OUT:-/tmp/cudabe_out}
mkdir -p "$OUT"
R=$(mktemp -d)
tar xJf "$P/pack.tar.xz" -C "$R" || exit 1
export LD_LIBRARY_PATH="$R/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
echo "cuBLASLt in ld cache: $(ldconfig -p | grep -c libcublasLt)"
rc=0
for t in test_cuda_backend test_cuda_graph test_cuda_kernels; do
  SECONDS=0
  timeout 150 "$R/$t" >"$OUT/$t.txt" 2>&1
  r=$?
  echo "== $t rc=$r (${SECONDS} s)"
  [ $r -ne 0 ] && rc=1
  grep -E "FAIL|warning" "$OUT/$t.txt" | head -25
  tail -14 "$OUT/$t.txt"
done
# memcheck: one process per route (a faulting kernel kills its CUDA
# context, so each family gets its own), plus the backend and graph tests;
# all in parallel, logs gathered into one file.
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
MC="$CS --tool memcheck --print-limit 20 --error-exitcode 9"
SECONDS=0
for part in reference library skinny w4a16 w4a4 quant; do
  TGEMM_TEST_QUICK=1 TGEMM_TEST_ROUTES=$part timeout 200 $MC "$R/test_cuda_kernels" \
    >"$R/mc_kernels_$part.txt" 2>&1 &
done
timeout 200 $MC "$R/test_cuda_graph" >"$R/mc_graph.txt" 2>&1 &
TGEMM_TEST_QUICK=1 timeout 200 $MC "$R/test_cuda_backend" >"$R/mc_backend.txt" 2>&1 &
wait
echo "== memcheck (${SECONDS} s)"
: >"$OUT/memcheck.txt"
for f in "$R"/mc_*.txt; do
  echo "##### $(basename "$f")" >>"$OUT/memcheck.txt"
  cat "$f" >>"$OUT/memcheck.txt"
  summary=$(grep -E "ERROR SUMMARY" "$f" | tail -1)
  verdict=$(grep -E "all checks passed|FAILED|SKIP" "$f" | tail -1)
  echo "$(basename "$f" .txt): ${summary:-no summary (timed out?)}; ${verdict:-no verdict}"
  grep -q "ERROR SUMMARY: 0 errors" "$f" || rc=1
  grep -E "Invalid|out of bounds|FAIL" "$f" | head -6
done
exit $rc
