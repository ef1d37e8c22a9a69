/* Standalone check-and-time harness for the MXFP4 GPU kernels: the
 * quantizer/dequantizer (mxfp4_quant.cu), the tensor-core W4A16 kernels and
 * the W4A4 kernels (w4a16_mma.cu, w4a4.cu), plus the streaming W4A16
 * kernels (w4a16_stream.cu) through the W4A16 dispatch.  Needs none of the
 * rest of the library (bench/device/mxgpu.sh builds and runs it).
 *
 *  1. Quantizer bytes against an oracle written here from DESIGN.md §3
 *     (double arithmetic, table search for the rounding; independent of
 *     the device code), and against tgemm_mxfp4_quantize_row_ref when
 *     built with -DMXGPU_HAVE_REF: f32/f16/bf16, all three modes, widths
 *     1, 31, 33, 7167, 7168, aligned and unaligned rows, random and nasty
 *     blocks (NaN, ±Inf, ±0, subnormals, huge, exact ties, the 'even'
 *     carry, the rceil 1.5 boundary).  Dequantizer against the oracle.
 *  2. Every tile x split-K variant of W4A16 (x bf16, f16) and W4A4 (fused:
 *     x bf16/f16/f32; prequant), and every candidate the dispatchers list,
 *     against a CPU double computation of the exact product of the
 *     dequantized operands: fresh N(0,1) data, NaN-poisoned y (every
 *     element must be written, padding must not), M = 1, 5, 16, 17, 64,
 *     300, 1024, N x K = 1000 x 200 and 129 x 1537, bias none/f32/bf16,
 *     y bf16/f32, odd strides and pointers.  f32 y: ‖y-ref‖/‖ref‖ <= 1e-5
 *     and |y-ref| <= 1e-5·Σ|terms| per element; bf16 y: <= 1e-2.
 *  3. Timing (cudaEvents around the kernel only, L2 flushed before each
 *     rep by reading 256 MB as tgemm bench does, median of 30): quantizer
 *     on [8192, 7168] bf16 against D2D copy bandwidth; W4A16 and W4A4
 *     candidates against cuBLASLt's heuristic BF16 default on DeepSeek-V3
 *     shapes.  MXGPU_FLUSH=dirty flushes with a memset instead (the
 *     method until 2026-11-24, whose dirty lines the timed kernel had to
 *     write back).
 *
 * Usage: mxgpu_harness [out_dir] [--quick] [--checks-only | --timing-only |
 *        --quant-only]   (CSV to out_dir/mxgpu.csv); --quant-only times the
 *        copy and the quantizer with both flushes. */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/dtype_convert.h"
#include "cuda/cuda_args.h"
#include "cuda/l2_flush.cuh"
#include "cuda/mxfp4_quant.cuh"
#include "cuda/w4a16.cuh"
#include "cuda/w4a4.cuh"

#include "cuda_check.cuh"
#define LK(call)                                                                             \
  do {                                                                                       \
    cublasStatus_t st_ = (call);                                                             \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                      \
      fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #call, (int)st_); \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

static int g_fail = 0;
static int g_checks = 0;
static bool g_mini = false; /* a small set, for compute-sanitizer */
static FILE *g_csv = nullptr;
static cudaStream_t g_stream;

/* ------------------------------------------------------------- host utils */

static uint64_t g_rng;
static uint64_t rnd_u64() {
  uint64_t x = g_rng;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  g_rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}
static double rnd_uniform() { return ((rnd_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double rnd_normal() {
  double u = rnd_uniform(), v = rnd_uniform();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd_u64() % (uint64_t)(hi - lo + 1)); }

static float bits_f32(uint32_t u) { return tgemm__bits_f32(u); }
static uint32_t f32_bits(float f) { return tgemm__f32_bits(f); }

/* Round f to what dtype holds, as f32. */
static float to_dtype(float f, tgemm_dtype dt) {
  if (dt == TGEMM_BF16) return tgemm__bf16_to_f32(tgemm__f32_to_bf16(f));
  if (dt == TGEMM_F16) return tgemm__f16_to_f32(tgemm__f32_to_f16(f));
  return f;
}
static size_t dsize(tgemm_dtype dt) { return dt == TGEMM_F32 ? 4 : 2; }
static const char *dname(tgemm_dtype dt) {
  return dt == TGEMM_F32 ? "f32" : dt == TGEMM_F16 ? "f16" : dt == TGEMM_BF16 ? "bf16" : "?";
}
static const char *mname(int mode) { return mode == 0 ? "even" : mode == 1 ? "floor" : "rceil"; }

/* Store f32 values (already representable) as dtype into a buffer of
 * rows x ld elements. */
static std::vector<uint8_t> encode(const std::vector<float> &v, int64_t rows, int64_t cols,
                                   int64_t ld, tgemm_dtype dt) {
  std::vector<uint8_t> out((size_t)(rows * ld) * dsize(dt), 0);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      float f = v[(size_t)(r * cols + c)];
      size_t at = (size_t)(r * ld + c);
      if (dt == TGEMM_F32) {
        memcpy(&out[at * 4], &f, 4);
      } else {
        uint16_t h = dt == TGEMM_BF16 ? tgemm__f32_to_bf16(f) : tgemm__f32_to_f16(f);
        memcpy(&out[at * 2], &h, 2);
      }
    }
  return out;
}

/* ------------------------------------------ the oracle (DESIGN.md §3) */

static const double kE2M1[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

static int oracle_exponent(float amax, int mode) {
  int s;
  if (mode == 0) { /* even: bit-level rule as written in the spec */
    uint32_t u = f32_bits(amax) + 0x200000u;
    uint32_t e = (u >> 23) & 0xFFu;
    if (e == 0)
      s = -1000; /* log2(0): clamped */
    else if (e == 0xFFu)
      s = 128 - 2;
    else
      s = (int)e - 127 - 2;
  } else {
    int e2;
    frexp((double)amax, &e2); /* amax = f·2^e2, f in [0.5, 1): floor(log2) = e2 - 1 */
    s = e2 - 1 - 2;
    if (mode == 2) {
      s = e2 - 1 - 4;
      while ((double)amax > ldexp(6.0, s)) s++; /* smallest s with amax <= 6·2^s */
    }
  }
  return s < -127 ? -127 : (s > 127 ? 127 : s);
}

static uint8_t oracle_code(float v, int s) {
  double q = ldexp((double)v, -s); /* exact in double */
  double a = fabs(q);
  if (a > 6.0) a = 6.0;
  int best = 0;
  double bestd = INFINITY;
  for (int i = 0; i < 8; i++) {
    double d = fabs(a - kE2M1[i]);
    if (d < bestd || (d == bestd && i % 2 == 0)) best = i, bestd = d;
  }
  return (uint8_t)(best | (signbit(v) ? 8 : 0));
}

/* One row of n values -> packed (ceil(n/32)*16 bytes) + scales. */
static void oracle_quant_row(const float *src, int64_t n, int mode, uint8_t *packed,
                             uint8_t *scales) {
  for (int64_t b = 0; b * 32 < n; b++) {
    float v[32];
    bool bad = false;
    float amax = 0;
    for (int i = 0; i < 32; i++) {
      int64_t c = b * 32 + i;
      v[i] = c < n ? src[c] : 0.0f;
      if (!std::isfinite(v[i])) bad = true;
      amax = std::max(amax, fabsf(v[i]));
    }
    uint8_t codes[32];
    if (bad) {
      scales[b] = 0xFF;
      memset(codes, 0, 32);
    } else if (amax == 0.0f) {
      scales[b] = 0;
      for (int i = 0; i < 32; i++) codes[i] = signbit(v[i]) ? 8 : 0;
    } else {
      int s = oracle_exponent(amax, mode);
      scales[b] = (uint8_t)(s + 127);
      for (int i = 0; i < 32; i++) codes[i] = oracle_code(v[i], s);
    }
    for (int j = 0; j < 16; j++) packed[b * 16 + j] = (uint8_t)(codes[2 * j] | (codes[2 * j + 1] << 4));
  }
}

static double oracle_value(uint8_t code, uint8_t scale) {
  if (scale == 0xFF) return NAN;
  double v = ldexp(kE2M1[code & 7], (int)scale - 127);
  return (code & 8) ? -v : v;
}

static void oracle_dequant_row(const uint8_t *packed, const uint8_t *scales, int64_t n,
                               double *out) {
  for (int64_t i = 0; i < n; i++) {
    uint8_t byte = packed[i / 2];
    out[i] = oracle_value((i & 1) ? byte >> 4 : byte & 15, scales[i / 32]);
  }
}

/* ------------------------------------------------------ quantizer checks */

/* Fill one 32-value block with a random "kind" of content, representable
 * in dt. */
static void gen_block(float *v, int count, tgemm_dtype dt) {
  const int kind = rnd_int(0, 10);
  const int emax = dt == TGEMM_F16 ? 14 : 126;
  const int esub = dt == TGEMM_F16 ? -22 : (dt == TGEMM_BF16 ? -130 : -145);
  for (int i = 0; i < count; i++) {
    double x = rnd_normal();
    switch (kind) {
      case 1: x = ldexp(x, rnd_int(esub, esub + 8)); break;      /* subnormal range */
      case 2: x = ldexp(x, rnd_int(emax - 6, emax - 1)); break; /* huge */
      case 5: x = (rnd_u64() & 1) ? 0.0 : -0.0; break;
      case 6: { /* exact ties of the E2M1 grid */
        static const double t[] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 0.5, 3.0};
        x = t[rnd_int(0, 9)] * ((rnd_u64() & 1) ? 1 : -1);
        x = ldexp(x, rnd_int(-3, 3));
        break;
      }
      case 9: x = i == 0 ? x : 0.0; break;
      default: x = ldexp(x, rnd_int(-12, 12)); break;
    }
    v[i] = to_dtype((float)x, dt);
  }
  if (count == 0) return;
  const int at = rnd_int(0, count - 1);
  switch (kind) {
    case 3: v[at] = NAN; break;
    case 4: v[at] = (rnd_u64() & 1) ? INFINITY : -INFINITY; break;
    case 6: v[at] = to_dtype(ldexp(4.0, rnd_int(-3, 3)), dt); break;
    case 7: { /* the 'even' carry: significand 1.75 and just below, top exponent too */
      int e = (rnd_u64() & 1) ? emax + 1 : rnd_int(-20, 20);
      float f = (float)ldexp(1.75, e);
      if (rnd_u64() & 1) f = nextafterf(f, 0.0f);
      v[at] = to_dtype(f, dt);
      break;
    }
    case 8: { /* the rceil 1.5 boundary */
      float f = (float)ldexp(1.5, rnd_int(-20, 20));
      if (rnd_u64() & 1) f = nextafterf(f, INFINITY);
      v[at] = to_dtype(f, dt);
      break;
    }
    case 10: v[at] = to_dtype(dt == TGEMM_F16 ? 65504.0f : 3.3895314e38f, dt); break; /* max */
    default: break;
  }
}

static void check_quantizer(tgemm_dtype dt, int mode, int64_t rows, int64_t cols, int64_t pad) {
  const int64_t nb = (cols + 31) / 32, ld = cols + pad;
  const int64_t packed_ld = nb * 16 + 5, scales_ld = nb + 3; /* odd padding, kept untouched */
  std::vector<float> v((size_t)(rows * cols));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t b = 0; b < nb; b++) {
      int count = (int)std::min<int64_t>(32, cols - b * 32);
      gen_block(&v[(size_t)(r * cols + b * 32)], count, dt);
    }
  std::vector<uint8_t> host = encode(v, rows, cols, ld, dt);
  std::vector<uint8_t> want_p((size_t)(rows * packed_ld), 0xA5), want_s((size_t)(rows * scales_ld), 0xA5);
  for (int64_t r = 0; r < rows; r++)
    oracle_quant_row(&v[(size_t)(r * cols)], cols, mode, &want_p[(size_t)(r * packed_ld)],
                     &want_s[(size_t)(r * scales_ld)]);
#ifdef MXGPU_HAVE_REF
  {
    std::vector<uint8_t> rp((size_t)(nb * 16)), rs((size_t)nb);
    for (int64_t r = 0; r < rows; r++) {
      tgemm_mxfp4_quantize_row_ref(&v[(size_t)(r * cols)], cols, rp.data(), rs.data(),
                                   (tgemm_scale_mode)mode);
      if (memcmp(rp.data(), &want_p[(size_t)(r * packed_ld)], (size_t)nb * 16) ||
          memcmp(rs.data(), &want_s[(size_t)(r * scales_ld)], (size_t)nb)) {
        printf("FAIL library reference != oracle: %s %s row %lld cols %lld\n", dname(dt),
               mname(mode), (long long)r, (long long)cols);
        g_fail++;
        break;
      }
    }
  }
#endif
  /* Device: unaligned source when pad is odd (row starts move). */
  uint8_t *d_src, *d_p, *d_s;
  CK(cudaMalloc(&d_src, host.size() + 16));
  CK(cudaMalloc(&d_p, want_p.size()));
  CK(cudaMalloc(&d_s, want_s.size()));
  CK(cudaMemcpy(d_src, host.data(), host.size(), cudaMemcpyHostToDevice));
  CK(cudaMemset(d_p, 0xA5, want_p.size()));
  CK(cudaMemset(d_s, 0xA5, want_s.size()));
  CK(tgemm__mxfp4_quantize_cuda(d_src, dt, rows, cols, ld, d_p, packed_ld, d_s, scales_ld,
                                (tgemm_scale_mode)mode, g_stream));
  CK(cudaStreamSynchronize(g_stream));
  std::vector<uint8_t> got_p(want_p.size()), got_s(want_s.size());
  CK(cudaMemcpy(got_p.data(), d_p, got_p.size(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(got_s.data(), d_s, got_s.size(), cudaMemcpyDeviceToHost));
  g_checks++;
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got_p.size(); i++)
    if (got_p[i] != want_p[i]) bad++, first = first < 0 ? (int64_t)i : first;
  int64_t bad_s = 0, first_s = -1;
  for (size_t i = 0; i < got_s.size(); i++)
    if (got_s[i] != want_s[i]) bad_s++, first_s = first_s < 0 ? (int64_t)i : first_s;
  if (bad || bad_s) {
    g_fail++;
    printf("FAIL quantize %s %s %lldx%lld pad %lld: %lld packed bytes differ (first %lld: got "
           "%02x want %02x), %lld scales differ (first %lld)\n",
           dname(dt), mname(mode), (long long)rows, (long long)cols, (long long)pad,
           (long long)bad, (long long)first, first >= 0 ? got_p[first] : 0,
           first >= 0 ? want_p[first] : 0, (long long)bad_s, (long long)first_s);
    if (first_s >= 0)
      printf("  scale got %02x want %02x\n", got_s[first_s], want_s[first_s]);
  }

  /* Dequantize what we got (== the oracle's bytes) to each dtype. */
  for (tgemm_dtype od : {TGEMM_F32, TGEMM_F16, TGEMM_BF16}) {
    const int64_t old = cols + (pad ? 3 : 0);
    uint8_t *d_o;
    const size_t obytes = (size_t)(rows * old) * dsize(od);
    CK(cudaMalloc(&d_o, obytes));
    CK(cudaMemset(d_o, 0x7B, obytes));
    CK(tgemm__mxfp4_dequantize_cuda(d_p, packed_ld, d_s, scales_ld, rows, cols, d_o, od, old,
                                    g_stream));
    CK(cudaStreamSynchronize(g_stream));
    std::vector<uint8_t> o(obytes);
    CK(cudaMemcpy(o.data(), d_o, obytes, cudaMemcpyDeviceToHost));
    std::vector<double> ref((size_t)cols);
    int64_t mism = 0;
    for (int64_t r = 0; r < rows; r++) {
      oracle_dequant_row(&want_p[(size_t)(r * packed_ld)], &want_s[(size_t)(r * scales_ld)],
                         cols, ref.data());
      for (int64_t c = 0; c < old; c++) {
        size_t at = (size_t)(r * old + c);
        uint32_t got, want;
        if (c >= cols) { /* padding untouched */
          got = o[at * dsize(od)];
          if (got != 0x7B) mism++;
          continue;
        }
        float w = (float)ref[(size_t)c]; /* exact or +-inf overflow, as the spec's f32 */
        if (od == TGEMM_F32) {
          memcpy(&got, &o[at * 4], 4);
          want = f32_bits(w);
        } else {
          uint16_t h;
          memcpy(&h, &o[at * 2], 2);
          got = h;
          want = od == TGEMM_BF16 ? tgemm__f32_to_bf16(w) : tgemm__f32_to_f16(w);
        }
        bool both_nan = std::isnan(w) && (od == TGEMM_F32 ? std::isnan(bits_f32(got))
                                                          : ((got & 0x7FFF) > (od == TGEMM_BF16 ? 0x7F80u : 0x7C00u)));
        if (got != want && !both_nan) mism++;
      }
    }
    g_checks++;
    if (mism) {
      g_fail++;
      printf("FAIL dequantize %s -> %s %lldx%lld: %lld elements differ\n", dname(dt), dname(od),
             (long long)rows, (long long)cols, (long long)mism);
    }
    CK(cudaFree(d_o));
  }
  CK(cudaFree(d_src));
  CK(cudaFree(d_p));
  CK(cudaFree(d_s));
}

/* ------------------------------------------------------------ GEMM checks */

struct variant {
  std::string name;
  tgemm_route route;
  tgemm__kernel kernel;
};

static tgemm__kernel make_kernel(tgemm_route route, const char *prefix, int tile, int splits) {
  tgemm__kernel k;
  memset(&k, 0, sizeof k);
  k.route = route;
  snprintf(k.name, sizeof k.name, "%s%s_s%d", prefix, tgemm__mx_tile_name(tile), splits);
  k.params[0] = tile;
  k.params[1] = splits;
  return k;
}

static cudaError_t run_kernel(const tgemm__kernel &k, const tgemm__cuda_gemm_args &a) {
  return k.route == TGEMM_ROUTE_W4A16 ? tgemm__w4a16_run(&k, &a) : tgemm__w4a4_run(&k, &a);
}

/* Device buffers of one GEMM problem. */
struct problem {
  int64_t m, n, k, nb;
  /* weights (MXFP4) */
  uint8_t *wp = nullptr, *ws = nullptr;
  int64_t ldwp = 0, ldws = 0;
  std::vector<double> wdq; /* [n][k] */
  /* x per dtype */
  void *x[3] = {nullptr, nullptr, nullptr};
  int64_t ldx = 0;
  std::vector<float> xv[3]; /* [m][k] values as stored */
  float *bias_f32 = nullptr;
  uint16_t *bias_bf16 = nullptr;
  std::vector<float> bias;
  void *y = nullptr;
  int64_t ldy = 0;
  void *work = nullptr;
  size_t work_bytes = 0;
};

static void free_problem(problem &p) {
  cudaFree(p.wp), cudaFree(p.ws);
  for (int i = 0; i < 3; i++) cudaFree(p.x[i]);
  cudaFree(p.bias_f32), cudaFree(p.bias_bf16), cudaFree(p.y), cudaFree(p.work);
}

static int dt_index(tgemm_dtype dt) { return dt == TGEMM_F32 ? 0 : dt == TGEMM_F16 ? 1 : 2; }

/* odd: unaligned x rows, padded/misaligned weight strides and scale
 * pointer, padded y rows. */
static void make_problem(problem &p, int64_t m, int64_t n, int64_t k, bool odd) {
  p.m = m, p.n = n, p.k = k, p.nb = (k + 31) / 32;
  p.ldwp = p.nb * 16 + (odd ? 16 : 0);
  p.ldws = p.nb + (odd ? 1 : 0);
  std::vector<float> w((size_t)(n * k));
  for (auto &f : w) f = (float)rnd_normal();
  std::vector<uint8_t> hp((size_t)(n * p.ldwp), 0), hs((size_t)(n * p.ldws) + 1, 0);
  const int so = odd ? 1 : 0; /* scale pointer offset: not 4-byte aligned */
  p.wdq.assign((size_t)(n * k), 0.0);
  for (int64_t r = 0; r < n; r++) {
    oracle_quant_row(&w[(size_t)(r * k)], k, 0, &hp[(size_t)(r * p.ldwp)],
                     &hs[(size_t)(r * p.ldws) + so]);
    oracle_dequant_row(&hp[(size_t)(r * p.ldwp)], &hs[(size_t)(r * p.ldws) + so], k,
                       &p.wdq[(size_t)(r * k)]);
  }
  uint8_t *ws_base;
  CK(cudaMalloc(&p.wp, hp.size()));
  CK(cudaMalloc(&ws_base, hs.size()));
  CK(cudaMemcpy(p.wp, hp.data(), hp.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(ws_base, hs.data(), hs.size(), cudaMemcpyHostToDevice));
  p.ws = ws_base + so; /* cudaFree needs the base: keep the offset small and known */
  p.ldx = odd ? k + 1 : (k + 7) / 8 * 8 + 8; /* aligned rows even when K % 8 != 0 */
  for (tgemm_dtype dt : {TGEMM_F32, TGEMM_F16, TGEMM_BF16}) {
    const int i = dt_index(dt);
    p.xv[i].resize((size_t)(m * k));
    for (auto &f : p.xv[i]) f = to_dtype((float)rnd_normal(), dt);
    std::vector<uint8_t> h = encode(p.xv[i], m, k, p.ldx, dt);
    CK(cudaMalloc(&p.x[i], h.size()));
    CK(cudaMemcpy(p.x[i], h.data(), h.size(), cudaMemcpyHostToDevice));
  }
  p.bias.resize((size_t)n);
  std::vector<uint16_t> bb((size_t)n);
  for (int64_t j = 0; j < n; j++) {
    p.bias[(size_t)j] = to_dtype((float)(0.5 * rnd_normal()), TGEMM_BF16);
    bb[(size_t)j] = tgemm__f32_to_bf16(p.bias[(size_t)j]);
  }
  CK(cudaMalloc(&p.bias_f32, (size_t)n * 4));
  CK(cudaMalloc(&p.bias_bf16, (size_t)n * 2));
  CK(cudaMemcpy(p.bias_f32, p.bias.data(), (size_t)n * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(p.bias_bf16, bb.data(), (size_t)n * 2, cudaMemcpyHostToDevice));
  p.ldy = n + (odd ? 3 : 0);
  CK(cudaMalloc(&p.y, (size_t)(m * p.ldy) * 4));
  p.work_bytes = (size_t)64 << 20;
  CK(cudaMalloc(&p.work, p.work_bytes));
}

static void free_ws_offset(problem &p, bool odd) {
  p.ws -= odd ? 1 : 0;
}

/* ref[m][n] = Σ a[m][k]·wdq[n][k] and the sum of |terms|. */
static void reference(const problem &p, const std::vector<double> &a, std::vector<double> &ref,
                      std::vector<double> &mag) {
  ref.assign((size_t)(p.m * p.n), 0.0);
  mag.assign((size_t)(p.m * p.n), 0.0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < p.m; i++)
    for (int64_t j = 0; j < p.n; j++) {
      const double *x = &a[(size_t)(i * p.k)], *w = &p.wdq[(size_t)(j * p.k)];
      double s = 0, sa = 0;
      for (int64_t c = 0; c < p.k; c++) {
        double t = x[c] * w[c];
        s += t, sa += fabs(t);
      }
      ref[(size_t)(i * p.n + j)] = s, mag[(size_t)(i * p.n + j)] = sa;
    }
}

/* The activations as the W4A4 kernels must see them. */
static std::vector<double> fake_quant(const problem &p, const std::vector<float> &xv, int mode) {
  std::vector<double> out((size_t)(p.m * p.k));
  std::vector<uint8_t> pk((size_t)(p.nb * 16)), sc((size_t)p.nb);
  for (int64_t i = 0; i < p.m; i++) {
    oracle_quant_row(&xv[(size_t)(i * p.k)], p.k, mode, pk.data(), sc.data());
    oracle_dequant_row(pk.data(), sc.data(), p.k, &out[(size_t)(i * p.k)]);
  }
  return out;
}

/* Run kernel on problem with x dtype / bias / y dtype; compare. */
static void check_run(problem &p, const tgemm__kernel &k, tgemm_dtype xdt, int bias_kind,
                      tgemm_dtype ydt, int mode, const std::vector<double> &ref,
                      const std::vector<double> &mag, const char *tag) {
  tgemm__cuda_gemm_args a;
  memset(&a, 0, sizeof a);
  a.m = p.m, a.n = p.n, a.k = p.k;
  a.x = p.x[dt_index(xdt)], a.ldx = p.ldx, a.x_dtype = xdt;
  a.w_packed = p.wp, a.ldw_packed = p.ldwp, a.w_scales = p.ws, a.ldw_scales = p.ldws;
  a.w_dtype = TGEMM_MXFP4;
  a.bias = bias_kind == 1 ? (void *)p.bias_f32 : bias_kind == 2 ? (void *)p.bias_bf16 : nullptr;
  a.bias_dtype = bias_kind == 1 ? TGEMM_F32 : TGEMM_BF16;
  a.y = p.y, a.ldy = p.ldy, a.y_dtype = ydt;
  a.workspace = p.work, a.workspace_bytes = p.work_bytes;
  a.scale_mode = (tgemm_scale_mode)mode;
  a.sm_count = 132;
  a.stream = g_stream;
  const size_t ybytes = (size_t)(p.m * p.ldy) * dsize(ydt);
  CK(cudaMemsetAsync(p.y, 0xFF, ybytes, g_stream)); /* NaN in f32 and bf16 */
  cudaError_t err = run_kernel(k, a);
  if (err == cudaSuccess) err = cudaStreamSynchronize(g_stream);
  g_checks++;
  if (err != cudaSuccess) {
    g_fail++;
    printf("FAIL %s %s: x %s bias %d y %s M=%lld N=%lld K=%lld: %s\n", tag, k.name, dname(xdt),
           bias_kind, dname(ydt), (long long)p.m, (long long)p.n, (long long)p.k,
           cudaGetErrorString(err));
    if (err != cudaErrorInvalidValue) exit(3);
    return;
  }
  std::vector<uint8_t> h(ybytes);
  CK(cudaMemcpy(h.data(), p.y, ybytes, cudaMemcpyDeviceToHost));
  double num = 0, den = 0, worst = 0;
  int64_t unwritten = 0, clobbered = 0, elem_bad = 0;
  for (int64_t i = 0; i < p.m; i++)
    for (int64_t j = 0; j < p.ldy; j++) {
      size_t at = (size_t)(i * p.ldy + j);
      float v;
      if (ydt == TGEMM_F32) {
        memcpy(&v, &h[at * 4], 4);
      } else {
        uint16_t b;
        memcpy(&b, &h[at * 2], 2);
        v = tgemm__bf16_to_f32(b);
      }
      if (j >= p.n) {
        if (!std::isnan(v)) clobbered++;
        continue;
      }
      double r = ref[(size_t)(i * p.n + j)] + (bias_kind ? p.bias[(size_t)j] : 0.0);
      if (!std::isfinite(v)) {
        unwritten++;
        continue;
      }
      double d = v - r;
      num += d * d, den += r * r;
      if (ydt == TGEMM_F32) {
        double bound = 1e-5 * (mag[(size_t)(i * p.n + j)] + fabs(r)) + 1e-30;
        worst = std::max(worst, fabs(d) / bound);
        if (fabs(d) > bound) elem_bad++;
      }
    }
  const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
  const double tol = ydt == TGEMM_F32 ? 1e-5 : 1e-2;
  const bool ok = unwritten == 0 && clobbered == 0 && elem_bad == 0 && rel <= tol;
  if (!ok) {
    g_fail++;
    printf("FAIL %s %s: x %s bias %d y %s mode %s M=%lld N=%lld K=%lld: rel %.3e (tol %.0e), "
           "%lld unwritten, %lld padding written, %lld elements over bound (worst %.2fx)\n",
           tag, k.name, dname(xdt), bias_kind, dname(ydt), mname(mode), (long long)p.m,
           (long long)p.n, (long long)p.k, rel, tol, (long long)unwritten, (long long)clobbered,
           (long long)elem_bad, worst);
  }
  if (g_csv)
    fprintf(g_csv, "check,%s,%s,%s,%d,%s,%s,%lld,%lld,%lld,%.3e,%s\n", tag, k.name, dname(xdt),
            bias_kind, dname(ydt), mname(mode), (long long)p.m, (long long)p.n, (long long)p.k,
            rel, ok ? "ok" : "FAIL");
}

/* All kernels worth checking for one problem: every tile, split 1, the
 * automatic split, a forced split of 3, and what the dispatchers list. */
static std::vector<tgemm__kernel> all_variants(const problem &p, tgemm_route route,
                                               const char *prefix, tgemm_dtype xdt) {
  std::vector<tgemm__kernel> v;
  for (int t = 0; t < TGEMM__MX_TILE_COUNT; t++) {
    int s_auto = tgemm__mx_pick_splits(t, p.m, p.n, p.k, 132);
    std::vector<int> ss = {1, 3, 12}; /* 3: cluster reduction; 12: workspace + reduce launch */
    if (s_auto != 1 && s_auto != 3 && s_auto != 12) ss.push_back(s_auto);
    for (int s : ss) v.push_back(make_kernel(route, prefix, t, s));
  }
  tgemm__shape sh = {p.m, p.n, p.k, xdt, TGEMM_BF16, false};
  tgemm__kernel c[64];
  int nc = route == TGEMM_ROUTE_W4A16 ? tgemm__w4a16_candidates(&sh, 132, c, 64)
                                      : tgemm__w4a4_candidates(&sh, 132, c, 64);
  for (int i = 0; i < nc; i++) {
    bool dup = false;
    for (auto &e : v) dup |= strcmp(e.name, c[i].name) == 0;
    if (!dup) v.push_back(c[i]);
  }
  return v;
}

static void check_gemms(bool quick) {
  struct nk {
    int64_t n, k;
  };
  std::vector<nk> shapes = {{1000, 200}, {129, 1537}};
  std::vector<int64_t> ms = {1, 5, 16, 17, 64, 300, 1024};
  if (g_mini) shapes = {{129, 1537}}, ms = {5, 17};
  const int combos[4][2] = {{0, TGEMM_F32}, {1, TGEMM_BF16}, {2, TGEMM_F32}, {0, TGEMM_BF16}};
  for (const nk &s : shapes) {
    for (int64_t m : ms) {
      if (quick && m > 64) continue;
      for (int odd = 0; odd < 2; odd++) {
        if (odd && !(m == 17 || m == 300)) continue;
        problem p;
        make_problem(p, m, s.n, s.k, odd);
        std::vector<double> ref, mag, a;
        /* W4A16: x bf16 and f16 */
        for (tgemm_dtype xdt : {TGEMM_BF16, TGEMM_F16}) {
          const std::vector<float> &xv = p.xv[dt_index(xdt)];
          a.assign(xv.begin(), xv.end());
          reference(p, a, ref, mag);
          for (const tgemm__kernel &k : all_variants(p, TGEMM_ROUTE_W4A16, "w4a16_mma_", xdt)) {
            int ci = 0;
            for (const auto &cb : combos) {
              if (g_mini && cb[0] != 1) continue;
              /* every kernel gets all four bias/y combinations at small M;
               * at large M two, to keep the run short */
              if (m >= 300 && ci++ % 2) continue;
              check_run(p, k, xdt, cb[0], (tgemm_dtype)cb[1], 0, ref, mag,
                        odd ? "w4a16-odd" : "w4a16");
            }
          }
        }
        /* W4A4: x bf16, f16, f32 (mode even); other modes on bf16 */
        for (tgemm_dtype xdt : {TGEMM_BF16, TGEMM_F16, TGEMM_F32}) {
          for (int mode = 0; mode < 3; mode++) {
            if (mode && (xdt != TGEMM_BF16 || m != 17)) continue;
            a = fake_quant(p, p.xv[dt_index(xdt)], mode);
            reference(p, a, ref, mag);
            int kc = 0;
            for (const tgemm__kernel &k : all_variants(p, TGEMM_ROUTE_W4A4, "w4a4_fused_", xdt)) {
              (void)kc;
              for (const auto &cb : combos) {
                if (m >= 300 && (kc++ % 2)) continue;
                if (g_mini && cb[0] != 1) continue;
                check_run(p, k, xdt, cb[0], (tgemm_dtype)cb[1], mode, ref, mag,
                          odd ? "w4a4-odd" : "w4a4");
              }
            }
            for (int t = 0; t < TGEMM__MX_TILE_COUNT; t++)
              for (int sp : {1, 3, 12}) {
                tgemm__kernel k = make_kernel(TGEMM_ROUTE_W4A4, "w4a4_prequant_", t, sp);
                for (const auto &cb : combos) {
                  if (m >= 300 && (kc++ % 2)) continue;
                  if (g_mini && cb[0] != 1) continue;
                  check_run(p, k, xdt, cb[0], (tgemm_dtype)cb[1], mode, ref, mag,
                            odd ? "w4a4-odd" : "w4a4");
                }
              }
          }
        }
        free_ws_offset(p, odd);
        free_problem(p);
      }
    }
    printf("  gemm checks for N=%lld K=%lld done: %d checks, %d failures so far\n",
           (long long)s.n, (long long)s.k, g_checks, g_fail);
    fflush(stdout);
  }
  /* Refusals. */
  {
    problem p;
    make_problem(p, 4, 64, 64, false);
    tgemm__cuda_gemm_args a;
    memset(&a, 0, sizeof a);
    a.m = 4, a.n = 64, a.k = 64, a.x = p.x[0], a.ldx = p.ldx, a.x_dtype = TGEMM_F32;
    a.w_packed = p.wp, a.ldw_packed = p.ldwp, a.w_scales = p.ws, a.ldw_scales = p.ldws;
    a.y = p.y, a.ldy = p.ldy, a.y_dtype = TGEMM_F32, a.stream = g_stream;
    tgemm__kernel k = make_kernel(TGEMM_ROUTE_W4A16, "w4a16_mma_", 0, 1);
    g_checks++;
    if (tgemm__w4a16_run(&k, &a) != cudaErrorInvalidValue) {
      g_fail++;
      printf("FAIL w4a16 accepted f32 x\n");
    }
    tgemm__kernel bad = k;
    strcpy(bad.name, "w4a16_bogus");
    a.x_dtype = TGEMM_BF16;
    g_checks++;
    if (tgemm__w4a16_run(&bad, &a) != cudaErrorInvalidValue) {
      g_fail++;
      printf("FAIL w4a16 accepted an unknown kernel name\n");
    }
    tgemm__kernel pq = make_kernel(TGEMM_ROUTE_W4A4, "w4a4_prequant_", 0, 1);
    a.workspace = p.work, a.workspace_bytes = 600; /* not even one tile of rows */
    g_checks++;
    if (tgemm__w4a4_run(&pq, &a) != cudaErrorInvalidValue) {
      g_fail++;
      printf("FAIL w4a4 prequant accepted a tiny workspace\n");
    }
    tgemm__shape sh = {4, 64, 64, TGEMM_F32, TGEMM_BF16, false};
    tgemm__kernel c[64];
    g_checks++;
    if (tgemm__w4a16_candidates(&sh, 132, c, 64) != 0) {
      g_fail++;
      printf("FAIL w4a16 lists candidates for f32 x\n");
    }
    free_problem(p);
  }
}

/* --------------------------------------------------------------- timing */

static void *g_flush_buf;
static const size_t kFlushBytes = (size_t)256 << 20;
static bool g_flush_dirty; /* memset instead of a read */
static int g_sm_count = 132;
static cudaEvent_t g_ev0, g_ev1;

static void flush_l2(int rep) {
  if (g_flush_dirty)
    CK(cudaMemsetAsync(g_flush_buf, rep & 0x7F, kFlushBytes, g_stream));
  else
    CK(tgemm__cuda_l2_flush_read(g_flush_buf, kFlushBytes, 8 * g_sm_count, g_stream));
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/* Median µs of fn over reps, L2 flushed before each. */
static double time_us(const std::function<void()> &fn, int reps = 30) {
  for (int i = 0; i < 3; i++) fn();
  CK(cudaStreamSynchronize(g_stream));
  std::vector<double> t;
  for (int r = 0; r < reps; r++) {
    flush_l2(r);
    CK(cudaEventRecord(g_ev0, g_stream));
    fn();
    CK(cudaEventRecord(g_ev1, g_stream));
    CK(cudaEventSynchronize(g_ev1));
    float ms;
    CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
    t.push_back(ms * 1000.0);
  }
  CK(cudaGetLastError());
  return median(t);
}

static double g_copy_bw = 0; /* bytes/s, read + write */

static void time_copy() {
  const size_t bytes = (size_t)1 << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 1, bytes));
  double us = time_us([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_stream)); }, 15);
  g_copy_bw = 2.0 * bytes / (us * 1e-6);
  printf("D2D copy: %.1f us for 1 GiB -> %.3f TB/s (read+write)\n", us, g_copy_bw / 1e12);
  CK(cudaFree(a));
  CK(cudaFree(b));
}

struct quant_timing {
  double us, tbs, frac;
};
static quant_timing g_qt;

static void time_quantizer() {
  const int64_t rows = 8192, cols = 7168, nb = cols / 32;
  std::vector<float> v((size_t)(rows * cols));
  for (auto &f : v) f = to_dtype((float)rnd_normal(), TGEMM_BF16);
  std::vector<uint8_t> h = encode(v, rows, cols, cols, TGEMM_BF16);
  void *d_x;
  uint8_t *d_p, *d_s;
  CK(cudaMalloc(&d_x, h.size()));
  CK(cudaMalloc(&d_p, (size_t)(rows * nb * 16)));
  CK(cudaMalloc(&d_s, (size_t)(rows * nb)));
  CK(cudaMemcpy(d_x, h.data(), h.size(), cudaMemcpyHostToDevice));
  for (int mode = 0; mode < 3; mode++) {
    double us = time_us([&] {
      CK(tgemm__mxfp4_quantize_cuda(d_x, TGEMM_BF16, rows, cols, cols, d_p, nb * 16, d_s, nb,
                                    (tgemm_scale_mode)mode, g_stream));
    });
    const double bytes = (double)rows * cols * 2 + rows * nb * 16 + rows * nb;
    const double bw = bytes / (us * 1e-6);
    printf("quantize [8192,7168] bf16 %s: %.1f us, %.3f TB/s = %.1f%% of copy bandwidth\n",
           mname(mode), us, bw / 1e12, 100 * bw / g_copy_bw);
    printf("  (flush %s)\n", g_flush_dirty ? "dirty" : "clean");
    if (mode == 0) g_qt = {us, bw / 1e12, bw / g_copy_bw};
    if (g_csv)
      fprintf(g_csv, "quantize_%s,%s,bf16,8192,7168,%.3f,%.4f,%.4f\n",
              g_flush_dirty ? "dirty" : "clean", mname(mode), us, bw / 1e12,
              bw / g_copy_bw);
    /* spot check 64 rows of the timed output against the oracle */
    std::vector<uint8_t> gp((size_t)(rows * nb * 16)), gs((size_t)(rows * nb));
    CK(cudaMemcpy(gp.data(), d_p, gp.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gs.data(), d_s, gs.size(), cudaMemcpyDeviceToHost));
    std::vector<uint8_t> wp((size_t)(nb * 16)), wsb((size_t)nb);
    int bad = 0;
    for (int64_t r = 0; r < rows; r += 128) {
      oracle_quant_row(&v[(size_t)(r * cols)], cols, mode, wp.data(), wsb.data());
      bad += memcmp(wp.data(), &gp[(size_t)(r * nb * 16)], wp.size()) != 0;
      bad += memcmp(wsb.data(), &gs[(size_t)(r * nb)], wsb.size()) != 0;
    }
    g_checks++;
    if (bad) {
      g_fail++;
      printf("FAIL quantize [8192,7168] %s: %d sampled rows differ\n", mname(mode), bad);
    }
  }
  CK(cudaFree(d_x));
  CK(cudaFree(d_p));
  CK(cudaFree(d_s));
}

/* cuBLASLt heuristic BF16: y[M,N] = x[M,K]·W[N,K]ᵀ, bf16 in/out, f32 compute. */
static cublasLtHandle_t g_lt;
static void *g_lt_ws;
static const size_t kLtWs = (size_t)32 << 20;

struct lt_plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
  bool ok = false;
};

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

/* A GPU reference for spot checks of the timed problems: rows of y from the
 * dequantized weight in f32 (exact) with double accumulation on the host. */
struct row_result {
  std::string shape;
  int64_t m;
  double lt_us, floor_bf16_us, floor_mx_us;
  std::string w16_def, w16_best, w4_def, w4_best;
  double w16_def_us = 0, w16_best_us = 0, w4_def_us = 0, w4_best_us = 0;
};

static void time_gemms(bool quick) {
  struct nk {
    const char *name;
    int64_t n, k;
  };
  const nk shapes[] = {{"qkv_a 2112x7168", 2112, 7168},
                       {"q_b 24576x1536", 24576, 1536},
                       {"o_proj 7168x16384", 7168, 16384},
                       {"o_tp8 7168x2048", 7168, 2048}};
  std::vector<int64_t> ms = {1, 16, 128, 1024, 8192};
  if (quick) ms = {16, 128};
  std::vector<row_result> rows;
  const int64_t max_m = 8192, max_k = 16384;
  /* x and y buffers big enough for every problem */
  void *d_x, *d_y;
  CK(cudaMalloc(&d_x, (size_t)(max_m * max_k) * 2));
  CK(cudaMalloc(&d_y, (size_t)(max_m * 24576) * 4));
  {
    std::vector<uint16_t> hx((size_t)(max_m * max_k));
    for (auto &h : hx) h = tgemm__f32_to_bf16((float)rnd_normal());
    CK(cudaMemcpy(d_x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
  }
  const size_t work_bytes = (size_t)128 << 20; /* the backend's default workspace */
  void *d_work;
  CK(cudaMalloc(&d_work, work_bytes));
  for (const nk &s : shapes) {
    const int64_t n = s.n, k = s.k, nb = k / 32;
    /* dense bf16 W and its MXFP4 form (GPU quantizer, checked above) */
    std::vector<float> wf((size_t)(n * k));
    for (auto &f : wf) f = to_dtype((float)rnd_normal(), TGEMM_BF16);
    std::vector<uint8_t> hw = encode(wf, n, k, k, TGEMM_BF16);
    void *d_w;
    uint8_t *d_wp, *d_ws;
    CK(cudaMalloc(&d_w, hw.size()));
    CK(cudaMalloc(&d_wp, (size_t)(n * nb * 16)));
    CK(cudaMalloc(&d_ws, (size_t)(n * nb)));
    CK(cudaMemcpy(d_w, hw.data(), hw.size(), cudaMemcpyHostToDevice));
    CK(tgemm__mxfp4_quantize_cuda(d_w, TGEMM_BF16, n, k, k, d_wp, nb * 16, d_ws, nb,
                                  TGEMM_SCALE_EVEN, g_stream));
    std::vector<uint8_t> hp((size_t)(n * nb * 16)), hs((size_t)(n * nb));
    CK(cudaMemcpy(hp.data(), d_wp, hp.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hs.data(), d_ws, hs.size(), cudaMemcpyDeviceToHost));
    std::vector<double> wdq((size_t)(n * k));
#pragma omp parallel for
    for (int64_t r = 0; r < n; r++)
      oracle_dequant_row(&hp[(size_t)(r * nb * 16)], &hs[(size_t)(r * nb)], k, &wdq[(size_t)(r * k)]);
    std::vector<uint16_t> hx_rows;
    for (int64_t m : ms) {
      row_result rr;
      rr.shape = s.name;
      rr.m = m;
      const double flops = 2.0 * m * n * k;
      rr.floor_bf16_us = std::max((2.0 * n * k + 2.0 * m * k + 2.0 * m * n) / g_copy_bw,
                                  flops / 784e12) * 1e6;
      rr.floor_mx_us = std::max((n * k * 0.53125 + 2.0 * m * k + 2.0 * m * n) / g_copy_bw,
                                flops / 784e12) * 1e6;
      lt_plan lp = lt_make(m, n, k);
      rr.lt_us = lp.ok ? time_us([&] { lt_run(lp, d_w, d_x, d_y); }) : NAN;
      lt_free(lp);
      if (g_csv)
        fprintf(g_csv, "time,%s,%lld,%lld,%lld,cublasLt_bf16,%.3f,%.4f\n", s.name, (long long)m,
                (long long)n, (long long)k, rr.lt_us, rr.floor_bf16_us / rr.lt_us);
      /* rows checked after each candidate: first, middle, last */
      const int64_t check_rows[3] = {0, m / 2, m - 1};
      std::vector<std::vector<double>> xrow(3, std::vector<double>((size_t)k));
      for (int i = 0; i < 3; i++) {
        std::vector<uint16_t> hrow((size_t)k);
        CK(cudaMemcpy(hrow.data(), (char *)d_x + (size_t)(check_rows[i] * k) * 2, (size_t)k * 2,
                      cudaMemcpyDeviceToHost));
        for (int64_t c = 0; c < k; c++) xrow[i][(size_t)c] = tgemm__bf16_to_f32(hrow[(size_t)c]);
      }
      for (int fam = 0; fam < 2; fam++) {
        tgemm__shape sh = {m, n, k, TGEMM_BF16, TGEMM_BF16, false};
        tgemm__kernel c[64];
        int nc = fam == 0 ? tgemm__w4a16_candidates(&sh, 132, c, 64)
                          : tgemm__w4a4_candidates(&sh, 132, c, 64);
        /* the x̂ rows for the W4A4 spot check */
        std::vector<std::vector<double>> arow = xrow;
        if (fam == 1)
          for (int i = 0; i < 3; i++) {
            std::vector<float> f(xrow[i].begin(), xrow[i].end());
            std::vector<uint8_t> pk((size_t)(nb * 16)), sc((size_t)nb);
            oracle_quant_row(f.data(), k, 0, pk.data(), sc.data());
            oracle_dequant_row(pk.data(), sc.data(), k, arow[i].data());
          }
        for (int ci = 0; ci < nc; ci++) {
          tgemm__cuda_gemm_args a;
          memset(&a, 0, sizeof a);
          a.m = m, a.n = n, a.k = k, a.x = d_x, a.ldx = k, a.x_dtype = TGEMM_BF16;
          a.w_packed = d_wp, a.ldw_packed = nb * 16, a.w_scales = d_ws, a.ldw_scales = nb;
          a.w_dtype = TGEMM_MXFP4;
          a.y = d_y, a.ldy = n, a.y_dtype = TGEMM_BF16;
          a.workspace = d_work, a.workspace_bytes = work_bytes;
          a.scale_mode = TGEMM_SCALE_EVEN, a.sm_count = 132, a.stream = g_stream;
          /* spot check */
          CK(cudaMemsetAsync(d_y, 0xFF, (size_t)(m * n) * 2, g_stream));
          cudaError_t err = run_kernel(c[ci], a);
          if (err == cudaSuccess) err = cudaStreamSynchronize(g_stream);
          g_checks++;
          if (err != cudaSuccess) {
            g_fail++;
            printf("FAIL timed %s M=%lld: %s\n", c[ci].name, (long long)m, cudaGetErrorString(err));
            if (err != cudaErrorInvalidValue) exit(3);
            continue;
          }
          double num = 0, den = 0;
          for (int i = 0; i < 3; i++) {
            std::vector<uint16_t> yr((size_t)n);
            CK(cudaMemcpy(yr.data(), (char *)d_y + (size_t)(check_rows[i] * n) * 2, (size_t)n * 2,
                          cudaMemcpyDeviceToHost));
#pragma omp parallel for reduction(+ : num, den)
            for (int64_t j = 0; j < n; j++) {
              double r = 0;
              const double *w = &wdq[(size_t)(j * k)];
              for (int64_t cc = 0; cc < k; cc++) r += arow[i][(size_t)cc] * w[cc];
              double v = tgemm__bf16_to_f32(yr[(size_t)j]);
              double d = std::isfinite(v) ? v - r : 1e30;
              num += d * d, den += r * r;
            }
          }
          const double rel = sqrt(num / den);
          if (!(rel <= 1e-2)) {
            g_fail++;
            printf("FAIL timed %s %s M=%lld: rel %.3e on sampled rows\n", s.name, c[ci].name,
                   (long long)m, rel);
          }
          const double us = time_us([&] { CK(run_kernel(c[ci], a)); });
          if (g_csv)
            fprintf(g_csv, "time,%s,%lld,%lld,%lld,%s,%.3f,%.4f,%.3e\n", s.name, (long long)m,
                    (long long)n, (long long)k, c[ci].name, us, rr.floor_mx_us / us, rel);
          std::string &def = fam == 0 ? rr.w16_def : rr.w4_def;
          std::string &best = fam == 0 ? rr.w16_best : rr.w4_best;
          double &def_us = fam == 0 ? rr.w16_def_us : rr.w4_def_us;
          double &best_us = fam == 0 ? rr.w16_best_us : rr.w4_best_us;
          if (ci == 0) def = c[ci].name, def_us = us;
          if (best.empty() || us < best_us) best = c[ci].name, best_us = us;
        }
      }
      printf("  %-18s M=%-5lld cublasLt %8.1f us | w4a16 %8.1f (%s) | w4a4 %8.1f (%s)\n", s.name,
             (long long)m, rr.lt_us, rr.w16_best_us, rr.w16_best.c_str(), rr.w4_best_us,
             rr.w4_best.c_str());
      fflush(stdout);
      if (g_csv) fflush(g_csv);
      rows.push_back(rr);
    }
    CK(cudaFree(d_w));
    CK(cudaFree(d_wp));
    CK(cudaFree(d_ws));
  }
  CK(cudaFree(d_x));
  CK(cudaFree(d_y));
  CK(cudaFree(d_work));

  printf("\n==== MXFP4 GEMMs vs cuBLASLt BF16 (us, median of 30, L2 flushed; ratio = "
         "cuBLASLt/ours, >1 = faster) ====\n");
  printf("%-18s %5s | %8s %5s | %8s %5s %-24s | %8s %5s %-24s | %8s %-22s | %8s %-22s\n", "shape",
         "M", "cublasLt", "floor", "w4a16", "x", "best", "w4a4", "x", "best", "w16def", "default",
         "w4def", "default");
  for (const row_result &r : rows)
    printf("%-18s %5lld | %8.1f %5.2f | %8.1f %5.2f %-24s | %8.1f %5.2f %-24s | %8.1f %-22s | "
           "%8.1f %-22s\n",
           r.shape.c_str(), (long long)r.m, r.lt_us, r.floor_bf16_us / r.lt_us, r.w16_best_us,
           r.lt_us / r.w16_best_us, r.w16_best.c_str(), r.w4_best_us, r.lt_us / r.w4_best_us,
           r.w4_best.c_str(), r.w16_def_us, r.w16_def.c_str(), r.w4_def_us, r.w4_def.c_str());
}

/* A few launches for a profiler (ncu -k regex:mx_mma): W4A16 and W4A4 on
 * qkv_a at M = 16, 128, 1024 with the dispatchers' first candidates. */
static void profile_run() {
  const int64_t n = 2112, k = 7168, nb = k / 32, max_m = 1024;
  void *d_x, *d_y, *d_work;
  uint8_t *d_wp, *d_ws;
  CK(cudaMalloc(&d_x, (size_t)(max_m * k) * 2));
  CK(cudaMalloc(&d_y, (size_t)(max_m * n) * 4));
  CK(cudaMalloc(&d_work, (size_t)128 << 20));
  CK(cudaMalloc(&d_wp, (size_t)(n * nb * 16)));
  CK(cudaMalloc(&d_ws, (size_t)(n * nb)));
  CK(cudaMemset(d_x, 0x3c, (size_t)(max_m * k) * 2));
  CK(cudaMemset(d_wp, 0x5a, (size_t)(n * nb * 16)));
  CK(cudaMemset(d_ws, 120, (size_t)(n * nb)));
  for (int64_t m : {16, 128, 1024})
    for (int fam = 0; fam < 2; fam++) {
      tgemm__shape sh = {m, n, k, TGEMM_BF16, TGEMM_BF16, false};
      tgemm__kernel c[64];
      int nc = fam == 0 ? tgemm__w4a16_candidates(&sh, 132, c, 64)
                        : tgemm__w4a4_candidates(&sh, 132, c, 64);
      for (int ci = 0; ci < nc; ci++) {
        if (strncmp(c[ci].name, "w4a16_stream", 12) == 0) continue;
        tgemm__cuda_gemm_args a;
        memset(&a, 0, sizeof a);
        a.m = m, a.n = n, a.k = k, a.x = d_x, a.ldx = k, a.x_dtype = TGEMM_BF16;
        a.w_packed = d_wp, a.ldw_packed = nb * 16, a.w_scales = d_ws, a.ldw_scales = nb;
        a.y = d_y, a.ldy = n, a.y_dtype = TGEMM_BF16;
        a.workspace = d_work, a.workspace_bytes = (size_t)128 << 20;
        a.sm_count = 132, a.stream = g_stream;
        printf("profile: %s M=%lld\n", c[ci].name, (long long)m);
        CK(run_kernel(c[ci], a));
        CK(cudaStreamSynchronize(g_stream));
        break; /* the first mma candidate only */
      }
    }
}

#ifdef MXGPU_HAVE_REF
/* The oracle against the library's reference on nasty rows (no GPU). */
static int oracle_selftest() {
  int bad = 0;
  for (int it = 0; it < 3000; it++) {
    tgemm_dtype dt = it % 3 == 0 ? TGEMM_F32 : it % 3 == 1 ? TGEMM_F16 : TGEMM_BF16;
    int64_t cols = rnd_int(1, 200);
    std::vector<float> v((size_t)cols);
    for (int64_t b = 0; b * 32 < cols; b++)
      gen_block(&v[(size_t)(b * 32)], (int)std::min<int64_t>(32, cols - b * 32), dt);
    int64_t nb = (cols + 31) / 32;
    for (int mode = 0; mode < 3; mode++) {
      std::vector<uint8_t> p1((size_t)nb * 16), s1((size_t)nb), p2((size_t)nb * 16), s2((size_t)nb);
      oracle_quant_row(v.data(), cols, mode, p1.data(), s1.data());
      tgemm_mxfp4_quantize_row_ref(v.data(), cols, p2.data(), s2.data(), (tgemm_scale_mode)mode);
      if (p1 != p2 || s1 != s2) {
        if (bad++ < 5) printf("oracle != ref: %s %s cols %lld\n", dname(dt), mname(mode), (long long)cols);
      }
    }
  }
  printf("oracle selftest: %d mismatching rows\n", bad);
  return bad ? 1 : 0;
}
#endif

int main(int argc, char **argv) {
  const char *out_dir = argc > 1 && argv[1][0] != '-' ? argv[1] : ".";
  bool quick = false, checks = true, timing = true, quant_only = false;
  for (int i = 1; i < argc; i++) {
    quick |= strcmp(argv[i], "--quick") == 0;
    if (strcmp(argv[i], "--checks-only") == 0) timing = false;
    if (strcmp(argv[i], "--timing-only") == 0) checks = false;
    if (strcmp(argv[i], "--quant-only") == 0) quant_only = true, checks = timing = false;
    if (strcmp(argv[i], "--mini") == 0) g_mini = true, timing = false;
  }
  g_rng = (uint64_t)time(nullptr) * 0x9E3779B97F4A7C15ull | 1;
  if (getenv("MXGPU_SEED")) g_rng = strtoull(getenv("MXGPU_SEED"), nullptr, 0) | 1;
  printf("seed 0x%016llx (MXGPU_SEED to repeat)\n", (unsigned long long)g_rng);
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--profile") == 0) {
      CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
      profile_run();
      return 0;
    }
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--oracle-only") == 0) {
#ifdef MXGPU_HAVE_REF
      return oracle_selftest();
#else
      printf("built without the library reference\n");
      return 0;
#endif
    }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
         prop.l2CacheSize >> 20);
  g_sm_count = prop.multiProcessorCount;
  const char *flush_env = getenv("MXGPU_FLUSH");
  g_flush_dirty = flush_env && strcmp(flush_env, "dirty") == 0;
  printf("L2 flush before each timed rep: %s\n", g_flush_dirty ? "memset (dirty)" : "read (clean)");
  std::string csv = std::string(out_dir) + "/mxgpu.csv";
  g_csv = fopen(csv.c_str(), "w");
  CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  CK(cudaEventCreate(&g_ev0));
  CK(cudaEventCreate(&g_ev1));
  CK(cudaMalloc(&g_flush_buf, kFlushBytes));
  LK(cublasLtCreate(&g_lt));
  CK(cudaMalloc(&g_lt_ws, kLtWs));

  if (checks || quant_only) {
  printf("== quantizer / dequantizer bytes ==\n");
  for (tgemm_dtype dt : {TGEMM_F32, TGEMM_F16, TGEMM_BF16})
    for (int mode = 0; mode < 3; mode++)
      for (int64_t cols : {1, 31, 33, 7167, 7168})
        for (int64_t pad : {0, 1, 8}) {
          if (g_mini && (cols != 33 || pad != 1)) continue;
          check_quantizer(dt, mode, cols > 1000 ? 6 : 40, cols, pad);
        }
  printf("  %d checks, %d failures\n", g_checks, g_fail);
  fflush(stdout);
  }
  if (checks) {
  printf("== GEMM correctness ==\n");
  check_gemms(quick);
  printf("  %d checks, %d failures\n", g_checks, g_fail);
  fflush(stdout);

  }
  if (quant_only) {
    for (bool dirty : {false, true}) {
      g_flush_dirty = dirty;
      printf("== copy and quantizer, L2 flushed by %s ==\n", dirty ? "a memset" : "a read");
      time_copy();
      time_quantizer();
    }
  }
  if (timing) {
  printf("== timing ==\n");
  time_copy();
  time_quantizer();
  time_gemms(quick);
  printf("\nquantizer [8192,7168] bf16 (even): %.1f us = %.2f TB/s = %.1f%% of D2D copy %.2f TB/s\n",
         g_qt.us, g_qt.tbs, 100 * g_qt.frac, g_copy_bw / 1e12);
  }
  printf("%s: %d checks, %d failures\n", g_fail ? "FAILED" : "PASSED", g_checks, g_fail);
  if (g_csv) fclose(g_csv);
  return g_fail ? 1 : 0;
}
