/* Standalone check-and-time harness for the decode kernels (skinny BF16 and
 * streaming W4A16) against cuBLASLt's heuristic default, on the DeepSeek-V3
 * attention projections.  Needs only the kernel files and the shared
 * headers:
 *
 *   nvcc -O3 -arch=sm_90 -std=c++17 -I include -I src -Xcompiler -fopenmp \
 *     bench/device/skinny_harness.cu src/cuda/skinny_bf16.cu \
 *     src/cuda/w4a16_stream.cu -lcublasLt -lgomp -o skinny_harness
 *   ./skinny_harness [out_dir]      (bench/device/skinny.sh does all this)
 * Environment: SKINNY_PARTS=odd|odd-small|deepseek|all (default all),
 * SKINNY_ONLY=skinny_bf16|w4a16_stream (deepseek part, one family).
 *
 * What it does:
 *  1. correctness: every candidate of every family, on fresh N(0,1) data,
 *     against a double-precision CPU reference, NaN-poisoned outputs,
 *     ‖y-ref‖/‖ref‖ <= 1e-2 (bf16 y) or 1e-5 (f32 y); odd shapes (M = 1..16,
 *     N and K not multiples of 8/32, bias none/bf16/f32, y bf16/f32,
 *     unaligned rows and pointers, extreme MXFP4 scales, a NaN scale);
 *     M = 17 must get no candidates; a bad kernel must be refused.
 *  2. timing, cold L2, two ways: "graph" = a CUDA graph of back-to-back
 *     launches rotating over weight copies totalling >= 200 MB (4x the
 *     L2), time per launch = replay time / launches, median of 15 replays;
 *     "flush" = 256 MB memset before each launch, events around the launch
 *     alone, median of 60 reps.  cuBLASLt (top-1 heuristic, bf16 in/out,
 *     f32 compute, 32 MiB workspace) is timed on the same buffers.
 *  3. floor = bytes (x + W (+scales) + y) / copy bandwidth (1 GiB D2D
 *     memcpy, read + write counted).
 * Full results go to <out_dir>/skinny.csv; the summary tables are printed
 * last. */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "cuda/skinny_bf16.cuh"
#include "cuda/w4a16_stream.cuh"

#include "cuda_check.cuh"
#define LK(call)                                                                         \
  do {                                                                                   \
    cublasStatus_t st_ = (call);                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                  \
      fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #call, (int)st_); \
      exit(2);                                                                           \
    }                                                                                    \
  } while (0)

/* ------------------------------------------------------------ host utils */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}
static double rng_uniform(uint64_t *s) { return ((rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static uint16_t f32_to_bf16(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float v;
  memcpy(&v, &u, 4);
  return v;
}

/* n bf16 values of N(0,1) * scale, filled in parallel from a fresh seed. */
static void fill_normal_bf16(std::vector<uint16_t> &v, double scale) {
  const uint64_t seed = rng_next(&g_rng);
  const int64_t n = (int64_t)v.size();
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(id + 1));
    const int64_t lo = n * id / nt, hi = n * (id + 1) / nt;
    for (int64_t i = lo; i < hi; i += 2) {
      double u1 = rng_uniform(&s), u2 = rng_uniform(&s);
      double r = sqrt(-2.0 * log(u1));
      v[i] = f32_to_bf16((float)(scale * r * cos(6.283185307179586 * u2)));
      if (i + 1 < hi) v[i + 1] = f32_to_bf16((float)(scale * r * sin(6.283185307179586 * u2)));
    }
  }
}

static void fill_bytes(std::vector<uint8_t> &v, int lo, int hi) {
  const uint64_t seed = rng_next(&g_rng);
  const int64_t n = (int64_t)v.size();
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(id + 1));
    for (int64_t i = n * id / nt; i < n * (id + 1) / nt; i++)
      v[i] = (uint8_t)(lo + (int)(rng_next(&s) % (uint64_t)(hi - lo + 1)));
  }
}

static const double kE2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};

/* A host problem: x [m_alloc, ldx] bf16, W dense or MXFP4, bias. */
struct host_problem {
  int64_t m, n, k;
  int64_t ldx;
  std::vector<uint16_t> x;
  bool mx;
  int64_t ldw; /* dense */
  std::vector<uint16_t> w;
  int64_t ldq, lds; /* MXFP4 */
  std::vector<uint8_t> q, s;
  int bias_dtype; /* -1 none, TGEMM_BF16, TGEMM_F32 */
  std::vector<uint16_t> bias_bf16;
  std::vector<float> bias_f32;
};

/* ref[i*n + j] = sum_k x[i,k] W[j,k] (+ bias) in double, for i < m. */
static void reference(const host_problem &p, int64_t m, std::vector<double> &ref) {
  ref.assign((size_t)(m * p.n), 0.0);
  std::vector<double> xd((size_t)(m * p.k));
  for (int64_t i = 0; i < m; i++)
    for (int64_t kk = 0; kk < p.k; kk++) xd[i * p.k + kk] = bf16_to_f32(p.x[i * p.ldx + kk]);
#pragma omp parallel
  {
    std::vector<double> wrow((size_t)p.k);
#pragma omp for schedule(dynamic, 16)
    for (int64_t j = 0; j < p.n; j++) {
      if (!p.mx) {
        for (int64_t kk = 0; kk < p.k; kk++) wrow[kk] = bf16_to_f32(p.w[j * p.ldw + kk]);
      } else {
        for (int64_t kk = 0; kk < p.k; kk++) {
          uint8_t sc = p.s[j * p.lds + kk / 32];
          uint8_t byte = p.q[j * p.ldq + kk / 2];
          int code = (kk & 1) ? byte >> 4 : byte & 15;
          wrow[kk] = sc == 255 ? NAN : ldexp(kE2m1[code], (int)sc - 127);
        }
      }
      double b = 0;
      if (p.bias_dtype == TGEMM_BF16) b = bf16_to_f32(p.bias_bf16[j]);
      if (p.bias_dtype == TGEMM_F32) b = p.bias_f32[j];
      for (int64_t i = 0; i < m; i++) {
        const double *xr = &xd[i * p.k];
        double acc = 0;
        for (int64_t kk = 0; kk < p.k; kk++) acc += xr[kk] * wrow[kk];
        ref[i * p.n + j] = acc + b;
      }
    }
  }
}

/* Device copies of one problem. */
struct dev_problem {
  uint16_t *x = nullptr;
  std::vector<void *> w;  /* dense copies (rotation) */
  std::vector<uint8_t *> q, s; /* MXFP4 copies */
  void *bias = nullptr;
  void *y = nullptr;
  size_t y_bytes = 0;
};

static void *dmalloc_copy(const void *src, size_t bytes) {
  void *p;
  CK(cudaMalloc(&p, bytes ? bytes : 1));
  if (bytes) CK(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice));
  return p;
}

/* Relative Frobenius error; nonfinite outputs where ref is finite fail.
 * Rows listed in nan_rows must be NaN for every token and are skipped. */
struct check_result {
  double rel;
  int64_t bad; /* unwritten / unexpected nonfinite / missing NaN */
};
static check_result compare(const std::vector<double> &ref, const void *y, bool y_f32, int64_t m,
                            int64_t n, int64_t ldy, int64_t nan_row) {
  double num = 0, den = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double v = y_f32 ? ((const float *)y)[i * ldy + j] : bf16_to_f32(((const uint16_t *)y)[i * ldy + j]);
      if (j == nan_row) {
        if (!isnan(v)) bad++;
        continue;
      }
      double r = ref[i * n + j];
      if (!isfinite(v)) {
        bad++;
        continue;
      }
      num += (v - r) * (v - r);
      den += r * r;
    }
  check_result c;
  c.rel = den > 0 ? sqrt(num / den) : sqrt(num);
  c.bad = bad;
  return c;
}

/* ---------------------------------------------------------------- timing */

static cudaStream_t g_stream;
static void *g_flush;
static const size_t kFlushBytes = 256ull << 20;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* launch(i) enqueues launch i on g_stream using weight copy i % copies. */
static double time_graph(const std::function<void(int)> &launch, int copies) {
  const int launches = std::max(copies, 20);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < launches; i++) launch(i);
  CK(cudaStreamEndCapture(g_stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<double> us;
  for (int r = 0; r < 18; r++) {
    CK(cudaEventRecord(e0, g_stream));
    CK(cudaGraphLaunch(exec, g_stream));
    CK(cudaEventRecord(e1, g_stream));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 3) us.push_back(1000.0 * ms / launches);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  return median(us);
}

static double time_flush(const std::function<void(int)> &launch) {
  const int warm = 5, reps = 60;
  std::vector<cudaEvent_t> ev(2 * (warm + reps));
  for (auto &e : ev) CK(cudaEventCreate(&e));
  for (int r = 0; r < warm + reps; r++) {
    CK(cudaMemsetAsync(g_flush, r & 0x7f, kFlushBytes, g_stream));
    CK(cudaEventRecord(ev[2 * r], g_stream));
    launch(0);
    CK(cudaEventRecord(ev[2 * r + 1], g_stream));
  }
  CK(cudaStreamSynchronize(g_stream));
  std::vector<double> us;
  for (int r = warm; r < warm + reps; r++) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[2 * r], ev[2 * r + 1]));
    us.push_back(1000.0 * ms);
  }
  for (auto &e : ev) CK(cudaEventDestroy(e));
  return median(us);
}

/* --------------------------------------------------------------- cuBLASLt */

static cublasLtHandle_t g_lt;
static void *g_lt_ws;
static const size_t kLtWs = 32ull << 20;

struct lt_plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
  bool ok = false;
};

/* Row-major y[M,N] = x[M,K]·W[N,K]ᵀ as column-major C[N,M] = Wᵀᵀ·xᵀ:
 * A = W seen as col-major [K,N] (transposed), B = x as col-major [K,M]. */
static lt_plan lt_make(int64_t m, int64_t n, int64_t k) {
  lt_plan p;
  LK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  LK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, n, k));
  LK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, m, k));
  LK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, n, m, n));
  cublasLtMatmulPreference_t pref;
  LK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = kLtWs;
  LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                          sizeof ws));
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  if (cublasLtMatmulAlgoGetHeuristic(g_lt, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found) ==
          CUBLAS_STATUS_SUCCESS &&
      found > 0) {
    p.algo = res.algo;
    p.ok = true;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  return p;
}
static void lt_free(lt_plan &p) {
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
}
static void lt_run(const lt_plan &p, const void *w, const void *x, void *y) {
  const float alpha = 1.0f, beta = 0.0f;
  LK(cublasLtMatmul(g_lt, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, g_lt_ws,
                    kLtWs, g_stream));
}

/* ----------------------------------------------------------- candidates */

enum family { FAM_SKINNY = 0, FAM_W4 = 1 };
static const char *kFamName[2] = {"skinny_bf16", "w4a16_stream"};

static int get_candidates(family f, const tgemm__shape *s, int sms, tgemm__kernel *out, int cap) {
  return f == FAM_SKINNY ? tgemm__skinny_bf16_candidates(s, sms, out, cap)
                         : tgemm__w4a16_stream_candidates(s, sms, out, cap);
}
static cudaError_t run_kernel(family f, const tgemm__kernel *kern, const tgemm__cuda_gemm_args *a) {
  return f == FAM_SKINNY ? tgemm__skinny_bf16_run(kern, a) : tgemm__w4a16_stream_run(kern, a);
}

static int g_sms;
static int64_t g_checks = 0, g_failures = 0;
static FILE *g_csv;

/* Args for copy `copy` of the device problem. */
static tgemm__cuda_gemm_args make_args(const host_problem &p, const dev_problem &d, int64_t m,
                                       int copy, bool y_f32, const uint16_t *x_override = nullptr) {
  tgemm__cuda_gemm_args a;
  memset(&a, 0, sizeof a);
  a.m = m, a.n = p.n, a.k = p.k;
  a.x = x_override ? x_override : d.x;
  a.ldx = p.ldx;
  a.x_dtype = TGEMM_BF16;
  if (!p.mx) {
    a.w = d.w[copy % d.w.size()];
    a.ldw = p.ldw;
    a.w_dtype = TGEMM_BF16;
  } else {
    a.w_packed = d.q[copy % d.q.size()];
    a.ldw_packed = p.ldq;
    a.w_scales = d.s[copy % d.s.size()];
    a.ldw_scales = p.lds;
    a.w_dtype = TGEMM_MXFP4;
  }
  a.bias = p.bias_dtype >= 0 ? d.bias : nullptr;
  a.bias_dtype = p.bias_dtype >= 0 ? (tgemm_dtype)p.bias_dtype : TGEMM_F32;
  a.y = d.y;
  a.ldy = p.n;
  a.y_dtype = y_f32 ? TGEMM_F32 : TGEMM_BF16;
  a.sm_count = g_sms;
  a.stream = g_stream;
  return a;
}

static dev_problem upload(const host_problem &p, int copies, bool y_f32_capable) {
  dev_problem d;
  d.x = (uint16_t *)dmalloc_copy(p.x.data(), p.x.size() * 2);
  for (int c = 0; c < copies; c++) {
    if (!p.mx) {
      if (c == 0) {
        d.w.push_back(dmalloc_copy(p.w.data(), p.w.size() * 2));
      } else {
        void *w;
        CK(cudaMalloc(&w, p.w.size() * 2));
        CK(cudaMemcpy(w, d.w[0], p.w.size() * 2, cudaMemcpyDeviceToDevice));
        d.w.push_back(w);
      }
    } else {
      if (c == 0) {
        d.q.push_back((uint8_t *)dmalloc_copy(p.q.data(), p.q.size()));
        d.s.push_back((uint8_t *)dmalloc_copy(p.s.data(), p.s.size()));
      } else {
        uint8_t *q, *s;
        CK(cudaMalloc(&q, p.q.size()));
        CK(cudaMalloc(&s, p.s.size()));
        CK(cudaMemcpy(q, d.q[0], p.q.size(), cudaMemcpyDeviceToDevice));
        CK(cudaMemcpy(s, d.s[0], p.s.size(), cudaMemcpyDeviceToDevice));
        d.q.push_back(q);
        d.s.push_back(s);
      }
    }
  }
  if (p.bias_dtype == TGEMM_BF16) d.bias = dmalloc_copy(p.bias_bf16.data(), p.n * 2);
  if (p.bias_dtype == TGEMM_F32) d.bias = dmalloc_copy(p.bias_f32.data(), p.n * 4);
  (void)y_f32_capable;
  d.y_bytes = (size_t)(p.m * p.n * 4);
  CK(cudaMalloc(&d.y, d.y_bytes));
  CK(cudaDeviceSynchronize()); /* the D2D copies ran on the legacy stream */
  return d;
}
static void release(dev_problem &d) {
  cudaFree(d.x);
  for (void *w : d.w) cudaFree(w);
  for (void *q : d.q) cudaFree(q);
  for (void *s : d.s) cudaFree(s);
  if (d.bias) cudaFree(d.bias);
  cudaFree(d.y);
  d = dev_problem();
}

/* Poison y, run, read back, compare.  Returns the relative error (or inf
 * when the run failed / wrote nonfinite values). */
static double check_one(family f, const tgemm__kernel &kern, const host_problem &p,
                        const dev_problem &d, int64_t m, bool y_f32, const std::vector<double> &ref,
                        const char *what, int64_t nan_row = -1,
                        const uint16_t *x_override = nullptr) {
  /* On g_stream: a plain cudaMemset goes to the legacy stream, which does
   * not order against a non-blocking stream. */
  CK(cudaMemsetAsync(d.y, 0xFF, d.y_bytes, g_stream)); /* NaN in bf16 and f32 */
  tgemm__cuda_gemm_args a = make_args(p, d, m, 0, y_f32, x_override);
  cudaError_t err = run_kernel(f, &kern, &a);
  if (err == cudaSuccess) err = cudaStreamSynchronize(g_stream);
  std::vector<uint8_t> y(d.y_bytes);
  CK(cudaMemcpy(y.data(), d.y, d.y_bytes, cudaMemcpyDeviceToHost));
  check_result c = {INFINITY, -1};
  if (err == cudaSuccess) c = compare(ref, y.data(), y_f32, m, p.n, p.n, nan_row);
  const double tol = y_f32 ? 1e-5 : 1e-2;
  g_checks++;
  if (err != cudaSuccess || c.bad != 0 || !(c.rel <= tol)) {
    if (++g_failures > 60) return INFINITY; /* the first 60 tell the story */
    printf("FAIL %s %s: M=%lld N=%lld K=%lld y=%s bias=%d: %s rel=%.3g bad=%lld\n", what,
           kern.name, (long long)m, (long long)p.n, (long long)p.k, y_f32 ? "f32" : "bf16",
           p.bias_dtype, cudaGetErrorString(err), c.rel, (long long)c.bad);
    fflush(stdout);
    return INFINITY;
  }
  return c.rel;
}

/* --------------------------------------------------------- odd shapes */

static void odd_shape_suite(bool small) {
  printf("== odd shapes (every candidate, both families)%s\n", small ? ", reduced set" : "");
  struct odd {
    int64_t n, k;
    int x_shift; /* elements: misaligned x pointer */
    int ldq_pad; /* extra packed bytes per row: misaligned W4 rows */
  } cases[] = {{77, 1000, 0, 0}, {33, 1001, 0, 0}, {130, 72, 0, 0}, {16, 32, 0, 0},
               {1, 8, 0, 0},     {45, 16, 0, 0},   {300, 4120, 0, 0}, {29, 520, 1, 4},
               {64, 33, 0, 0},   {576, 7168, 0, 0}};
  for (const odd &oc : cases) {
    if (small && (oc.n == 576 || oc.n == 300)) continue;
    for (int64_t m = 1; m <= 17; m++) {
      if (small && m != 1 && m != 9 && m != 17) continue;
      for (int fam = 0; fam < 2; fam++) {
        tgemm__shape shape = {m, oc.n, oc.k, TGEMM_BF16, TGEMM_BF16, false};
        tgemm__kernel kern[128];
        int count = get_candidates((family)fam, &shape, g_sms, kern, 128);
        if (m == 17) {
          g_checks++;
          if (count != 0) {
            g_failures++;
            printf("FAIL %s: M=17 got %d candidates\n", kFamName[fam], count);
          }
          continue;
        }
        if (count <= 0) {
          g_checks++, g_failures++;
          printf("FAIL %s: no candidates for M=%lld N=%lld K=%lld\n", kFamName[fam],
                 (long long)m, (long long)oc.n, (long long)oc.k);
          continue;
        }
        /* Full bias x y product for a few M, one combination otherwise. */
        const bool full = (m == 1 || m == 3 || m == 8 || m == 9 || m == 16);
        if (small) count = std::min(count, 16);
        for (int combo = 0; combo < 6; combo++) {
          const int bias_sel = combo % 3, y_sel = combo / 3;
          if (!full && combo != (int)(m % 6)) continue;
          if (small && combo != 0 && combo != 5) continue;
          host_problem p;
          p.m = m, p.n = oc.n, p.k = oc.k;
          p.ldx = oc.k;
          p.x.resize((size_t)(m * p.ldx + oc.x_shift + 8));
          fill_normal_bf16(p.x, 1.0);
          p.mx = fam == FAM_W4;
          if (!p.mx) {
            p.ldw = oc.k;
            p.w.resize((size_t)(oc.n * p.ldw));
            fill_normal_bf16(p.w, 1.0);
          } else {
            const int64_t kb = (oc.k + 31) / 32;
            p.ldq = kb * 16 + oc.ldq_pad;
            p.lds = kb;
            p.q.resize((size_t)(oc.n * p.ldq));
            p.s.resize((size_t)(oc.n * p.lds));
            fill_bytes(p.q, 0, 255);
            fill_bytes(p.s, 112, 140); /* both the one- and two-multiply paths */
            for (int64_t j = 0; j < oc.n; j++) /* format: zero padding past k */
              for (int64_t kk = oc.k; kk < kb * 32; kk++)
                p.q[j * p.ldq + kk / 2] &= (kk & 1) ? 0x0F : 0xF0;
          }
          p.bias_dtype = bias_sel == 0 ? -1 : bias_sel == 1 ? TGEMM_BF16 : TGEMM_F32;
          if (bias_sel) {
            p.bias_bf16.resize(oc.n);
            fill_normal_bf16(p.bias_bf16, 1.0);
            for (int64_t j = 0; j < oc.n; j++) p.bias_f32.push_back(bf16_to_f32(p.bias_bf16[j]) * 0.75f);
          }
          /* x shifted by x_shift elements: the reference reads the same. */
          host_problem ps = p;
          if (oc.x_shift) ps.x.erase(ps.x.begin(), ps.x.begin() + oc.x_shift);
          std::vector<double> ref;
          reference(ps, m, ref);
          dev_problem d = upload(p, 1, true);
          for (int i = 0; i < count; i++)
            check_one((family)fam, kern[i], p, d, m, y_sel == 1, ref, "odd", -1,
                      oc.x_shift ? d.x + oc.x_shift : nullptr);
          release(d);
        }
      }
    }
  }
  /* MXFP4 edge scales: tiny (2^-127.., subnormal in bf16) with huge x, large
   * (2^118..) with tiny x, and one NaN scale that must poison only its row. */
  for (int variant = 0; variant < 3; variant++) {
    for (int64_t m : {1, 5, 12}) {
      host_problem p;
      p.m = m, p.n = 40, p.k = 544;
      p.ldx = p.k;
      p.x.resize((size_t)(m * p.k));
      fill_normal_bf16(p.x, variant == 0 ? ldexp(1.0, 120) : variant == 1 ? ldexp(1.0, -120) : 1.0);
      p.mx = true;
      p.ldq = 17 * 16, p.lds = 17;
      p.q.resize((size_t)(p.n * p.ldq));
      p.s.resize((size_t)(p.n * p.lds));
      fill_bytes(p.q, 0, 255);
      if (variant == 0) fill_bytes(p.s, 0, 4);
      if (variant == 1) fill_bytes(p.s, 244, 250);
      if (variant == 2) fill_bytes(p.s, 120, 130);
      int64_t nan_row = -1;
      if (variant == 2) {
        nan_row = 7;
        p.s[nan_row * p.lds + 5] = 255;
      }
      p.bias_dtype = -1;
      std::vector<double> ref;
      reference(p, m, ref);
      tgemm__shape shape = {m, p.n, p.k, TGEMM_BF16, TGEMM_F32, false};
      tgemm__kernel kern[128];
      int count = get_candidates(FAM_W4, &shape, g_sms, kern, 128);
      dev_problem d = upload(p, 1, true);
      for (int i = 0; i < count; i++)
        check_one(FAM_W4, kern[i], p, d, m, true, ref,
                  variant == 0 ? "tiny-scales" : variant == 1 ? "huge-scales" : "nan-scale", nan_row);
      release(d);
    }
  }
  /* A kernel the family does not know must be refused. */
  {
    tgemm__kernel bad;
    memset(&bad, 0, sizeof bad);
    bad.route = TGEMM_ROUTE_SKINNY;
    snprintf(bad.name, sizeof bad.name, "skinny_bf16_w3_t1_u1_s1");
    bad.params[0] = 3, bad.params[1] = 1, bad.params[2] = 1, bad.params[3] = 1;
    tgemm__cuda_gemm_args a;
    memset(&a, 0, sizeof a);
    a.m = 1, a.n = 8, a.k = 8;
    a.x = g_flush, a.w = g_flush, a.y = g_flush;
    a.ldx = a.ldw = a.ldy = 8;
    a.x_dtype = a.w_dtype = a.y_dtype = TGEMM_BF16;
    a.stream = g_stream;
    g_checks += 2;
    if (tgemm__skinny_bf16_run(&bad, &a) != cudaErrorInvalidValue) {
      g_failures++;
      printf("FAIL: unknown skinny kernel was not refused\n");
    }
    bad.route = TGEMM_ROUTE_W4A16;
    snprintf(bad.name, sizeof bad.name, "w4a16_stream_w8_t1_u1_s3");
    bad.params[0] = 8, bad.params[3] = 3;
    if (tgemm__w4a16_stream_run(&bad, &a) != cudaErrorInvalidValue) {
      g_failures++;
      printf("FAIL: unknown w4a16_stream kernel was not refused\n");
    }
  }
  printf("   odd-shape checks so far: %lld, failures: %lld\n", (long long)g_checks,
         (long long)g_failures);
}

/* ------------------------------------------------------ DeepSeek shapes */

struct row_result {
  int fam;
  int64_t n, k, m;
  double w_mb;
  std::string def_name, best_name;
  double def_us = 0, best_us = 0, lt_us = 0;          /* graph mode */
  double def_flush = 0, best_flush = 0, lt_flush = 0; /* flush mode */
  double floor_us = 0;
  int count = 0;
};

static double g_bw; /* bytes / us */

static void deepseek_suite(std::vector<row_result> &rows, const char *only) {
  const int64_t shapes[][2] = {{2112, 7168}, {1536, 7168},  {576, 7168},
                               {24576, 1536}, {32768, 512}, {7168, 16384},
                               {3072, 1536}, {4096, 512},  {7168, 2048}};
  const int64_t ms[] = {1, 2, 4, 8, 16};
  for (const auto &sh : shapes) {
    const int64_t n = sh[0], k = sh[1];
    for (int fam = 0; fam < 2; fam++) {
      if (only && strcmp(only, kFamName[fam]) != 0) continue;
      host_problem p;
      p.m = 16, p.n = n, p.k = k, p.ldx = k;
      p.x.resize((size_t)(16 * k));
      fill_normal_bf16(p.x, 1.0);
      p.mx = fam == FAM_W4;
      p.bias_dtype = -1;
      double w_bytes;
      if (!p.mx) {
        p.ldw = k;
        p.w.resize((size_t)(n * k));
        fill_normal_bf16(p.w, 1.0);
        w_bytes = 2.0 * n * k;
      } else {
        const int64_t kb = (k + 31) / 32;
        p.ldq = kb * 16, p.lds = kb;
        p.q.resize((size_t)(n * p.ldq));
        p.s.resize((size_t)(n * p.lds));
        fill_bytes(p.q, 0, 255);
        /* Realistic scales: weights of LLMs stay far below 2^3, so s <= 128
         * (the odd-shape suite covers larger scales). */
        fill_bytes(p.s, 114, 128);
        w_bytes = (double)n * kb * 17;
      }
      std::vector<double> ref;
      reference(p, 16, ref);
      const double bf16_w_bytes = 2.0 * n * k;
      const int copies = (int)std::min<double>(64, std::max<double>(2, ceil(200e6 / w_bytes)));
      dev_problem d = upload(p, copies, true);
      /* cuBLASLt reads a bf16 weight: for W4A16 rows it is timed on its own
       * rotating bf16 copies of the same N x K. */
      std::vector<void *> lt_w;
      const int lt_copies = (int)std::min<double>(64, std::max<double>(2, ceil(200e6 / bf16_w_bytes)));
      if (!p.mx) {
        lt_w = d.w;
      } else {
        std::vector<uint16_t> wb((size_t)(n * k));
        fill_normal_bf16(wb, 1.0);
        for (int c = 0; c < lt_copies; c++) lt_w.push_back(dmalloc_copy(wb.data(), wb.size() * 2));
      }
      for (int64_t m : ms) {
        row_result rr;
        rr.fam = fam, rr.n = n, rr.k = k, rr.m = m, rr.w_mb = w_bytes / 1e6;
        rr.floor_us = (w_bytes + 2.0 * m * k + 2.0 * m * n) / g_bw;
        tgemm__shape shape = {m, n, k, TGEMM_BF16, TGEMM_BF16, false};
        tgemm__kernel kern[128];
        int count = get_candidates((family)fam, &shape, g_sms, kern, 128);
        rr.count = count;
        std::vector<double> t(count, INFINITY);
        for (int i = 0; i < count; i++) {
          double rel = check_one((family)fam, kern[i], p, d, m, false, ref, "deepseek");
          if (!isfinite(rel)) continue;
          tgemm__kernel kk = kern[i];
          t[i] = time_graph(
              [&](int c) {
                tgemm__cuda_gemm_args a = make_args(p, d, m, c, false);
                CK(run_kernel((family)fam, &kk, &a));
              },
              copies);
          /* The graph's last launch left y: it must still be right. */
          std::vector<uint16_t> y((size_t)(m * n));
          CK(cudaMemcpy(y.data(), d.y, y.size() * 2, cudaMemcpyDeviceToHost));
          check_result c = compare(ref, y.data(), false, m, n, n, -1);
          g_checks++;
          if (c.bad || !(c.rel <= 1e-2)) {
            g_failures++;
            printf("FAIL after graph replay %s M=%lld N=%lld K=%lld rel=%.3g bad=%lld\n", kk.name,
                   (long long)m, (long long)n, (long long)k, c.rel, (long long)c.bad);
          }
          fprintf(g_csv, "%s,%lld,%lld,%lld,%s,graph,%.3f,%.4f,%.3g\n", kFamName[fam],
                  (long long)n, (long long)k, (long long)m, kk.name, t[i], rr.floor_us / t[i], rel);
        }
        int best = 0;
        for (int i = 1; i < count; i++)
          if (t[i] < t[best]) best = i;
        rr.def_name = kern[0].name, rr.best_name = kern[best].name;
        rr.def_us = t[0], rr.best_us = t[best];
        /* cuBLASLt bf16 on the same (or same-shape bf16) buffers. */
        lt_plan lp = lt_make(m, n, k);
        if (lp.ok) {
          lt_run(lp, lt_w[0], d.x, d.y);
          CK(cudaStreamSynchronize(g_stream));
          if (!p.mx) {
            std::vector<uint16_t> y((size_t)(m * n));
            CK(cudaMemcpy(y.data(), d.y, y.size() * 2, cudaMemcpyDeviceToHost));
            check_result c = compare(ref, y.data(), false, m, n, n, -1);
            if (c.bad || c.rel > 1e-2) printf("note: cuBLASLt rel err %.3g bad %lld\n", c.rel, (long long)c.bad);
          }
          rr.lt_us = time_graph([&](int c) { lt_run(lp, lt_w[c % lt_w.size()], d.x, d.y); },
                                (int)lt_w.size());
          rr.lt_flush = time_flush([&](int) { lt_run(lp, lt_w[0], d.x, d.y); });
        }
        lt_free(lp);
        for (int which = 0; which < 2; which++) {
          tgemm__kernel kk = kern[which == 0 ? 0 : best];
          double us = time_flush([&](int) {
            tgemm__cuda_gemm_args a = make_args(p, d, m, 0, false);
            CK(run_kernel((family)fam, &kk, &a));
          });
          (which == 0 ? rr.def_flush : rr.best_flush) = us;
          if (which == 0 && best == 0) {
            rr.best_flush = us;
            break;
          }
        }
        fprintf(g_csv, "%s,%lld,%lld,%lld,%s,flush,%.3f,%.4f,\n", kFamName[fam], (long long)n,
                (long long)k, (long long)m, rr.def_name.c_str(), rr.def_flush,
                rr.floor_us / rr.def_flush);
        fprintf(g_csv, "cublasLt_bf16,%lld,%lld,%lld,heuristic,graph,%.3f,%.4f,\n", (long long)n,
                (long long)k, (long long)m, rr.lt_us, (2.0 * n * k + 2.0 * m * k + 2.0 * m * n) / g_bw / rr.lt_us);
        fprintf(g_csv, "cublasLt_bf16,%lld,%lld,%lld,heuristic,flush,%.3f,%.4f,\n", (long long)n,
                (long long)k, (long long)m, rr.lt_flush, (2.0 * n * k + 2.0 * m * k + 2.0 * m * n) / g_bw / rr.lt_flush);
        fflush(g_csv);
        printf("%-12s %5lldx%-5lld M=%-2lld cands=%-2d def %-26s %7.2f us  best %-26s %7.2f us  "
               "cublasLt %7.2f us | flush def %7.2f lt %7.2f\n",
               kFamName[fam], (long long)n, (long long)k, (long long)m, count, rr.def_name.c_str(),
               rr.def_us, rr.best_name.c_str(), rr.best_us, rr.lt_us, rr.def_flush, rr.lt_flush);
        fflush(stdout);
        rows.push_back(rr);
      }
      if (p.mx)
        for (void *w : lt_w) cudaFree(w);
      release(d);
    }
  }
}

/* ----------------------------------------------------------------- main */

__global__ void empty_kernel() {}

int main(int argc, char **argv) {
  const char *out_dir = argc > 1 ? argv[1] : ".";
  const char *only = getenv("SKINNY_ONLY"); /* "skinny_bf16" or "w4a16_stream" */
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  printf("device: %s (sm_%d%d, %d SMs, L2 %d MB)\n", prop.name, prop.major, prop.minor, g_sms,
         prop.l2CacheSize >> 20);
  CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  CK(cudaMalloc(&g_flush, kFlushBytes));
  LK(cublasLtCreate(&g_lt));
  CK(cudaMalloc(&g_lt_ws, kLtWs));
  int lt_ver = (int)cublasLtGetVersion();
  printf("cublasLt version %d\n", lt_ver);

  { /* copy bandwidth: 1 GiB D2D, read + write counted */
    const size_t bytes = 1ull << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 1, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<double> us;
    for (int r = 0; r < 12; r++) {
      CK(cudaEventRecord(e0, g_stream));
      CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_stream));
      CK(cudaEventRecord(e1, g_stream));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (r >= 2) us.push_back(1000.0 * ms);
    }
    g_bw = 2.0 * bytes / median(us);
    printf("copy bandwidth: %.3f TB/s (1 GiB D2D memcpy, read+write)\n", g_bw / 1e6);
    CK(cudaFree(a));
    CK(cudaFree(b));
    /* launch overhead reference: an empty kernel, both timing modes */
    double g = time_graph([&](int) { empty_kernel<<<1, 32, 0, g_stream>>>(); }, 1);
    double f = time_flush([&](int) { empty_kernel<<<1, 32, 0, g_stream>>>(); });
    printf("empty kernel: graph %.2f us/launch, flush-mode events %.2f us\n", g, f);
  }

  /* SKINNY_PARTS: "odd", "odd-small", "deepseek" or "all" (default). */
  const char *parts = getenv("SKINNY_PARTS") ? getenv("SKINNY_PARTS") : "all";
  if (!strcmp(parts, "odd") || !strcmp(parts, "all")) odd_shape_suite(false);
  if (!strcmp(parts, "odd-small")) odd_shape_suite(true);
  std::vector<row_result> rows;
  std::string csv_path;
  if (!strcmp(parts, "deepseek") || !strcmp(parts, "all")) {
    csv_path = std::string(out_dir) + "/skinny" + (only ? std::string("_") + only : "") + ".csv";
    g_csv = fopen(csv_path.c_str(), "w");
    if (!g_csv) {
      perror(csv_path.c_str());
      return 2;
    }
    fprintf(g_csv, "family,n,k,m,kernel,mode,us,floor_frac,rel_err\n");
    deepseek_suite(rows, only);
    fclose(g_csv);
  }

  /* ------------------------------------------------------------ summary */
  printf("\n== %s, copy %.3f TB/s; times in us, cold L2.  graph = back-to-back launches in a CUDA\n"
         "   graph over rotating weight copies (>=200 MB); flush = 256 MB memset before each launch.\n"
         "   frac = floor / time, floor = bytes(x+W(+scales)+y) / copy bandwidth.\n",
         prop.name, g_bw / 1e6);
  for (int fam = 0; fam < 2; fam++) {
    std::vector<const row_result *> fr;
    for (const auto &r : rows)
      if (r.fam == fam) fr.push_back(&r);
    if (fr.empty()) continue;
    if (fam == FAM_SKINNY)
      printf("\n%-11s %2s | %6s %5s | %6s %5s | %6s | %5s %5s | %6s %6s %5s\n", "skinny N x K", "M",
             "def", "frac", "best", "frac", "cuBLAS", "x def", "x bst", "fl.def", "fl.cub", "x fl");
    else
      printf("\n%-11s %2s | %6s %5s | %6s %5s | %6s | %5s %5s | %6s %6s %5s\n", "w4a16 N x K", "M",
             "def", "frac", "best", "frac", "cuBLAS", "x def", "x bst", "fl.def", "fl.cub", "x fl");
    std::vector<double> def_frac, best_frac;
    double min_big_def = 1e9, min_big_best = 1e9, min_sp_def = 1e9, min_sp_flush = 1e9;
    int slower_def = 0, slower_flush = 0;
    double min_big_sp_def = 1e9, min_big_sp_flush = 1e9;
    for (const row_result *r : fr) {
      const double fd = r->floor_us / r->def_us, fb = r->floor_us / r->best_us;
      const double sd = r->lt_us / r->def_us, sb = r->lt_us / r->best_us;
      const double sf = r->lt_flush / r->def_flush;
      char label[32];
      snprintf(label, sizeof label, "%lldx%lld", (long long)r->n, (long long)r->k);
      printf("%-11s %2lld | %6.2f %5.2f | %6.2f %5.2f | %6.2f | %5.2f %5.2f | %6.2f %6.2f %5.2f\n",
             label, (long long)r->m, r->def_us, fd, r->best_us, fb, r->lt_us, sd, sb, r->def_flush,
             r->lt_flush, sf);
      def_frac.push_back(fd);
      best_frac.push_back(fb);
      const bool big = 2.0 * r->n * r->k >= 16e6; /* bf16 weight >= 16 MB */
      if (big) {
        min_big_def = std::min(min_big_def, fd);
        min_big_best = std::min(min_big_best, fb);
        min_big_sp_def = std::min(min_big_sp_def, sd);
        min_big_sp_flush = std::min(min_big_sp_flush, sf);
      }
      min_sp_def = std::min(min_sp_def, sd);
      min_sp_flush = std::min(min_sp_flush, sf);
      slower_def += sd < 1.0;
      slower_flush += sf < 1.0;
    }
    printf("%s summary: median frac def %.3f best %.3f | min frac (W>=16MB) def %.3f best %.3f |\n"
           "  speedup vs cuBLASLt: min all def %.2f (flush %.2f), min W>=16MB def %.2f (flush %.2f) |"
           " points slower than cuBLASLt: graph %d, flush %d (of %zu)\n",
           kFamName[fam], median(def_frac), median(best_frac), min_big_def, min_big_best, min_sp_def,
           min_sp_flush, min_big_sp_def, min_big_sp_flush, slower_def, slower_flush, fr.size());
  }
  printf("\ncorrectness: %lld checks, %lld failures\n", (long long)g_checks, (long long)g_failures);
  if (!csv_path.empty()) printf("csv: %s\n", csv_path.c_str());
  return g_failures ? 1 : 0;
}
