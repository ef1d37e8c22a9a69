#!/usr/bin/env bash
# Builds tgemm and runs the main job: the DeepSeek-V3 attention-projection
# benchmark on whatever hardware is present (the GPU if one is usable, else
# the CPU).  Extra arguments go to `tgemm bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
exec ./build/tgemm bench "$@"
