/* Bulk-copy W4A16 decode GEMM (see w4a16_bulk.cuh).
 *
 * Block = WARPS consumer warps + 1 producer warp.  The block walks its row
 * groups (blockIdx.x, + gridDim.x, ...) chunk by chunk; every chunk is one
 * ring stage: the producer waits until the stage is free, announces its
 * byte count on the stage's "full" mbarrier and has one lane per row issue
 * the row's weight and scale copies.  Consumer warp w decodes batches
 * w, w + WARPS, ... of the chunk (a batch: 4 MXFP4 blocks, one per lane
 * quad position c, as in w4a16_stream.cu), then releases the stage on its
 * "empty" mbarrier.  After a group's last chunk the warps' sums meet in
 * shared memory and are stored. */
#include <cuda_runtime.h>
#include <string.h>

#include "cuda/w4a16_bulk.cuh"
#include "cuda/w4a16_decode.cuh"
#include "cuda/w4a16_stream.cuh"

namespace {

using tgemm_decode::epilogue;

struct bulk_args {
  const unsigned short *x; /* bf16 bits */
  long long ldx;
  const unsigned char *wq; /* packed E2M1 pairs */
  long long ldq;
  const unsigned char *ws; /* E8M0 scales */
  long long lds;
  long long k_blocks; /* k / 32, a multiple of 16 */
  long long groups;   /* row groups of 16·T rows */
  int whole;          /* rows lie back to back and a chunk is a whole row: one copy per stage */
  epilogue ep;
};

/* ---- mbarriers and bulk copies (sm_90) --------------------------------- */

__device__ __forceinline__ unsigned smem_u32(const void *p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(unsigned long long *bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
}

/* Makes the initialized barriers visible to the bulk-copy engine. */
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/* One arrival that also expects `bytes` more of copy completion. */
__device__ __forceinline__ void mbar_arrive_expect(unsigned long long *bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(unsigned long long *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

/* Waits until the barrier's phase of the given parity has completed. */
__device__ __forceinline__ void mbar_wait(unsigned long long *bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

/* bytes (a multiple of 16, both addresses 16-byte aligned) from global to
 * shared memory, counted on bar; L2 evict-first (the weights are read once). */
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, unsigned bytes,
                                          unsigned long long *bar, unsigned long long policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1], %2, [%3], %4;" ::"r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
      : "memory");
}

/* Barrier 1 over the consumer warps only (the producer never joins). */
template <int THREADS>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(THREADS) : "memory");
}

/* ---- the kernel --------------------------------------------------------- */

/* Shared memory of one configuration: S stages of 16·T rows of KC blocks.
 * Weight rows are KC·16 + 64 bytes apart, so the two rows a quarter warp
 * reads (g, g+1) fall on different halves of the banks; scale rows KC + 16,
 * so the quads' rows spread over the banks. */
template <int WARPS, int MT, int T, int KC, int S>
struct bulk_layout {
  static constexpr int kRows = 16 * T;
  static constexpr int kWPitch = KC * 16 + 64;
  static constexpr int kSPitch = KC + 16;
  static constexpr int kStage = kRows * (kWPitch + kSPitch);
  static constexpr int kBarBytes = 128; /* 2·S barriers */
  static constexpr int kR = T * MT * 4; /* accumulators per lane */
  static constexpr int kRed = WARPS * kR * 32; /* floats of one reduction buffer */
  static constexpr size_t kSmem = kBarBytes + (size_t)S * kStage + 2 * sizeof(float) * kRed;
  static_assert(2 * S * 8 <= kBarBytes, "barrier space");
};

/* The warps' sums of one row group, added in warp order and stored. */
template <int WARPS, int R, int MT>
__device__ __forceinline__ void reduce_store_group(const float (&acc)[R], float *red, int row0,
                                                   const epilogue &ep) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int E = R * 32;
#pragma unroll
  for (int r = 0; r < R; r++)
    if (tgemm_decode::element_used<MT>(ep, row0, r * 32 + lane))
      red[(warp * R + r) * 32 + lane] = acc[r];
  consumers_sync<WARPS * 32>();
  for (int e = threadIdx.x; e < E; e += WARPS * 32) {
    if (!tgemm_decode::element_used<MT>(ep, row0, e)) continue;
    float s = red[e];
#pragma unroll
    for (int w = 1; w < WARPS; w++) s += red[w * E + e];
    tgemm_decode::store_one<MT>(ep, row0, e, s);
  }
}

template <int MT, int WARPS, int T, int KC, int S>
__global__ void __launch_bounds__((WARPS + 1) * 32)
    w4a16_bulk_kernel(const __grid_constant__ bulk_args a) {
  using L = bulk_layout<WARPS, MT, T, KC, S>;
  constexpr int R = L::kR;
  constexpr int BPW = KC / (4 * WARPS); /* batches per warp in a whole chunk */
  static_assert(KC % 16 == 0 && KC % (4 * WARPS) == 0, "chunk of whole batches per warp");
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned long long *full = reinterpret_cast<unsigned long long *>(smem), *empty = full + S;
  unsigned char *stages = smem + L::kBarBytes;
  float *red = reinterpret_cast<float *>(stages + (size_t)S * L::kStage);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < S; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], WARPS);
    mbar_fence_init();
  }
  __syncthreads();
  const long long chunks = (a.k_blocks + KC - 1) / KC;
  const int n = a.ep.n;

  if (warp == WARPS) { /* producer */
    const unsigned long long policy = tgemm_decode::evict_first_policy();
    int stage = 0;
    unsigned phase = 0;
    for (long long grp = blockIdx.x; grp < a.groups; grp += gridDim.x) {
      const long long row0 = grp * L::kRows;
      const int rows = (int)min((long long)L::kRows, n - row0);
      for (long long kc = 0; kc < chunks; kc++) {
        const int nb = (int)min((long long)KC, a.k_blocks - kc * KC);
        mbar_wait(&empty[stage], phase ^ 1u); /* a fresh barrier passes parity 1 */
        if (lane == 0) mbar_arrive_expect(&full[stage], (unsigned)(rows * nb * 17));
        __syncwarp();
        unsigned char *st = stages + (size_t)stage * L::kStage;
        if (a.whole) {
          if (lane == 0) {
            bulk_copy(st, a.wq + row0 * a.ldq, (unsigned)(rows * nb * 16), &full[stage], policy);
            bulk_copy(st + L::kRows * nb * 16, a.ws + row0 * a.lds, (unsigned)(rows * nb),
                      &full[stage], policy);
          }
        } else
        for (int r = lane; r < rows; r += 32) {
          bulk_copy(st + r * L::kWPitch, a.wq + (row0 + r) * a.ldq + kc * KC * 16,
                    (unsigned)nb * 16u, &full[stage], policy);
          bulk_copy(st + L::kRows * L::kWPitch + r * L::kSPitch, a.ws + (row0 + r) * a.lds + kc * KC,
                    (unsigned)nb, &full[stage], policy);
        }
        if (++stage == S) stage = 0, phase ^= 1u;
      }
    }
    return;
  }

  /* consumers */
  const int g = lane >> 2, c = lane & 3;
  const int m = a.ep.m;
  const unsigned short *xp[MT];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) xp[mt] = a.x + (long long)min(8 * mt + g, m - 1) * a.ldx;
  /* x of this warp's batches of chunk kc (nb blocks), from L2. */
  auto load_x = [&](uint4(&xb)[BPW][MT][4], long long kc, int nb) {
#pragma unroll
    for (int i = 0; i < BPW; i++) {
      const int b = warp + i * WARPS;
      if (4 * b < nb) tgemm_w4::load_x_block<MT>(xb[i], xp, (kc * KC + 4 * b + c) * 32, 32, true);
    }
  };
  auto chunk_blocks = [&](long long kc) { return (int)min((long long)KC, a.k_blocks - kc * KC); };

  const int wpitch = a.whole ? (int)a.k_blocks * 16 : L::kWPitch;
  const int spitch = a.whole ? (int)a.k_blocks : L::kSPitch;
  uint4 xv[BPW][MT][4];
  if ((long long)blockIdx.x < a.groups) load_x(xv, 0, chunk_blocks(0));
  int stage = 0, parity_flip = 0;
  unsigned phase = 0;
  for (long long grp = blockIdx.x; grp < a.groups; grp += gridDim.x) {
    const int row0 = (int)(grp * L::kRows);
    float acc[R], acc_odd[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = acc_odd[r] = 0.0f;
    for (long long kc = 0; kc < chunks; kc++) {
      const int nb = chunk_blocks(kc);
      /* x of the next chunk in this block's walk, while this one computes
       * (with one chunk per row, every chunk needs the same x). */
      const long long kn = kc + 1 < chunks ? kc + 1 : 0;
      const bool next = chunks > 1 && (kc + 1 < chunks || grp + gridDim.x < a.groups);
      uint4 xn[BPW][MT][4];
      if (next) load_x(xn, kn, chunk_blocks(kn));
      mbar_wait(&full[stage], phase);
      const unsigned char *st = stages + (size_t)stage * L::kStage;
      const unsigned char *ss = st + L::kRows * wpitch;
#pragma unroll
      for (int i = 0; i < BPW; i++) {
        const int b = warp + i * WARPS;
        if (4 * b >= nb) break; /* warp-uniform */
        uint4 v[T][2];
        unsigned s[T][2];
        bool big = false;
#pragma unroll
        for (int t = 0; t < T; t++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const int row = 16 * t + g + 8 * h;
            v[t][h] = *reinterpret_cast<const uint4 *>(st + row * wpitch + (4 * b + c) * 16);
            s[t][h] = ss[row * spitch + 4 * b + c];
            big |= tgemm_w4::scale_is_big(s[t][h]);
          }
        /* scales above 2^1 are rare: their second multiply stays off the
         * common path */
        if (__any_sync(0xffffffffu, big))
          tgemm_w4::block_step<MT, T>(acc, acc_odd, v, s, xv[i], true);
        else
          tgemm_w4::block_step<MT, T>(acc, acc_odd, v, s, xv[i], false);
      }
      __syncwarp(); /* every lane has read the stage */
      if (lane == 0) mbar_arrive(&empty[stage]);
      if (++stage == S) stage = 0, phase ^= 1u;
      if (next) {
#pragma unroll
        for (int i = 0; i < BPW; i++)
#pragma unroll
          for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int w = 0; w < 4; w++) xv[i][mt][w] = xn[i][mt][w];
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] += acc_odd[r];
    /* two reduction buffers in turn: a warp that writes group i+2's sums
     * has passed group i+1's barrier, so every warp is done reading i's */
    reduce_store_group<WARPS, R, MT>(acc, red + parity_flip * L::kRed, row0, a.ep);
    parity_flip ^= 1;
  }
}

typedef void (*kernel_fn)(bulk_args);

/* One configuration: consumer warps, 16-row tiles per group, blocks per
 * chunk, stages. */
struct bulk_config {
  int warps, tiles, chunk, stages;
};

/* The instantiated kernels {warps, tiles, chunk blocks, stages}. */
#define TGEMM_W4B_CONFIGS(X)                                                          \
  X(16, 1, 64, 4) X(8, 1, 64, 4) X(8, 1, 32, 8) X(16, 1, 64, 3) X(8, 1, 64, 6)         \
  X(4, 1, 64, 6) X(4, 1, 16, 8) X(4, 2, 16, 8) X(4, 4, 16, 6) X(8, 2, 32, 6)         \
  X(8, 1, 224, 2) X(14, 1, 224, 2)

#define TGEMM_W4B_ROW(W, T, C, S) {W, T, C, S},
const bulk_config kConfigs[] = {TGEMM_W4B_CONFIGS(TGEMM_W4B_ROW)};
#undef TGEMM_W4B_ROW

kernel_fn find_kernel(int mt, bulk_config cfg, size_t *smem) {
#define TGEMM_W4B_FIND(W, T, C, S)                                                          \
  if (cfg.warps == W && cfg.tiles == T && cfg.chunk == C && cfg.stages == S) {             \
    if (mt == 1) {                                                                         \
      *smem = bulk_layout<W, 1, T, C, S>::kSmem;                                           \
      return w4a16_bulk_kernel<1, W, T, C, S>;                                             \
    }                                                                                      \
    *smem = bulk_layout<W, 2, T, C, S>::kSmem;                                             \
    return w4a16_bulk_kernel<2, W, T, C, S>;                                               \
  }
  TGEMM_W4B_CONFIGS(TGEMM_W4B_FIND)
#undef TGEMM_W4B_FIND
  return NULL;
}

bool shape_ok(const tgemm__shape *s) {
  return tgemm_decode::shape_ok(s, TGEMM__W4A16_BULK_MAX_M) && s->k % 512 == 0;
}

void fill_kernel(tgemm__kernel *out, bulk_config cfg) {
  memset(out, 0, sizeof *out);
  out->route = TGEMM_ROUTE_W4A16;
  snprintf(out->name, sizeof out->name, "w4a16_bulk_w%d_t%d_c%d_p%d", cfg.warps, cfg.tiles,
           cfg.chunk, cfg.stages);
  out->params[0] = cfg.warps;
  out->params[1] = cfg.tiles;
  out->params[2] = cfg.chunk;
  out->params[3] = cfg.stages;
}

}  // namespace

extern "C" int tgemm__w4a16_bulk_candidates(const tgemm__shape *shape, int sm_count,
                                            tgemm__kernel *out, int cap) {
  (void)sm_count;
  if (!shape || !out || cap <= 0 || !shape_ok(shape)) return 0;
  const int mt = shape->m > 8 ? 2 : 1;
  int count = 0;
  for (const bulk_config &cfg : kConfigs) {
    if (count >= cap) break;
    size_t smem = 0;
    if (!find_kernel(mt, cfg, &smem) || smem > tgemm_decode::kMaxSmem) continue;
    fill_kernel(&out[count++], cfg);
  }
  return count;
}

extern "C" cudaError_t tgemm__w4a16_bulk_run(const tgemm__kernel *kernel,
                                             const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args || kernel->route != TGEMM_ROUTE_W4A16) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, "w4a16_bulk_", 11) != 0) return cudaErrorInvalidValue;
  const bulk_config cfg = {kernel->params[0], kernel->params[1], kernel->params[2],
                           kernel->params[3]};
  const int mt = args->m > 8 ? 2 : 1;
  size_t smem = 0;
  kernel_fn fn = find_kernel(mt, cfg, &smem);
  if (!fn) return cudaErrorInvalidValue;
  const tgemm__shape shape = tgemm_decode::shape_of(args);
  if (!tgemm_decode::shape_ok(&shape, TGEMM__W4A16_BULK_MAX_M) ||
      !tgemm_decode::mxfp4_operands_ok(args))
    return cudaErrorInvalidValue;
  const bool bulk_ok = args->k % 512 == 0 && (uintptr_t)args->x % 16 == 0 && args->ldx % 8 == 0 &&
                       (uintptr_t)args->w_packed % 16 == 0 && args->ldw_packed % 16 == 0 &&
                       (uintptr_t)args->w_scales % 16 == 0 && args->ldw_scales % 16 == 0;
  if (!bulk_ok) { /* the streaming kernels' choice, which takes any layout */
    tgemm__kernel fallback;
    if (tgemm__w4a16_stream_candidates(&shape, args->sm_count, &fallback, 1) != 1)
      return cudaErrorInvalidValue;
    return tgemm__w4a16_stream_run(&fallback, args);
  }

  bulk_args a;
  a.x = static_cast<const unsigned short *>(args->x);
  a.ldx = args->ldx;
  a.wq = args->w_packed;
  a.ldq = args->ldw_packed;
  a.ws = args->w_scales;
  a.lds = args->ldw_scales;
  a.k_blocks = args->k / 32;
  a.groups = (args->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  a.ep = tgemm_decode::epilogue_of(args);
  a.whole = a.k_blocks <= cfg.chunk && args->ldw_packed == a.k_blocks * 16 &&
            args->ldw_scales == a.k_blocks;
  const int sms = args->sm_count > 0 ? args->sm_count : 132;
  const long long blocks = a.groups < sms ? a.groups : sms; /* persistent: one per SM */
  return tgemm_decode::launch(fn, a, blocks, 1, cfg.warps + 1, smem, args->stream);
}
