/* How close can any kernel come to the bandwidth floor at decode sizes?
 * A pure streaming read (16-byte loads, evict-first, nothing computed) of
 * buffers the size of the DeepSeek-V3 weights, timed like `tgemm bench`
 * times a call: L2 flushed by a 200 MB read, an event pair around the one
 * launch, median of 50.  Also timed back to back (a graph of launches
 * rotating over copies, no flush), and an empty kernel for the fixed cost.
 * The floor is bytes / copy bandwidth (1 GiB device-to-device memcpy,
 * read + write counted), as in DESIGN.md section 6.
 *
 *   nvcc -O3 -arch=sm_90 -Iinclude -Isrc bench/device/readprobe.cu -o readprobe && ./readprobe
 * (bench/device/probe.sh builds it here and runs it on the device). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "probe_common.cuh"

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  unsigned *sink;
  CK(cudaMalloc(&sink, 16));

  /* copy bandwidth: 1 GiB D2D, read + write */
  const size_t big = (size_t)1 << 30;
  void *a, *b;
  CK(cudaMalloc(&a, big));
  CK(cudaMalloc(&b, big));
  CK(cudaMemset(a, 1, big));
  std::vector<float> ts;
  for (int r = 0; r < 12; r++) {
    CK(cudaEventRecord(e0, s));
    CK(cudaMemcpyAsync(b, a, big, cudaMemcpyDeviceToDevice, s));
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 2) ts.push_back(ms);
  }
  const double copy_gbs = 2.0 * big / (median(ts) * 1e-3) / 1e9;
  printf("copy %.0f GB/s (read + write)\n", copy_gbs);
  CK(cudaFree(b));

  /* the flush: 200 MB read from the start of a */
  const size_t flush_words = (size_t)200 << 20 >> 4;
  auto flush = [&]() {
    flush_kernel<<<sms * 8, 256, 0, s>>>((const uint4 *)a, flush_words, sink);
  };

  /* fixed cost: an empty kernel between events, after a flush */
  printf("empty kernel between events, after a flush: %.2f us\n\n",
         cold_us(s, e0, e1, flush, [&] { empty_kernel<<<sms, 256, 0, s>>>(); }));

  const double mbs[] = {4.19, 8.26, 9.44, 22.0, 29.4, 30.3, 33.6, 75.5, 235.0};
  printf("%8s %8s | %26s | %26s\n", "MB", "floor", "events+flush us (frac) cfg", "graph b2b us (frac) cfg");
  void *pool;
  const size_t pool_bytes = (size_t)800 << 20;
  CK(cudaMalloc(&pool, pool_bytes));
  CK(cudaMemset(pool, 3, pool_bytes));
  for (double mb : mbs) {
    const size_t bytes = (size_t)(mb * 1e6) & ~(size_t)255;
    const size_t words = bytes / 16;
    const double floor_us = bytes / (copy_gbs * 1e3);
    float best_ev = 1e30f, best_gr = 1e30f;
    int best_ev_cfg = 0, best_gr_cfg = 0;
    for (int cfg = 0; cfg < 8; cfg++) {
      const int blocks = sms * (1 << (cfg % 4)), unroll = cfg < 4 ? 4 : 8;
      auto launch = [&](const void *p) {
        if (unroll == 4)
          read_kernel<4><<<blocks, 256, 0, s>>>((const uint4 *)p, words, sink);
        else
          read_kernel<8><<<blocks, 256, 0, s>>>((const uint4 *)p, words, sink);
      };
      /* events around one launch after a flush */
      const float ev = cold_us(s, e0, e1, flush, [&] { launch((char *)a + ((size_t)256 << 20)); });
      if (ev < best_ev) best_ev = ev, best_ev_cfg = cfg;
      /* back to back: a graph rotating over copies spanning >= 400 MB */
      const int copies = (int)std::max<size_t>(2, std::min<size_t>(pool_bytes / bytes, 64));
      const int launches = std::max(copies, 40);
      const float gr = graph_us(s, e0, e1, launches,
                                [&](int l) { launch((char *)pool + (size_t)(l % copies) * bytes); });
      if (gr < best_gr) best_gr = gr, best_gr_cfg = cfg;
    }
    printf("%8.2f %8.2f | %8.2f (%.2f) b%dx u%d        | %8.2f (%.2f) b%dx u%d\n", mb, floor_us, best_ev,
           floor_us / best_ev, 1 << (best_ev_cfg % 4), best_ev_cfg < 4 ? 4 : 8, best_gr, floor_us / best_gr,
           1 << (best_gr_cfg % 4), best_gr_cfg < 4 ? 4 : 8);
  }
  return 0;
}
