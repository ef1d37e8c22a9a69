/* Streaming W4A16 decode GEMM (see w4a16_stream.cuh).
 *
 * Same work split as skinny_bf16.cu, with one MXFP4 block (16 bytes, 32 k,
 * one scale) per lane and load: lane (g, c) reads block 4j + c of a batch
 * for rows g and g+8 of each tile, decoded and multiplied as described in
 * w4a16_decode.cuh. */
#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <type_traits>

#ifdef TGEMM_W4_PHASES /* stamps inside the epilogue too (slots 8..10) */
__device__ __forceinline__ void w4_phase(int i);
#define TGEMM_DECODE_STAMP(i) w4_phase(8 + (i))
#endif
#include "cuda/w4a16_decode.cuh"
#include "cuda/w4a16_stream.cuh"

/* Per-block phase timestamps, compiled in only by bench/device/phaseprobe.cu
 * (which defines TGEMM_W4_PHASES as the number of blocks it records):
 * thread 0 stores %globaltimer at entry (0), first batch landed (1), last
 * batch done (2), all warps done (3) and exit (4); its SM (5) and clock64
 * at entry and exit (6, 7); inside an unsplit kernel's end
 * (decode_epilogue.cuh), after the partial sums are written (8), after the
 * block barrier (9) and after the sums and stores (10). */
#ifdef TGEMM_W4_PHASES
__device__ unsigned long long tgemm_w4_phases[TGEMM_W4_PHASES][12];
__device__ __forceinline__ void w4_phase(int i) {
  if (threadIdx.x != 0 || blockIdx.x >= TGEMM_W4_PHASES) return;
  unsigned long long t, *rec = tgemm_w4_phases[blockIdx.x];
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  rec[i] = t;
  if (i == 0 || i == 4) rec[i == 0 ? 6 : 7] = clock64();
  if (i == 0) {
    unsigned sm;
    asm("mov.u32 %0, %%smid;" : "=r"(sm));
    rec[5] = sm;
  }
}
#define W4_PHASE(i) w4_phase(i)
#else
#define W4_PHASE(i) ((void)0)
#endif

namespace {

using tgemm_decode::epilogue;

struct w4_args {
  const unsigned short *x; /* bf16 bits */
  long long ldx;
  const unsigned char *wq; /* packed E2M1 pairs */
  long long ldq;
  const unsigned char *ws; /* E8M0 scales */
  long long lds;
  long long k;
  long long k_blocks; /* ceil(k / 32) */
  tgemm_decode::deal batches; /* whole batches of BU blocks, dealt to the workers */
  int split;
  int trigger; /* tgemm_decode::trigger: where the next kernel may launch */
  epilogue ep;
};

__device__ __forceinline__ uint4 load16_bytes(const unsigned char *p) {
  unsigned w[4];
#pragma unroll
  for (int i = 0; i < 4; i++)
    w[i] = (unsigned)__ldg(p + 4 * i) | (unsigned)__ldg(p + 4 * i + 1) << 8 |
           (unsigned)__ldg(p + 4 * i + 2) << 16 | (unsigned)__ldg(p + 4 * i + 3) << 24;
  return make_uint4(w[0], w[1], w[2], w[3]);
}

/* MT token groups, WARPS per block, T row tiles per warp, U 4-block steps
 * per batch; ST: 0 = register double buffer (only the unaligned fallback
 * uses it), >= 2 = per-warp cp.async ring of ST batches in shared memory
 * (weights 16 bytes per lane, scales 4 bytes per quad); VEC: 16-byte loads
 * or element loads.  XR: the ring also carries the batch's x, so that x
 * arrives ST-1 batches ahead instead of being read from L2 right before
 * its MMAs (at M = 16 the warps stalled mostly on those reads). */
template <int MT, int WARPS, int T, int U, int ST, bool VEC, bool XR, bool PAIRED>
__global__ void __launch_bounds__(WARPS * 32)
    w4a16_stream_kernel(const __grid_constant__ w4_args a) {
  static_assert(ST == 0 || (VEC && ST >= 2), "the ring needs aligned copies");
  static_assert(!XR || (ST > 0 && U <= 2), "x in the ring: ring kernels, U <= 2");
  constexpr int BU = 4 * U; /* blocks per row per batch */
  constexpr int R = T * MT * 4;
  constexpr int SLOTS = T * U * 2; /* 16-byte weight loads per lane per batch */
  constexpr int XCH = 16 * U;                    /* 16-byte x pieces per token per batch */
  constexpr int XSTAGE = XR ? MT * 8 * XCH : 0;  /* x pieces per warp per ring stage */
  extern __shared__ uint4 smem[];
  W4_PHASE(0);
  if (a.trigger == tgemm_decode::kTriggerAtStart) tgemm_decode::allow_next_launch();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int split = a.split;
  int group, rank;
  tgemm_decode::block_place(split, &group, &rank);
  tgemm_decode::begin_split<T, MT>(smem, split, a.ep);
  const int row0 = group * 16 * T;
  const int workers = split * WARPS;
  const int worker = rank * WARPS + warp;
  const int n = a.ep.n, m = a.ep.m;
  const long long k = a.k;

  /* qp/sp point at the lane's own block (+c); srow at the row's scales.
   * The aligned kernels keep the byte offsets in 32 bits (the host checks
   * that the weights allow it, tgemm_decode::rows_fit_u32): 64-bit row
   * products cost a warp of four tiles ~80 instructions before its first
   * copy.  The fallback takes any size. */
  using offset = std::conditional_t<VEC, unsigned, unsigned long long>;
  offset qoff[T][2], soff[T][2];
  const unsigned char *qp[T][2], *sp[T][2], *srow[T][2];
#pragma unroll
  for (int t = 0; t < T; t++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const offset row = (offset)min(row0 + 16 * t + g + 8 * h, n - 1);
      qoff[t][h] = row * (offset)a.ldq + 16 * c;
      soff[t][h] = row * (offset)a.lds;
      qp[t][h] = a.wq + qoff[t][h];
      srow[t][h] = a.ws + soff[t][h];
      sp[t][h] = srow[t][h] + c;
    }
  const unsigned short *xp[MT];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) xp[mt] = a.x + (long long)min(8 * mt + g, m - 1) * a.ldx + 32 * c;

  /* Two accumulator sets (even and odd words of a block) halve the chain
   * of dependent MMAs per step. */
  float acc[R], acc_odd[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = acc_odd[r] = 0.0f;
  const unsigned long long policy = tgemm_decode::evict_first_policy();

  /* x for the lane's block blk (32 k; zero past `avail` k). */
  auto load_x = [&](uint4(&xv)[MT][4], long long blk, long long avail) {
    tgemm_w4::load_x_block<MT>(xv, xp, (blk - c) * 32, avail, VEC);
  };
  /* Step j of a batch: block 4j + c of every row. */
  auto step = [&](const uint4(&v)[T][U][2], const unsigned(&s)[T][U][2], int j,
                  const uint4(&xv)[MT][4], bool big) {
    uint4 vj[T][2];
    unsigned sj[T][2];
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int h = 0; h < 2; h++) vj[t][h] = v[t][j][h], sj[t][h] = s[t][j][h];
    tgemm_w4::block_step<MT, T, R, PAIRED>(acc, acc_odd, vj, sj, xv, big);
  };
  /* A whole batch; scales above 2^1 are rare in real weights, so one vote
   * keeps their second multiply off the common path. */
  auto compute = [&](const uint4(&v)[T][U][2], const unsigned(&s)[T][U][2],
                     const uint4(&xv)[U][MT][4]) {
    bool big = false;
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int j = 0; j < U; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) big |= tgemm_w4::scale_is_big(s[t][j][h]);
    if (__any_sync(0xffffffffu, big)) {
#pragma unroll
      for (int j = 0; j < U; j++) step(v, s, j, xv[j], true);
    } else {
#pragma unroll
      for (int j = 0; j < U; j++) step(v, s, j, xv[j], false);
    }
  };
  auto load_x_batch = [&](uint4(&xv)[U][MT][4], long long batch) {
#pragma unroll
    for (int j = 0; j < U; j++) load_x(xv[j], batch * BU + 4 * j + c, 32);
  };

  const long long full = a.batches.full; /* batches whose blocks all lie inside K */
  /* The last, partial batch: blocks past ceil(k/32) are skipped (zero), the
   * block that straddles k reads x with bounds checks (its W padding is
   * zero by the format, and x past k must not be read).  Its worker runs
   * it before its main loop, while the ring's first copies are in flight:
   * run last, its loads were a DRAM round trip that no other work hid.
   * (Copying it through the ring instead slowed the loop of every other
   * shape: BENCHMARKS.md.) */
  auto tail = [&]() {
    if (full * BU >= a.k_blocks || worker != a.batches.extra) return;
    uint4 v[T][U][2];
    unsigned s[T][U][2];
    uint4 xv[U][MT][4];
    bool big = false;
#pragma unroll
    for (int j = 0; j < U; j++) {
      const long long rel = full * BU + 4 * j;
      const long long blk = rel + c;
      const bool valid = blk < a.k_blocks;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          v[t][j][h] = !valid ? make_uint4(0, 0, 0, 0)
                       : VEC  ? tgemm_decode::load_stream16(qp[t][h] + rel * 16, policy)
                              : load16_bytes(qp[t][h] + rel * 16);
          s[t][j][h] = valid ? (unsigned)__ldg(sp[t][h] + rel) : 127u;
          big |= tgemm_w4::scale_is_big(s[t][j][h]);
        }
      load_x(xv[j], blk, valid ? k - blk * 32 : 0);
    }
#pragma unroll
    for (int j = 0; j < U; j++) step(v, s, j, xv[j], big);
  };

  if constexpr (ST > 0) {
    /* The lane's places in the rings, as byte offsets into shared memory
     * (pinned in registers in the loop, see tgemm_decode::keep; offsets
     * rather than pointers, so that accesses stay shared-memory ones):
     * its weight slot, its quad's scale word (copied by lane c == 0) and
     * scale byte. */
    unsigned char *const sm = reinterpret_cast<unsigned char *>(smem);
    int ring_at = (int)(((size_t)warp * ST * SLOTS * 32 + lane) * 16);
    int sring_at =
        (int)((size_t)WARPS * ST * SLOTS * 32 * 16 + ((size_t)warp * ST * SLOTS * 8 + g) * 4);
    int sread_at = sring_at + c;
    int scale_copier = c == 0;
    const int mine = a.batches.count(worker);
    /* Loop-carried cursors (copy-in pointers, x pointers, ring stages) that
     * advance by one stride per batch: recomputing each address from the
     * batch index cost ~200 integer instructions per batch, on the pipe
     * that already limits this kernel. */
    const unsigned char *in_q[T][2], *in_s[T][2];
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        in_q[t][h] = a.wq + (qoff[t][h] + (offset)worker * BU * 16);
        in_s[t][h] = a.ws + (soff[t][h] + (offset)worker * BU);
      }
    const unsigned short *xc[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) xc[mt] = xp[mt] + (long long)worker * BU * 32;
    const long long q_step = (long long)workers * BU * 16, s_step = (long long)workers * BU;
    const long long x_step = (long long)workers * BU * 32;
    /* XR: the warp's x ring after the weight and scale rings.  Piece p of
     * token r is stored at p ^ ((r & 1) | ((p >> 3 & 1) << 1)): the 8 lanes
     * of a quarter warp (tokens g, g+1, pieces 4c + w) then read 8
     * different bank groups. */
    int xring_at = (int)(((size_t)WARPS * ST * SLOTS * 34 + (size_t)warp * ST * XSTAGE) * 16);
    const unsigned short *xin = a.x + (long long)worker * BU * 32 + 8 * (lane % XCH);
    tgemm_decode::x_ring_copy<MT, XR ? XCH : 16> xcopy;
    if constexpr (XR)
      xcopy.init(lane, m, a.ldx, [](int r, int p) { return p ^ ((r & 1) | ((p >> 3 & 1) << 1)); });
    /* the lane's x pieces w = 0..3 in a stage of the x ring */
    int xread_at[4];
#pragma unroll
    for (int w = 0; w < 4; w++)
      xread_at[w] = xring_at + (g * XCH + 4 * c + (w ^ ((g & 1) | (c & 2)))) * 16;
    /* Copies the next batch's weights and scales into ring stage `stage`. */
    auto issue_w = [&](int stage) {
      uint4 *rs = reinterpret_cast<uint4 *>(sm + ring_at) + stage * SLOTS * 32;
      unsigned *ss = reinterpret_cast<unsigned *>(sm + sring_at) + stage * SLOTS * 8;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const int slot = (t * U + j) * 2 + h;
            tgemm_decode::cp_async16_stream(rs + slot * 32, in_q[t][h] + 64 * j, policy);
            if (scale_copier) tgemm_decode::cp_async4(ss + slot * 8, in_s[t][h] + 4 * j);
          }
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int h = 0; h < 2; h++) in_q[t][h] += q_step, in_s[t][h] += s_step;
    };
    /* ... and its x (XR). */
    auto issue_x = [&](int stage) {
      if constexpr (XR) {
        xcopy.issue(reinterpret_cast<uint4 *>(sm + xring_at) + stage * XSTAGE, xin);
        xin += x_step;
      }
    };
    /* The first stages' weights are requested before x may be read (the
     * kernel before may still be writing it), so the first copy group
     * holds all of them: waiting for it is waiting for no less. */
#pragma unroll
    for (int s = 0; s < ST - 1; s++)
      if (s < mine) issue_w(s);
    tgemm_decode::wait_for_previous();
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
      if (s < mine) issue_x(s);
      tgemm_decode::cp_async_commit();
    }
    tail();
    /* Batch i, which sits in ring stage `stage` (= i % ST). */
    auto consume = [&](int i, int stage) {
      if (i + ST - 1 < mine) issue_w((stage + ST - 1) % ST), issue_x((stage + ST - 1) % ST);
      tgemm_decode::cp_async_commit();
      uint4 xv[U][MT][4];
      if constexpr (!XR) {
#pragma unroll
        for (int j = 0; j < U; j++) tgemm_w4::load_x_block<MT>(xv[j], xc, 128 * j, 32, true);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) xc[mt] += x_step;
      }
      tgemm_decode::cp_async_wait<ST - 1>();
      __syncwarp(); /* scales (and x) were copied by other lanes */
      const uint4 *rs = reinterpret_cast<const uint4 *>(sm + ring_at) + stage * SLOTS * 32;
      const unsigned char *ss = sm + sread_at + stage * SLOTS * 8 * 4;
      if constexpr (XR) {
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int w = 0; w < 4; w++)
              xv[j][mt][w] = reinterpret_cast<const uint4 *>(
                  sm + xread_at[w])[stage * XSTAGE + mt * 8 * XCH + 16 * j];
      }
      uint4 v[T][U][2];
      unsigned s[T][U][2];
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const int slot = (t * U + j) * 2 + h;
            v[t][j][h] = rs[slot * 32];
            s[t][j][h] = ss[slot * 32];
          }
      __syncwarp(); /* every lane has read the slot before it is refilled */
      if (i == 0) W4_PHASE(1);
      compute(v, s, xv);
    };
    auto pin = [&]() {
      tgemm_decode::keep(ring_at), tgemm_decode::keep(sring_at), tgemm_decode::keep(sread_at);
      tgemm_decode::keep(scale_copier);
      if constexpr (XR) {
        tgemm_decode::keep(xring_at);
#pragma unroll
        for (int w = 0; w < 4; w++) tgemm_decode::keep(xread_at[w]);
        xcopy.keep_in_registers();
      }
    };
    /* Unrolled by ST, so that every stage offset is a constant; but a warp
     * with a large batch (T·U·MT >= 4 tile groups) and few batches runs each
     * unrolled copy once or twice, and fetching that much code stalled it:
     * ~half the warp stalls of o_proj TP8's M = 16 kernel waited for
     * instructions (Nsight Compute), and the rolled loop is 4.6% faster
     * there (BENCHMARKS.md). */
    if (T * U * MT >= 4 && mine <= 4) {
#pragma unroll 1
      for (int i = 0; i < mine; i++) {
        pin();
        consume(i, i % ST);
      }
    } else {
      for (int i0 = 0; i0 < mine; i0 += ST) {
        pin();
#pragma unroll
        for (int stage = 0; stage < ST; stage++) {
          if (i0 + stage >= mine) break;
          consume(i0 + stage, stage);
        }
      }
    }
    tgemm_decode::cp_async_wait<0>();
  } else {
    auto load_w = [&](uint4(&v)[T][U][2], unsigned(&s)[T][U][2], long long batch) {
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const long long blk = batch * BU + 4 * j; /* + c, folded into qp/sp */
            v[t][j][h] = VEC ? tgemm_decode::load_stream16(qp[t][h] + blk * 16, policy)
                             : load16_bytes(qp[t][h] + blk * 16);
            s[t][j][h] = __ldg(sp[t][h] + blk);
          }
    };
    auto compute_batch = [&](const uint4(&v)[T][U][2], const unsigned(&s)[T][U][2],
                             long long batch) {
      uint4 xv[U][MT][4];
      load_x_batch(xv, batch);
      compute(v, s, xv);
    };
    long long batch = worker;
    uint4 va[T][U][2], vb[T][U][2];
    unsigned sa[T][U][2], sb[T][U][2];
    if (batch < full) load_w(va, sa, batch);
    tgemm_decode::wait_for_previous(); /* before x is read */
    tail();
    while (batch < full) {
      if (batch + workers < full) load_w(vb, sb, batch + workers);
      compute_batch(va, sa, batch);
      batch += workers;
      if (batch >= full) break;
      if (batch + workers < full) load_w(va, sa, batch + workers);
      compute_batch(vb, sb, batch);
      batch += workers;
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] += acc_odd[r];
  W4_PHASE(2);
  if (a.trigger == tgemm_decode::kTriggerAfterLoop) tgemm_decode::allow_next_launch();
  if constexpr (ST > 0) __syncthreads(); /* the rings become the reduction buffer */
  W4_PHASE(3);
  tgemm_decode::reduce_and_store<WARPS, R, MT>(acc, smem, split, rank, row0, a.ep);
  W4_PHASE(4);
}

typedef void (*kernel_fn)(w4_args);

using tgemm_decode::config;

/* The instantiated kernels {warps, tiles, unroll, stages, x in the ring};
 * each is offered with every useful split that fits in shared memory. */
#define TGEMM_W4S_CONFIGS(X)                                                                  \
  X(8, 1, 1, 4, 0) X(8, 1, 2, 4, 0) X(8, 2, 1, 4, 0) X(8, 1, 1, 8, 0) X(4, 1, 1, 4, 0)         \
  X(4, 1, 2, 4, 0) X(4, 2, 1, 4, 0) X(4, 2, 2, 4, 0) X(4, 4, 1, 4, 0) X(16, 1, 1, 4, 0)        \
  X(16, 2, 1, 4, 0) X(8, 2, 1, 2, 0) X(8, 1, 1, 2, 0) X(4, 1, 2, 2, 0) X(4, 2, 1, 2, 0)        \
  X(8, 4, 1, 2, 0) X(4, 4, 1, 2, 0) X(8, 2, 1, 2, 1) X(4, 2, 1, 2, 1) X(4, 4, 1, 2, 1)         \
  X(8, 1, 1, 2, 1) X(4, 1, 1, 4, 1) X(8, 1, 1, 4, 1) X(16, 1, 1, 2, 1) X(16, 1, 1, 4, 1)         \
  X(2, 4, 1, 2, 1) X(1, 4, 1, 2, 1) X(2, 2, 1, 2, 1) X(4, 1, 1, 2, 1) X(2, 1, 1, 2, 1)         \
  X(1, 1, 1, 2, 1) X(4, 2, 2, 2, 1)

#define TGEMM_W4S_ROW(W, T, U, ST, XR) {W, T, U, ST, XR},
const int kConfigs[][5] = {TGEMM_W4S_CONFIGS(TGEMM_W4S_ROW)};
#undef TGEMM_W4S_ROW

kernel_fn find_vec_kernel(int mt, config cfg, bool paired) {
#define TGEMM_W4S_FIND(W, T, U, ST, XR)                                         \
  if (cfg.warps == W && cfg.tiles == T && cfg.unroll == U && cfg.stages == ST && \
      cfg.x_ring == XR)                                                         \
    return mt == 1 ? (paired ? w4a16_stream_kernel<1, W, T, U, ST, true, XR, true>  \
                             : w4a16_stream_kernel<1, W, T, U, ST, true, XR, false>) \
                   : (paired ? w4a16_stream_kernel<2, W, T, U, ST, true, XR, true>  \
                             : w4a16_stream_kernel<2, W, T, U, ST, true, XR, false>);
  TGEMM_W4S_CONFIGS(TGEMM_W4S_FIND)
#undef TGEMM_W4S_FIND
  return NULL;
}

/* The element-load fallback for unaligned operands: one configuration. */
const config kSafe = {4, 1, 1, 0, 1, 0};
kernel_fn find_safe_kernel(int mt, bool paired) {
  if (paired)
    return mt == 1 ? w4a16_stream_kernel<1, 4, 1, 1, 0, false, false, true>
                   : w4a16_stream_kernel<2, 4, 1, 1, 0, false, false, true>;
  return mt == 1 ? w4a16_stream_kernel<1, 4, 1, 1, 0, false, false, false>
                 : w4a16_stream_kernel<2, 4, 1, 1, 0, false, false, false>;
}

/* Bytes of the weight, scale (and x) rings. */
size_t ring_bytes(config cfg, int mt) {
  size_t slots = (size_t)cfg.warps * cfg.stages * cfg.tiles * cfg.unroll * 2;
  size_t ring = slots * 32 * 16 + slots * 8 * 4;
  if (cfg.x_ring) ring += (size_t)cfg.warps * cfg.stages * mt * 8 * 16 * cfg.unroll * 16;
  return ring;
}

/* Dynamic shared memory: the rings or the reduction buffer, then the
 * cluster's exchange area (tgemm_decode::decode_smem_bytes). */
size_t smem_bytes(config cfg, int mt) {
  return tgemm_decode::decode_smem_bytes(ring_bytes(cfg, mt), cfg.warps, cfg.tiles, mt, cfg.split);
}

/* Each worker (warp of the cluster) must get at least one batch, and the
 * rings must fit. */
bool config_useful(const tgemm__shape *s, config cfg) {
  long long blocks = (s->k + 31) / 32;
  long long batches = (blocks + 4LL * cfg.unroll - 1) / (4LL * cfg.unroll);
  if (smem_bytes(cfg, s->m > 8 ? 2 : 1) > tgemm_decode::kMaxSmem) return false;
  return cfg.split == 1 || batches >= (long long)cfg.split * cfg.warps;
}

/* The built-in choice (candidates[0]).  The picks of the graph-timed tuner
 * runs of 2026-11-24 on the H100, with the kernels launched as dependent
 * launches (bench/device/suite.sh graphtune: the DeepSeek-V3 decode
 * points, calls back to back, weights cold), where they differ from the
 * rule read off the earlier runs, made without them.  x goes through the
 * ring ("_xr"); the next kernel may launch at the start unless "after
 * the loop" is said:
 * - fewer 16-row tiles than half the SMs but at least a quarter (N = 576):
 *   4 warps of one tile (two tiles from M = 9) on a 2-deep ring, split 8,
 *   after the loop (since the cluster exchange of 2026-11-25: 3.26-3.41 us
 *   at M <= 8 against 3.61-3.72 for 16 warps unsplit, 3.88 at M = 16);
 *   fewer tiles still keep the earlier rule's
 *   clusters (4 warps, split 8; from M = 9 8 warps on a 4-deep ring, split
 *   2), which spread them over more SMs (no DeepSeek-V3 layer has so few);
 * - at most one tile per SM (N <= 2112): 16 warps on a 2-deep ring;
 * - very tall weights (>= 1024 tiles), 2-deep rings: up to M = 8, 4 warps
 *   of four tiles on rows longer than 1024 (q_b M = 1: 8.50 us against
 *   9.46 for 2 warps of two tiles), else 2 warps of two tiles; from M = 9,
 *   2 warps of four tiles on short rows (K <= 1024), else of two;
 * - long rows (K >= 8192): 8 warps of two tiles; from M = 9, 4 warps of
 *   four tiles, split 2;
 * - up to two tiles per SM: 8 warps of one tile, on a 4-deep ring up to
 *   M = 8, else a 2-deep one;
 * - other short rows: 4 warps of one tile on a 4-deep ring;
 * - otherwise 8 warps of two tiles on a 2-deep ring (o_proj TP8: 4.18 us
 *   at M = 1 against 6.45 for 4 warps at the start); from M = 9, 4 warps of
 *   two tiles with two 4-block steps a batch (o_proj TP8 M = 16: 5.59 us
 *   against 6.21 for 4 warps of one tile, the pick before U = 2 kernels
 *   carried x in the ring). */
config default_config(const tgemm__shape *s, int sm_count) {
  using tgemm_decode::kTriggerAfterLoop;
  const long long tiles16 = (s->n + 15) / 16;
  const bool wide_m = s->m > 8;
  config cfg;
  if (2 * tiles16 < sm_count) {
    if (4 * tiles16 >= sm_count) /* measured on N = 576: 36 tiles */
      cfg = wide_m ? config{4, 2, 1, 2, 8, 1, kTriggerAfterLoop}
                   : config{4, 1, 1, 2, 8, 1, kTriggerAfterLoop};
    else /* fewer tiles: the earlier rule's splits, not remeasured */
      cfg = wide_m ? config{8, 1, 1, 4, 2, 1} : config{4, 1, 1, 4, 8, 1};
    while (cfg.split > 1 && !config_useful(s, cfg)) cfg.split /= 2;
  } else if (tiles16 <= sm_count) {
    cfg = config{16, 1, 1, 2, 1, 1};
  } else if (tiles16 >= 1024) {
    if (wide_m)
      cfg = s->k <= 1024 ? config{2, 4, 1, 2, 1, 1} : config{2, 2, 1, 2, 1, 1};
    else
      cfg = s->k > 1024 ? config{4, 4, 1, 2, 1, 1} : config{2, 2, 1, 2, 1, 1};
  } else if (s->k >= 8192) {
    cfg = wide_m ? config{4, 4, 1, 2, 2, 1} : config{8, 2, 1, 2, 1, 1};
  } else if (tiles16 <= 2LL * sm_count) {
    cfg = config{8, 1, 1, wide_m ? 2 : 4, 1, 1};
  } else if (s->k <= 1024) {
    cfg = config{4, 1, 1, 4, 1, 1};
  } else {
    cfg = wide_m ? config{4, 2, 2, 2, 1, 1} : config{8, 2, 1, 2, 1, 1};
  }
  if (!config_useful(s, cfg)) cfg = config{8, 2, 1, 2, 1, 0}; /* rings too large */
  return cfg;
}

}  // namespace

extern "C" int tgemm__w4a16_stream_candidates(const tgemm__shape *shape, int sm_count,
                                              tgemm__kernel *out, int cap) {
  if (!tgemm_decode::shape_ok(shape, TGEMM__W4A16_STREAM_MAX_M) || !out || cap <= 0) return 0;
  if (sm_count <= 0) sm_count = 132;
  const config best = default_config(shape, sm_count);
  return tgemm_decode::list_candidates(
      kConfigs, best, TGEMM_ROUTE_W4A16, "w4a16_stream",
      [shape](config cfg) { return config_useful(shape, cfg); }, out, cap);
}

extern "C" cudaError_t tgemm__w4a16_stream_run(const tgemm__kernel *kernel,
                                               const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args || kernel->route != TGEMM_ROUTE_W4A16) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, "w4a16_stream_", 13) != 0) return cudaErrorInvalidValue;
  config cfg = tgemm_decode::config_of(kernel);
  if (!tgemm_decode::config_known(kConfigs, cfg)) return cudaErrorInvalidValue;
  const tgemm__shape shape = tgemm_decode::shape_of(args);
  if (!tgemm_decode::shape_ok(&shape, TGEMM__W4A16_STREAM_MAX_M) ||
      !tgemm_decode::mxfp4_operands_ok(args))
    return cudaErrorInvalidValue;
  const long long k_blocks = (args->k + 31) / 32;

  const int mt = args->m > 8 ? 2 : 1;
  /* The ring kernels copy 16-byte weight pieces and 4-byte scale words, and
   * keep x's and the weights' offsets in 32 bits; the element-load fallback
   * takes every other call. */
  const bool ring_ok = ((uintptr_t)args->x % 16 == 0) && ((uintptr_t)args->w_packed % 16 == 0) &&
                       ((uintptr_t)args->w_scales % 4 == 0) && args->ldx % 8 == 0 &&
                       args->ldw_packed % 16 == 0 && args->ldw_scales % 4 == 0 &&
                       tgemm_decode::x_offsets_fit(args->ldx) &&
                       tgemm_decode::rows_fit_u32(args->n, args->ldw_packed) &&
                       tgemm_decode::rows_fit_u32(args->n, args->ldw_scales);
  kernel_fn fn;
  if (ring_ok) {
    fn = find_vec_kernel(mt, cfg, args->w_paired != 0);
  } else {
    cfg = tgemm_decode::fallback_config(kSafe, cfg);
    fn = find_safe_kernel(mt, args->w_paired != 0);
  }
  if (!fn) return cudaErrorInvalidValue;
  const size_t smem = smem_bytes(cfg, mt);

  w4_args a;
  a.x = static_cast<const unsigned short *>(args->x);
  a.ldx = args->ldx;
  a.wq = args->w_packed;
  a.ldq = args->ldw_packed;
  a.ws = args->w_scales;
  a.lds = args->ldw_scales;
  a.k = args->k;
  a.k_blocks = k_blocks;
  if (!tgemm_decode::deal_batches(args->k / 32 / (4LL * cfg.unroll), cfg.split * cfg.warps,
                                  &a.batches))
    return cudaErrorInvalidValue;
  a.split = cfg.split;
  a.trigger = cfg.trigger;
  a.ep = tgemm_decode::epilogue_of(args);
  a.ep.exchange_at =
      (int)tgemm_decode::exchange_offset(ring_bytes(cfg, mt), cfg.warps, cfg.tiles, mt, cfg.split);
  const long long groups = (args->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  return tgemm_decode::launch(fn, a, groups, cfg.split, cfg.warps, smem, args->stream);
}
