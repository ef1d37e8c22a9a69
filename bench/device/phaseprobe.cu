/* Where a W4A16 stream kernel's time goes inside one call: the kernel is
 * compiled here with per-block phase stamps (TGEMM_W4_PHASES, see
 * src/cuda/w4a16_stream.cu) and replayed back to back from a CUDA graph
 * over rotating weight copies, as `tgemm bench --graph` times it.  For the
 * last call of the graph it prints, over the blocks: when each block
 * started after the first one, how long its first batch took to land, its
 * loop, the wait for the block's other warps, the reduction and store (for
 * an unsplit kernel also its parts: partial sums out, block barrier, sums
 * and stores), and the span from the first start to the last exit.
 *
 *   bash bench/device/probe.sh --build     (here; builds it into build-suite-carry/)
 *   build-suite-carry/phaseprobe           (device: the built-in list below)
 *   build-suite-carry/phaseprobe LAYER N K M KERNEL [LAYER N K M KERNEL ...]
 *                                          (device: those kernels, by candidate name;
 *                                          TGEMM_PROBE_PAIRED=1: their paired-order variants) */
#define TGEMM_W4_PHASES 4096
#include "../../src/cuda/w4a16_stream.cu"

#include <algorithm>
#include <vector>

#include "probe_common.cuh"

namespace {

struct experiment {
  const char *layer;
  long long n, k, m;
  const char *kernel; /* candidate name */
};

/* The pct-th percentile of v (sorted in place). */
double pct(std::vector<double> &v, double p) {
  std::sort(v.begin(), v.end());
  return v[(size_t)std::min<double>(v.size() - 1, p / 100.0 * (double)(v.size() - 1) + 0.5)];
}

void run(const experiment &e) {
  const long long kb = (e.k + 31) / 32, ldq = kb * 16, lds = (kb + 15) / 16 * 16; /* as owned weights */
  const size_t q_bytes = (size_t)(e.n * ldq), s_bytes = (size_t)(e.n * lds);
  const int copies = (int)std::max<size_t>(2, (size_t)(200u << 20) / (q_bytes + s_bytes) + 1);
  std::vector<unsigned char *> wq(copies), ws(copies);
  std::vector<unsigned char> host_q(q_bytes), host_s(s_bytes, 127); /* scales 2^0 */
  unsigned rng = 12345;
  for (auto &b : host_q) b = (unsigned char)((rng = rng * 1664525u + 1013904223u) >> 24);
  for (int i = 0; i < copies; i++) {
    CK(cudaMalloc(&wq[i], q_bytes));
    CK(cudaMalloc(&ws[i], s_bytes));
    CK(cudaMemcpy(wq[i], host_q.data(), q_bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(ws[i], host_s.data(), s_bytes, cudaMemcpyHostToDevice));
  }
  std::vector<unsigned short> host_x((size_t)(e.m * e.k), 0x3f80); /* 1.0 */
  void *x, *y;
  CK(cudaMalloc(&x, host_x.size() * 2));
  CK(cudaMemcpy(x, host_x.data(), host_x.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&y, (size_t)(e.m * e.n) * 2));

  tgemm__shape shape = {e.m, e.n, e.k, TGEMM_BF16, TGEMM_BF16, false};
  tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
  int nc = tgemm__w4a16_stream_candidates(&shape, 132, cands, TGEMM__MAX_CANDIDATES);
  const tgemm__kernel *kernel = NULL;
  for (int i = 0; i < nc; i++)
    if (!strcmp(cands[i].name, e.kernel)) kernel = &cands[i];
  if (!kernel) {
    printf("%s: no candidate %s\n", e.layer, e.kernel);
    return;
  }
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  tgemm__cuda_gemm_args a = {};
  a.m = e.m, a.n = e.n, a.k = e.k;
  a.x = x, a.ldx = e.k, a.x_dtype = TGEMM_BF16;
  a.ldw_packed = ldq, a.ldw_scales = lds;
  a.y = y, a.ldy = e.n, a.y_dtype = TGEMM_BF16;
  a.sm_count = 132;
  a.stream = stream;
  /* TGEMM_PROBE_PAIRED=1: the kernels that read the paired nibble order
   * (the random bytes serve either order: timing only). */
  const char *paired = getenv("TGEMM_PROBE_PAIRED");
  a.w_paired = paired && !strcmp(paired, "1");
  const int calls = copies * std::max(1, 200 / copies);
  for (int i = 0; i < copies; i++) { /* warm-up, eager */
    a.w_packed = wq[i], a.w_scales = ws[i];
    CK(tgemm__w4a16_stream_run(kernel, &a));
  }
  CK(cudaStreamSynchronize(stream));
  cudaEvent_t t0, t1;
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  void *phases;
  CK(cudaGetSymbolAddress(&phases, tgemm_w4_phases));
  CK(cudaMemset(phases, 0, sizeof(unsigned long long) * TGEMM_W4_PHASES * 12));
  const float per_call = graph_us(stream, t0, t1, calls, [&](int i) {
    a.w_packed = wq[i % copies], a.w_scales = ws[i % copies];
    CK(tgemm__w4a16_stream_run(kernel, &a));
  });
  static unsigned long long rec[TGEMM_W4_PHASES][12];
  CK(cudaMemcpyFromSymbol(rec, tgemm_w4_phases, sizeof rec));

  const config cfg = tgemm_decode::config_of(kernel);
  const long long groups = (e.n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  const int blocks = (int)std::min<long long>(groups * cfg.split, TGEMM_W4_PHASES);
  unsigned long long first = ~0ull, last = 0;
  for (int b = 0; b < blocks; b++) first = std::min(first, rec[b][0]), last = std::max(last, rec[b][4]);
  std::vector<double> start, land, loop, wait, reduce, life, end, ghz, e_sts, e_bar, e_sum, e_exit;
  std::vector<int> per_sm(256, 0);
  for (int b = 0; b < blocks; b++) {
    const unsigned long long *r = rec[b];
    start.push_back((r[0] - first) / 1e3);
    land.push_back((r[1] - r[0]) / 1e3);
    loop.push_back((r[2] - r[1]) / 1e3);
    wait.push_back((r[3] - r[2]) / 1e3);
    reduce.push_back((r[4] - r[3]) / 1e3);
    if (r[8] && r[9] && r[10]) {
      e_sts.push_back((r[8] - r[3]) / 1e3);
      e_bar.push_back((r[9] - r[8]) / 1e3);
      e_sum.push_back((r[10] - r[9]) / 1e3);
      e_exit.push_back((r[4] - r[10]) / 1e3);
    }
    life.push_back((r[4] - r[0]) / 1e3);
    end.push_back((r[4] - first) / 1e3);
    if (r[4] > r[0]) ghz.push_back((double)(r[7] - r[6]) / (double)(r[4] - r[0]));
    per_sm[r[5] & 255]++;
  }
  int sms = 0, most = 0;
  for (int c : per_sm) sms += c > 0, most = std::max(most, c);
  printf("\n== %s N=%lld K=%lld M=%lld %s: %d blocks on %d SMs (at most %d an SM), %d copies\n", e.layer,
         e.n, e.k, e.m, e.kernel, blocks, sms, most, copies);
  printf("   graph back to back: %.2f us a call (median of 10 replays of %d calls); "
         "last call: first start to last exit %.2f us, SM clock %.2f GHz\n",
         per_call, calls, (last - first) / 1e3, pct(ghz, 50));
  printf("   us over blocks        min    p10    p50    p90    max\n");
  struct phase_row {
    const char *name;
    std::vector<double> *v;
  };
  std::vector<phase_row> shown = {{"start after first", &start}, {"first batch lands", &land},
                                  {"rest of loop (warp 0)", &loop}, {"other warps", &wait},
                                  {"reduce + store", &reduce}, {"block lifetime", &life},
                                  {"exit after first", &end}};
  if (!e_sts.empty()) /* inside an unsplit kernel's end (decode_epilogue.cuh stamps) */
    shown.insert(shown.begin() + 5, {{"  partials out", &e_sts}, {"  block barrier", &e_bar},
                                     {"  sum + store", &e_sum}, {"  to exit stamp", &e_exit}});
  for (auto &r : shown)
    printf("   %-21s %6.2f %6.2f %6.2f %6.2f %6.2f\n", r.name, pct(*r.v, 0), pct(*r.v, 10), pct(*r.v, 50),
           pct(*r.v, 90), pct(*r.v, 100));
  CK(cudaEventDestroy(t0));
  CK(cudaEventDestroy(t1));
  CK(cudaStreamDestroy(stream));
  for (int i = 0; i < copies; i++) cudaFree(wq[i]), cudaFree(ws[i]);
  cudaFree(x), cudaFree(y);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc > 1) {
    if ((argc - 1) % 5 != 0) {
      fprintf(stderr, "usage: %s [LAYER N K M KERNEL]...\n", argv[0]);
      return 2;
    }
    for (int i = 1; i + 4 < argc; i += 5) {
      const experiment e = {argv[i], atoll(argv[i + 1]), atoll(argv[i + 2]), atoll(argv[i + 3]), argv[i + 4]};
      if (e.n <= 0 || e.k <= 0 || e.m <= 0 || e.m > TGEMM__W4A16_STREAM_MAX_M) {
        fprintf(stderr, "%s: bad shape N=%s K=%s M=%s\n", e.layer, argv[i + 1], argv[i + 2], argv[i + 3]);
        return 2;
      }
      run(e);
    }
    return 0;
  }
  static const experiment list[] = {
      {"q_a_proj", 1536, 7168, 1, "w4a16_stream_w16_t1_u1_p2_s1_xr"},
      {"q_a_proj", 1536, 7168, 1, "w4a16_stream_w8_t1_u1_p4_s1_xr"},
      {"q_a_proj", 1536, 7168, 1, "w4a16_stream_w8_t1_u1_p4_s2_xr"},
      {"q_a_proj", 1536, 7168, 1, "w4a16_stream_w4_t1_u1_p4_s4_xr"},
      {"fused_qkv_a_proj", 2112, 7168, 1, "w4a16_stream_w16_t1_u1_p2_s1_xr"},
      {"kv_b_proj", 32768, 512, 1, "w4a16_stream_w4_t2_u1_p2_s1"},
      {"o_proj TP8", 7168, 2048, 1, "w4a16_stream_w8_t2_u1_p2_s1_xr"},
      {"q_b_proj", 24576, 1536, 1, "w4a16_stream_w4_t4_u1_p2_s1_xr"},
  };
  for (const experiment &e : list) run(e);
  return 0;
}
