/* What separates the W4A16 stream kernel on q_b (19 MB of packed E2M1
 * weights) from a pure read of the same bytes: the launch shape (384
 * blocks of 128 threads), the dynamic shared memory it asks for, or its
 * access pattern (64-byte pieces of 768-byte rows, copied through a
 * per-warp cp.async ring)?  Each variant reads the same bytes, timed as
 * `tgemm bench` times a call (200 MB flush, event pair, median of 50).
 * Results and what they ruled out: docs/BENCHMARKS.md.
 *
 *   bash bench/device/probe.sh --build   (here; builds it into build-suite-carry/)
 *   build-suite-carry/launchprobe        (device) */
#include <cuda_runtime.h>
#include <stdio.h>

#include "probe_common.cuh"

/* The stream kernel's pattern: block b owns 64 rows of `row_bytes`; each
 * load instruction of a warp reads PIECE contiguous bytes of 512 / PIECE
 * rows (64: lane (g, c) reads quarter c of row g, as the kernel's copies
 * do); warp w of 4 takes the row pieces w, w+4, ... */
template <int PIECE>
__global__ void read_rows(const unsigned char *buf, int row_bytes, unsigned *sink) {
  constexpr int LANES = PIECE / 16, ROWS = 32 / LANES; /* per instruction */
  const unsigned long long policy = tgemm_decode::evict_first_policy();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned char *base =
      buf + ((size_t)blockIdx.x * 64 + lane / LANES) * row_bytes + 16 * (lane % LANES);
  unsigned acc = 0;
  for (int piece = warp; piece * PIECE < row_bytes; piece += 4) {
    uint4 v[64 / ROWS];
#pragma unroll
    for (int r = 0; r < 64 / ROWS; r++)
      v[r] = tgemm_decode::load_stream16(base + (size_t)(ROWS * r) * row_bytes + piece * PIECE, policy);
#pragma unroll
    for (int r = 0; r < 64 / ROWS; r++) acc ^= v[r].x ^ v[r].y ^ v[r].z ^ v[r].w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

/* The same rows through a cp.async ring of ST stages per warp (what the
 * ring kernels do).  A stage is COPIES copies per lane; copy r covers
 * 512 / PIECE rows of PIECE contiguous bytes, so a stage covers all 64
 * rows of a "unit" WIDTH = 8 * COPIES bytes wide (at 4 tiles a warp:
 * U = 1 is PIECE 64, COPIES 8; U = 2 is COPIES 16 with PIECE 64 as the
 * kernel copies, or PIECE 128 with the copy lanes remapped).
 * Warp w of 4 takes units w, w+4, ...; it waits for its oldest stage and
 * reads one word of it. */
template <int PIECE, int COPIES, int ST>
__global__ void copy_rows(const unsigned char *buf, int row_bytes, unsigned *sink) {
  extern __shared__ uint4 ring[];
  constexpr int LANES = PIECE / 16, ROWS = 32 / LANES, PER_PIECE = 64 / ROWS;
  constexpr int WIDTH = COPIES / PER_PIECE * PIECE;
  static_assert(COPIES % PER_PIECE == 0, "a stage covers all 64 rows");
  const unsigned long long policy = tgemm_decode::evict_first_policy();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned char *base =
      buf + ((size_t)blockIdx.x * 64 + lane / LANES) * row_bytes + 16 * (lane % LANES);
  uint4 *mine = ring + warp * ST * COPIES * 32 + lane;
  unsigned acc = 0;
  int stage = 0, issued = 0;
  for (int unit = warp; unit * WIDTH < row_bytes; unit += 4) {
#pragma unroll
    for (int r = 0; r < COPIES; r++)
      tgemm_decode::cp_async16_stream(
          mine + (stage * COPIES + r) * 32,
          base + (size_t)(ROWS * (r % PER_PIECE)) * row_bytes + unit * WIDTH + PIECE * (r / PER_PIECE),
          policy);
    tgemm_decode::cp_async_commit();
    stage = stage + 1 == ST ? 0 : stage + 1;
    if (++issued >= ST) {
      tgemm_decode::cp_async_wait<ST - 1>();
      acc ^= mine[stage * COPIES * 32].x;
    }
  }
  tgemm_decode::cp_async_wait<0>();
  acc ^= mine[stage * COPIES * 32].y;
  if (acc == 0x9e3779b9u) *sink = acc;
}

int main() {
  setvbuf(stdout, NULL, _IONBF, 0);
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  unsigned *sink;
  CK(cudaMalloc(&sink, 16));
  const size_t flush_words = (size_t)200 << 20 >> 4;
  void *fbuf, *w;
  CK(cudaMalloc(&fbuf, flush_words * 16));
  CK(cudaMemset(fbuf, 1, flush_words * 16));
  const int rows = 24576, row_bytes = 768; /* q_b's packed E2M1 */
  const size_t bytes = (size_t)rows * row_bytes;
  CK(cudaMalloc(&w, bytes));
  CK(cudaMemset(w, 2, bytes));
  const int big = 100 * 1024;
  CK(cudaFuncSetAttribute(read_kernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, big));
  CK(cudaFuncSetAttribute(read_rows<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, big));
  CK(cudaFuncSetAttribute(read_rows<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, big));
  CK(cudaFuncSetAttribute(read_rows<256>, cudaFuncAttributeMaxDynamicSharedMemorySize, big));
  CK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, big));

  auto flush = [&] { flush_kernel<<<sms * 8, 256, 0, s>>>((const uint4 *)fbuf, flush_words, sink); };
  auto time = [&](const char *what, auto launch) { printf("%-62s %7.2f us\n", what, cold_us(s, e0, e1, flush, launch)); };
  printf("%.1f MB read after a 200 MB flush\n", bytes / 1e6);
  char what[96];
  const int nb = rows / 64; /* 64-row blocks */
  time("empty, 132 x 256, smem 0", [&] { empty_kernel<<<sms, 256, 0, s>>>(); });
  time("empty, 384 x 128, smem 51 KB", [&] { empty_kernel<<<384, 128, 51 * 1024, s>>>(); });
  time("flat, 1056 x 256, smem 0 (readprobe b8x u4)",
       [&] { read_kernel<4><<<sms * 8, 256, 0, s>>>((const uint4 *)w, bytes / 16, sink); });
  time("flat, 384 x 128, smem 0", [&] { read_kernel<4><<<384, 128, 0, s>>>((const uint4 *)w, bytes / 16, sink); });
  time("flat, 384 x 128, smem 51 KB",
       [&] { read_kernel<4><<<384, 128, 51 * 1024, s>>>((const uint4 *)w, bytes / 16, sink); });
  {
    const size_t sm = 72 * 1024; /* 3 blocks an SM, as the kernel (by registers) */
#define PROBE_COPY(PIECE, COPIES, ST)                                                             \
  CK(cudaFuncSetAttribute(copy_rows<PIECE, COPIES, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, big)); \
  snprintf(what, sizeof what, "cp.async rows, %3d B a row per copy, %d x %2d KB stages, smem 72 KB", PIECE, ST, \
           COPIES / 2);                                                                        \
  time(what, [&] { copy_rows<PIECE, COPIES, ST><<<nb, 128, sm, s>>>((const unsigned char *)w, row_bytes, sink); });
    PROBE_COPY(64, 8, 2) PROBE_COPY(64, 8, 3) PROBE_COPY(64, 16, 2) PROBE_COPY(128, 16, 2)
    PROBE_COPY(256, 32, 1) PROBE_COPY(128, 32, 1) PROBE_COPY(64, 24, 1)
#undef PROBE_COPY
  }
  for (int kb : {0, 51}) {
    const size_t sm = (size_t)kb * 1024;
    snprintf(what, sizeof what, "rows, 64 B a row per load, 384 x 128, smem %d KB", kb);
    time(what, [&] { read_rows<64><<<nb, 128, sm, s>>>((const unsigned char *)w, row_bytes, sink); });
    snprintf(what, sizeof what, "rows, 128 B a row per load, 384 x 128, smem %d KB", kb);
    time(what, [&] { read_rows<128><<<nb, 128, sm, s>>>((const unsigned char *)w, row_bytes, sink); });
    snprintf(what, sizeof what, "rows, 256 B a row per load, 384 x 128, smem %d KB", kb);
    time(what, [&] { read_rows<256><<<nb, 128, sm, s>>>((const unsigned char *)w, row_bytes, sink); });
  }
  return 0;
}
