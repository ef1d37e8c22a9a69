#!/usr/bin/env bash
# Builds tgemm and runs the whole test suite.
#   scripts/test.sh              normal build (CUDA backend when nvcc exists), warnings are errors
#   scripts/test.sh --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer build (CPU only:
#                                ASan and the CUDA runtime's shadow-memory layout do not mix)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-sanitize
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTGEMM_SANITIZE=ON -DTGEMM_CUDA=OFF -DTGEMM_WERROR=ON
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  dir=build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DTGEMM_WERROR=ON
fi
cmake --build "$dir" -j "$jobs"
ctest --test-dir "$dir" --output-on-failure -j "$jobs"
