/* What readprobe.cu and launchprobe.cu share: the streaming read kernel,
 * the L2 flush, an empty kernel, and timing one launch the way `tgemm
 * bench` times a call (flush, event pair, median of 50 after 10). */
#ifndef TGEMM_BENCH_PROBE_COMMON_CUH
#define TGEMM_BENCH_PROBE_COMMON_CUH

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "cuda/decode_common.cuh" /* the kernels' own weight loads */
#include "cuda_check.cuh"

/* U independent 16-byte loads per thread per iteration, grid-stride. */
template <int U>
__global__ void read_kernel(const uint4 *buf, size_t words, unsigned *sink) {
  const unsigned long long policy = tgemm_decode::evict_first_policy();
  unsigned acc = 0;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < words; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = tgemm_decode::load_stream16(buf + i + u * stride, policy);
#pragma unroll
    for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < words; i += stride) {
    uint4 v = buf[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

/* The flush, as src/cuda/l2_flush.cu does it: plain loads.  (With
 * evict-first loads, as in read_kernel, the flush's own lines go first
 * and the previous buffer survives in L2.) */
__global__ void flush_kernel(const uint4 *buf, size_t words, unsigned *sink) {
  unsigned acc = 0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x) {
    uint4 v = buf[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

__global__ void empty_kernel() {}

static inline float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/* µs of launch() between an event pair on s, each after flush(): the
 * median of 50 runs after 10 warm-up runs. */
template <typename Flush, typename Launch>
static float cold_us(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, Flush flush, Launch launch) {
  std::vector<float> ts;
  for (int r = 0; r < 60; r++) {
    flush();
    CK(cudaEventRecord(e0, s));
    launch();
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 10) ts.push_back(ms * 1000);
  }
  CK(cudaGetLastError());
  return median(ts);
}

/* µs per call of a CUDA graph of `calls` back-to-back launches, launch(i)
 * for call i, replayed on s: the median of 10 replays after 2 untimed
 * ones (the first uploads the graph). */
template <typename Launch>
static float graph_us(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, int calls, Launch launch) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; i++) launch(i);
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  std::vector<float> ts;
  for (int r = 0; r < 12; r++) {
    CK(cudaEventRecord(e0, s));
    CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 2) ts.push_back(ms * 1000 / calls);
  }
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  return median(ts);
}

#endif
