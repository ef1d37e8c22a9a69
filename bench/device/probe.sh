#!/usr/bin/env bash
# Where the decode time goes, on the device machine:
#   bash bench/device/probe.sh --build    here: build readprobe, launchprobe and phaseprobe into
#                                         build-suite-carry/
#                                         (next to suite.sh --pack's pack; carry that path)
#   bash bench/device/probe.sh            device: readprobe (the floor fraction a pure read
#                                         reaches at each weight size), then Nsight Compute
#                                         on the decode kernels named in PROBE_KERNELS
# Logs land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
P=build-suite-carry
if [ "${1:-}" = "--build" ]; then
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  mkdir -p "$P" && $NVCC -O3 -arch=sm_90 -Iinclude -Isrc bench/device/readprobe.cu -o "$P/readprobe" &&
    $NVCC -O3 -arch=sm_90 -std=c++17 -Iinclude -Isrc bench/device/launchprobe.cu -o "$P/launchprobe" &&
    $NVCC -O3 -arch=sm_90 -std=c++17 -Iinclude -Isrc bench/device/phaseprobe.cu -o "$P/phaseprobe" && ls -la "$P"
  exit $?
fi
OUT=${OUT:-/tmp/probe_out}
mkdir -p "$OUT"
"$P/readprobe" | tee "$OUT/readprobe.txt"
[ -n "${PROBE_NO_NCU:-}" ] && exit 0
R=/tmp/tgemm-suite
rm -rf "$R" && mkdir -p "$R" && tar xJf "$P/pack.tar.xz" -C "$R" || exit 1
export LD_LIBRARY_PATH="$R/lib:${LD_LIBRARY_PATH:-}"
# layer:M:route triples
for spec in ${PROBE_KERNELS:-q_a_proj:1:w4a16 o_proj:1:w4a16 q_a_proj:1:skinny o_proj:1:skinny}; do
  IFS=: read -r layer m route <<<"$spec"
  name=${route/skinny/skinny_bf16}
  name=${name/w4a16/w4a16_stream}
  ncu --kernel-name "regex:$name" --launch-skip 4 --launch-count 1 --cache-control all \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
    --section ComputeWorkloadAnalysis --section InstructionStats \
    "$R/tgemm" bench --tp 1 --layers "$layer" --m "$m" --routes "$route" --reps 8 --max-seconds 0.05 \
    >"$OUT/ncu_${layer}_${m}_${route}.txt" 2>&1
  echo "== ncu $layer M=$m $route rc=$?"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|Issued Ipc|Achieved Occupancy|No Eligible|Registers Per|Block Size|Grid Size|Warp Cycles Per Issued|Stall|Pipe|SM Busy|Executed Ipc" \
    "$OUT/ncu_${layer}_${m}_${route}.txt" | head -30
done
