#!/usr/bin/env bash
# The GPU suite on the device machine, built here to save device time.
#   bash bench/device/suite.sh --pack     here: build with -DTGEMM_CUDA=ON and pack the tgemm CLI,
#                                         every test program and the OpenBLAS runtime into
#                                         build-suite-carry/ (carry that path), with the shipped
#                                         table as build-suite-carry/h100-deepseek-v3.csv (replacing
#                                         any table there: pack before copying a new one in)
#   bash bench/device/suite.sh tests      device: every test program (GPU tests run for real),
#                                         then compute-sanitizer memcheck over the GPU tests
#                                         (logs: $OUT/tests-logs.tgz)
#   bash bench/device/suite.sh flush      device: the decode points (M = 1, 16) of every route
#                                         with the cache flushed clean, dirty and not at all
#   bash bench/device/suite.sh tune       device: tune the DeepSeek-V3 preset into $OUT/h100-deepseek-v3.csv
#   bash bench/device/suite.sh route R    device: for route(s) R (comma list): test_cuda_kernels on R only,
#                                         its memcheck, then every candidate of R timed on the decode
#                                         points (M = 1..16, full and TP=8) with the tuner (-v log)
#   bash bench/device/suite.sh graphtune [R]  device: the decode points (M = 1..16) of the w4a16, skinny
#                                         and library routes (or of the space-separated routes R) tuned
#                                         under graph timing, the calls replayed back
#                                         to back as a served model runs them, into $OUT/graph-decode.csv
#                                         (logs: $OUT/graphtune-logs.tgz);
#                                         those rows replace theirs in the carried table, written to
#                                         $OUT/h100-deepseek-v3.csv (how the shipped table's decode rows
#                                         were made since the kernels launch as dependent launches)
#   bash bench/device/suite.sh bench      device: `tgemm bench` without and with that table (copied
#                                         here to build-suite-carry/), decode back to back, BF16-only
#                                         routing (--error-budget 0), readprobe
#   bash bench/device/suite.sh graph      device: test_cuda_backend (+ memcheck), then the decode
#                                         points (M = 1..16) with calls replayed back to back from a
#                                         CUDA graph (`bench --graph`): every route with the table at
#                                         budget 0.2, BF16-only routing, and readprobe
#   bash bench/device/suite.sh table      device: `graph`, then the same two benches flushed, all
#                                         logs in $OUT/table.tgz (how the current BENCHMARKS.md
#                                         table was made)
# Logs and tables land in $OUT.
set -uo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/../.."
P=build-suite-carry
if [ "${1:-}" = "--pack" ]; then
  B=build-suite
  cmake -S . -B "$B" -DTGEMM_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build "$B" -j2 || exit 1
  S=$(mktemp -d)
  mkdir -p "$S/lib" "$P"
  cp "$B"/tgemm "$B"/test_* "$S/"
  for l in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libgomp.so.1; do
    cp -L "/lib/x86_64-linux-gnu/$l" "$S/lib/"
  done
  (cd "$S" && strip --strip-unneeded tgemm test_* 2>/dev/null)
  # -9: a 64 MB dictionary, so the kernels every binary links are stored once
  XZ_OPT=-9 tar cJf "$P/pack.tar.xz" -C "$S" . && rm -rf "$S"
  git rev-parse HEAD >"$P/commit"
  cp configs/h100/deepseek-v3.csv "$P/h100-deepseek-v3.csv"
  ls -la "$P"
  exit 0
fi

OUT=${OUT:-/tmp/suite_out}
mkdir -p "$OUT"
R=/tmp/tgemm-suite
rm -rf "$R" && mkdir -p "$R" && tar xJf "$P/pack.tar.xz" -C "$R" || exit 1
export LD_LIBRARY_PATH="$R/lib:${LD_LIBRARY_PATH:-}" TGEMM_CLI="$R/tgemm"
echo "commit $(cat $P/commit)"

# `tgemm bench ARGS...` routed with the carried table, into DIR/NAME.csv and DIR/NAME.txt.
routed_bench() {
  local dir=$1 name=$2
  shift 2
  SECONDS=0
  TGEMM_CONFIG="$P/h100-deepseek-v3.csv" "$R/tgemm" bench "$@" --csv "$dir/$name.csv" >"$dir/$name.txt" 2>&1
  echo "bench $name rc=$? ${SECONDS}s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader

case "${1:-tests}" in
tests)
  pass=0 fail=0 skip=0 failed=""
  for t in "$R"/test_*; do
    name=$(basename "$t")
    SECONDS=0
    "$t" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
      0) pass=$((pass + 1)) ;;
      77) skip=$((skip + 1)) ;;
      *) fail=$((fail + 1)) failed="$failed $name" ;;
    esac
    echo "$name rc=$rc ${SECONDS}s: $(tail -n 1 "$OUT/$name.log")"
  done
  for t in test_cuda_kernels test_cuda_graph test_cuda_backend; do
    SECONDS=0
    TGEMM_TEST_QUICK=1 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$R/$t" \
      >"$OUT/memcheck_$t.log" 2>&1
    echo "memcheck $t rc=$? ${SECONDS}s: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$t.log" | tail -n 1)"
  done
  echo "failing:$failed"
  echo "$pass passed, $fail failed, $skip skipped"
  # The device returns at most 8 files: the logs come back as one archive.
  (cd "$OUT" && tar czf tests-logs.tgz test_*.log memcheck_*.log && rm -f test_*.log memcheck_*.log)
  ;;
flush)
  for mode in clean dirty none; do
    SECONDS=0
    TGEMM_TUNED=0 "$R/tgemm" bench --flush $mode --m 1,16 --routes skinny,library,w4a16 \
      --csv "$OUT/flush_$mode.csv" >"$OUT/flush_$mode.txt" 2>&1
    echo "flush $mode rc=$? ${SECONDS}s"
  done
  for mode in clean dirty none; do echo "== $mode"; grep -E ' (1|16)  (library|skinny|w4a16)' "$OUT/flush_$mode.txt" | \
    awk '{printf "%-20s %6s %5s %-8s %8s %6s\n", $1, $2, $4, $5, $7, $9}'; done
  ;;
tune)
  SECONDS=0
  "$R/tgemm" tune --preset deepseek-v3 --tp 1 --m 1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192 \
    -o "$OUT/h100-deepseek-v3.csv" >"$OUT/tune.log" 2>&1
  echo "tune rc=$? ${SECONDS}s"
  SECONDS=0
  "$R/tgemm" tune --preset deepseek-v3 --tp 8 --m 1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192 \
    -o "$OUT/h100-deepseek-v3.csv" >>"$OUT/tune.log" 2>&1
  echo "tune tp8 rc=$? ${SECONDS}s"
  ;;
route)
  routes=${2:?route list}
  SECONDS=0
  TGEMM_TEST_ROUTES=$routes "$R/test_cuda_kernels" >"$OUT/route_test.log" 2>&1
  echo "test_cuda_kernels ($routes) rc=$? ${SECONDS}s: $(tail -n 1 "$OUT/route_test.log")"
  SECONDS=0
  TGEMM_TEST_ROUTES=$routes TGEMM_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$R/test_cuda_kernels" >"$OUT/route_memcheck.log" 2>&1
  echo "memcheck rc=$? ${SECONDS}s: $(grep -E 'ERROR SUMMARY' "$OUT/route_memcheck.log" | tail -n 1)"
  for tp in 1 8; do
    SECONDS=0
    "$R/tgemm" tune --preset deepseek-v3 --tp $tp --m 1,2,4,8,16 --routes "$routes" --max-seconds 0.2 -v \
      -o "$OUT/route_table.csv" >"$OUT/route_tune_tp$tp.log" 2>&1
    echo "tune tp$tp rc=$? ${SECONDS}s"
  done
  ;;
graphtune)
  # Logs and the tuner's own table (and its lock file) stay in $G; $OUT gets
  # the tuned rows, the merged table and one archive of the logs.
  G=/tmp/tgemm-graphtune
  rm -rf "$G" && mkdir -p "$G"
  for route in ${2:-w4a16 skinny library}; do
    for tp in 1 8; do
      SECONDS=0
      "$R/tgemm" tune --graph --preset deepseek-v3 --tp $tp --m 1,2,4,8,16 --routes $route --max-seconds 0.03 -v \
        -o "$G/graph-decode.csv" >"$G/graphtune-$route-tp$tp.log" 2>&1
      echo "tune --graph $route tp$tp rc=$? ${SECONDS}s: $(tail -n 1 "$G/graphtune-$route-tp$tp.log")"
    done
  done
  cp "$G/graph-decode.csv" "$OUT/graph-decode.csv"
  tar czf "$OUT/graphtune-logs.tgz" -C "$G" --exclude graph-decode.csv.lock .
  # Columns 6-12 (m, n, k, bias, dtypes, route) key a row; rows of other keys stay.
  awk -F, 'function key() { return $6 FS $7 FS $8 FS $9 FS $10 FS $11 FS $12 }
           NR == FNR { if (FNR > 1) new[key()] = $0; next }
           FNR == 1 { print; next }
           { k = key(); if (k in new) { print new[k]; done[k] = 1 } else print }
           END { for (k in new) if (!(k in done)) print new[k] }' \
    "$OUT/graph-decode.csv" "$P/h100-deepseek-v3.csv" >"$OUT/h100-deepseek-v3.csv"
  echo "merged: $(grep -c . "$OUT/h100-deepseek-v3.csv") lines -> $OUT/h100-deepseek-v3.csv"
  ;;
bench)
  # The table from `tune`, carried as $P/h100-deepseek-v3.csv.
  SECONDS=0
  TGEMM_TUNED=0 "$R/tgemm" bench --csv "$OUT/bench_untuned.csv" >"$OUT/bench_untuned.txt" 2>&1
  echo "bench untuned rc=$? ${SECONDS}s"
  routed_bench "$OUT" bench_tuned --error-budget 0.2
  # Decode back to back: no flush, weights cold by rotation (DESIGN.md section 6 allows either).
  routed_bench "$OUT" bench_b2b --flush none --m 1,2,4,8,16 --error-budget 0.2
  # BF16-only routing (no quantized route allowed) against the default.
  routed_bench "$OUT" bench_bf16_auto --m 1,2,4,8,16 --routes library,auto --error-budget 0
  [ -x "$P/readprobe" ] && "$P/readprobe" >"$OUT/readprobe.txt" 2>&1
  grep -A12 '^summary' "$OUT/bench_untuned.txt"
  grep -A12 '^summary' "$OUT/bench_tuned.txt"
  grep -A12 '^summary' "$OUT/bench_b2b.txt"
  grep -A12 '^summary' "$OUT/bench_bf16_auto.txt"
  cat "$OUT/readprobe.txt"
  ;;
graph)
  SECONDS=0
  "$R/test_cuda_backend" >"$OUT/test_cuda_backend.log" 2>&1
  echo "test_cuda_backend rc=$? ${SECONDS}s: $(tail -n 1 "$OUT/test_cuda_backend.log")"
  grep '^graph timing' "$OUT/test_cuda_backend.log"
  SECONDS=0
  TGEMM_TEST_QUICK=1 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
    "$R/test_cuda_backend" >"$OUT/memcheck_test_cuda_backend.log" 2>&1
  echo "memcheck test_cuda_backend rc=$? ${SECONDS}s: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_test_cuda_backend.log" | tail -n 1)"
  routed_bench "$OUT" bench_graph --graph --m 1,2,4,8,16 --error-budget 0.2
  routed_bench "$OUT" bench_graph_bf16_auto --graph --m 1,2,4,8,16 --routes library,auto --error-budget 0
  [ -x "$P/readprobe" ] && "$P/readprobe" >"$OUT/readprobe.txt" 2>&1
  grep -A12 '^summary' "$OUT/bench_graph.txt"
  grep -A12 '^summary' "$OUT/bench_graph_bf16_auto.txt"
  ;;
table)
  # What a BENCHMARKS.md table is made from: `graph` above, then the same two
  # benches flushed (a clean flush before every timed call), one archive back.
  T=/tmp/tgemm-table
  rm -rf "$T" && mkdir -p "$T"
  OUT=$T bash "$SELF" graph
  routed_bench "$T" bench_tuned --m 1,2,4,8,16 --error-budget 0.2
  routed_bench "$T" bench_bf16_auto --m 1,2,4,8,16 --routes library,auto --error-budget 0
  grep -A12 '^summary' "$T/bench_tuned.txt"
  grep -A12 '^summary' "$T/bench_bf16_auto.txt"
  tar czf "$OUT/table.tgz" -C "$T" .
  ;;
esac
