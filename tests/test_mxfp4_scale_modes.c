/* The MXFP4 reference quantizer, scale modes floor / even / rceil:
 * hand-computed cases (significands around 1.5 and 1.75, the 'even' carry
 * into the top exponent, clamps, zero / NaN / Inf / subnormal blocks,
 * ragged widths), then byte-for-byte agreement with a slow oracle written
 * differently (double, frexp, brute-force nearest code) on random blocks
 * from nasty distributions. */
#include <float.h>

#include "mxfp4/mxfp4.h"
#include "test_util.h"

static const tgemm_scale_mode all_modes[3] = {TGEMM_SCALE_FLOOR, TGEMM_SCALE_EVEN,
                                              TGEMM_SCALE_RCEIL};
static const char *mode_name(tgemm_scale_mode m) {
  return m == TGEMM_SCALE_FLOOR ? "floor" : m == TGEMM_SCALE_EVEN ? "even" : "rceil";
}

/* ------------------------------------------------------------------ oracle */

/* The shared exponent, from the DESIGN.md wording, in double. */
static int oracle_shared_exponent(double amax, tgemm_scale_mode mode) {
  int e2;
  double m = frexp(amax, &e2); /* amax = m * 2^e2, m in [0.5, 1) */
  int e = e2 - 1;              /* floor(log2(amax)) */
  double significand = 2.0 * m; /* in [1, 2) */
  int s;
  if (mode == TGEMM_SCALE_FLOOR) {
    s = e - 2;
  } else if (mode == TGEMM_SCALE_EVEN) {
    s = e - 2 + (significand >= 1.75 ? 1 : 0);
  } else {
    /* smallest s with amax <= 6 * 2^s, by search (exact in double) */
    s = e - 4;
    while (amax > ldexp(6.0, s)) s++;
  }
  if (s < -127) s = -127;
  if (s > 127) s = 127;
  return s;
}

/* Nearest E2M1 magnitude by trying all eight; exact ties take the even code. */
static int oracle_nearest_code(double a) {
  static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  if (a > 6.0) a = 6.0;
  int best = 0;
  double best_dist = a;
  for (int k = 1; k < 8; k++) {
    double d = fabs(a - mag[k]);
    if (d < best_dist || (d == best_dist && (k & 1) == 0)) {
      best = k;
      best_dist = d;
    }
  }
  return best;
}

static void oracle_quantize_row(const float *src, int64_t n, uint8_t *packed,
                                uint8_t *scales, tgemm_scale_mode mode) {
  int64_t n_blocks = (n + 31) / 32;
  memset(packed, 0, (size_t)n_blocks * 16);
  for (int64_t b = 0; b < n_blocks; b++) {
    int64_t start = b * 32, end = start + 32 < n ? start + 32 : n;
    int bad = 0;
    double amax = 0;
    for (int64_t i = start; i < end; i++) {
      if (isnan(src[i]) || isinf(src[i])) bad = 1;
      else if (fabs((double)src[i]) > amax) amax = fabs((double)src[i]);
    }
    if (bad) {
      scales[b] = 0xFF;
      continue;
    }
    int s = amax > 0 ? oracle_shared_exponent(amax, mode) : -127;
    scales[b] = (uint8_t)(s + 127);
    for (int64_t i = start; i < end; i++) {
      int code = amax > 0 ? oracle_nearest_code(ldexp(fabs((double)src[i]), -s)) : 0;
      if (signbit(src[i])) code |= 8;
      packed[i / 2] |= (uint8_t)(i % 2 ? code << 4 : code);
    }
  }
}

/* ------------------------------------------------------- hand-computed cases */

static uint8_t byte_of(float amax, tgemm_scale_mode mode) {
  return tgemm__mxfp4_scale_byte(amax, mode);
}

static void check_scale_table(void) {
  struct {
    float amax;
    int floor_byte, even_byte, rceil_byte;
  } cases[] = {
      {1.0f, 125, 125, 125},
      {6.0f, 127, 127, 127},
      {4.0f, 127, 127, 127},
      {1.5f, 125, 125, 125},                  /* 6 * 2^-2 = 1.5 fits */
      {0x1.800002p+0f, 125, 125, 126},        /* 1.5000001 */
      {0x1.7ffffep+0f, 125, 125, 125},        /* 1.4999999 */
      {0x1.bffffep+0f, 125, 125, 126},        /* 1.7499999 */
      {1.75f, 125, 126, 126},
      {0x1.c00002p+0f, 125, 126, 126},        /* 1.7500001 */
      {0x1.bffffep+10f, 135, 135, 136},       /* 1.7499999 * 2^10 */
      {0x1.cp+10f, 135, 136, 136},            /* 1.75 * 2^10 */
      {0x1.c00002p+10f, 135, 136, 136},       /* 1.7500001 * 2^10 */
      {0x1.bffffep-20f, 105, 105, 106},
      {0x1.cp-20f, 105, 106, 106},
      {0x1.c00002p-20f, 105, 106, 106},
      {0x1.bffffep+126f, 251, 251, 252},
      {0x1.cp+126f, 251, 252, 252},
      {0x1p+127f, 252, 252, 252},
      {0x1.bffffep+127f, 252, 252, 253},      /* just below the carry */
      {0x1.cp+127f, 252, 253, 253},           /* even: carry into all-ones -> s = 126 */
      {0x1.c00002p+127f, 252, 253, 253},
      {FLT_MAX, 252, 253, 253},
      {0x1p-124f, 1, 1, 1},                   /* s = -126 */
      {0x1.cp-125f, 0, 1, 1},                 /* floor s = -127; even/rceil -126 */
      {0x1.4p-125f, 0, 0, 0},                 /* 1.25 * 2^-125: s = -127 everywhere */
      {0x1p-125f, 0, 0, 0},
      {0x1p-126f, 0, 0, 0},                   /* FLT_MIN: s = -128 clamps */
      {0x1.8p-127f, 0, 0, 0},                 /* subnormal */
      {0x1p-149f, 0, 0, 0},                   /* smallest subnormal: s = -151 clamps */
      {0x1.fffffcp-127f, 0, 0, 0},            /* largest subnormal */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int want[3] = {cases[i].floor_byte, cases[i].even_byte, cases[i].rceil_byte};
    for (int m = 0; m < 3; m++) {
      uint8_t got = byte_of(cases[i].amax, all_modes[m]);
      CHECK(got == want[m], "%s scale byte of amax %a = %u, expected %d",
            mode_name(all_modes[m]), cases[i].amax, got, want[m]);
      /* the oracle agrees with the table too */
      int oracle = oracle_shared_exponent(cases[i].amax, all_modes[m]) + 127;
      CHECK(oracle == want[m], "oracle %s byte of %a = %d, expected %d",
            mode_name(all_modes[m]), cases[i].amax, oracle, want[m]);
    }
  }
}

static uint8_t code_at(const uint8_t *packed, int i) {
  return (uint8_t)(i % 2 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF);
}

/* A block with amax 1.75 and a few elements chosen to land on midpoints
 * under one mode and on grid points under another. */
static void check_block_codes(void) {
  float v[32];
  for (int i = 0; i < 32; i++) v[i] = 0.0f;
  v[0] = 1.75f;
  v[1] = 0.125f;
  v[2] = -0.375f;
  v[3] = 1.25f;
  v[4] = -0.0f;
  v[5] = -1e-30f;
  v[6] = 0.8125f;
  /* floor: s = -2 (x4); even/rceil: s = -1 (x2) */
  struct {
    tgemm_scale_mode mode;
    uint8_t byte;
    uint8_t codes[7];
  } cases[] = {
      /* x4: 7 -> 6 (code 7), 0.5 (1), -1.5 (11), 5 tie -> 4 (6), -0 (8), -tiny (8), 3.25 -> 3 (5) */
      {TGEMM_SCALE_FLOOR, 125, {7, 1, 11, 6, 8, 8, 5}},
      /* x2: 3.5 tie -> 4 (6), 0.25 tie -> 0, -0.75 tie -> -1 (10), 2.5 tie -> 2 (4), -0, -0, 1.625 -> 1.5 (3) */
      {TGEMM_SCALE_EVEN, 126, {6, 0, 10, 4, 8, 8, 3}},
      {TGEMM_SCALE_RCEIL, 126, {6, 0, 10, 4, 8, 8, 3}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    uint8_t packed[16], scale;
    tgemm_mxfp4_quantize_row_ref(v, 32, packed, &scale, cases[c].mode);
    CHECK(scale == cases[c].byte, "%s: block scale %u, expected %u",
          mode_name(cases[c].mode), scale, cases[c].byte);
    for (int i = 0; i < 7; i++)
      CHECK(code_at(packed, i) == cases[c].codes[i], "%s: element %d (%g) code %u, expected %u",
            mode_name(cases[c].mode), i, v[i], code_at(packed, i), cases[c].codes[i]);
    for (int i = 7; i < 32; i++)
      CHECK(code_at(packed, i) == 0, "%s: +0 element %d code %u", mode_name(cases[c].mode), i,
            code_at(packed, i));
  }
}

static void check_special_blocks(void) {
  float v[32];
  uint8_t packed[16], scale;
  for (int m = 0; m < 3; m++) {
    tgemm_scale_mode mode = all_modes[m];
    /* zero block with mixed signs */
    for (int i = 0; i < 32; i++) v[i] = (i % 3 == 0) ? -0.0f : 0.0f;
    tgemm_mxfp4_quantize_row_ref(v, 32, packed, &scale, mode);
    CHECK(scale == 0, "%s: zero block scale %u", mode_name(mode), scale);
    for (int i = 0; i < 32; i++)
      CHECK(code_at(packed, i) == (i % 3 == 0 ? 8 : 0), "%s: zero block element %d code %u",
            mode_name(mode), i, code_at(packed, i));

    /* one NaN / +Inf / -Inf makes the whole block 0xFF with zero codes */
    const float specials[3] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
      for (int pos = 0; pos < 32; pos += 31) {
        for (int i = 0; i < 32; i++) v[i] = (float)(i + 1) * (i % 2 ? -1.0f : 1.0f);
        v[pos] = specials[k];
        memset(packed, 0xAA, sizeof packed);
        tgemm_mxfp4_quantize_row_ref(v, 32, packed, &scale, mode);
        CHECK(scale == 0xFF, "%s: special %g at %d: scale %u", mode_name(mode), specials[k],
              pos, scale);
        for (int j = 0; j < 16; j++)
          CHECK(packed[j] == 0, "%s: special %g block byte %d = %u", mode_name(mode),
                specials[k], j, packed[j]);
      }
    }

    /* subnormal block: s = -127, elements multiplied by 2^127 exactly */
    for (int i = 0; i < 32; i++) v[i] = 0.0f;
    v[0] = 0x1p-128f;   /* 0.5 -> 1 */
    v[1] = -0x1.8p-127f; /* -1.5 -> 11 */
    v[2] = 0x1p-129f;   /* 0.25 tie -> 0 */
    v[3] = 0x1.8p-128f; /* 0.75 tie -> 1.0 (2) */
    v[4] = -0x1p-149f;  /* tiny -> -0 (8) */
    v[5] = 0x1.fffffcp-127f; /* 1.99999976 -> 2 (4) */
    v[6] = 0x1.4p-127f; /* 1.25 tie -> 1 (2) */
    uint8_t want_sub[7] = {1, 11, 0, 2, 8, 4, 2};
    tgemm_mxfp4_quantize_row_ref(v, 32, packed, &scale, mode);
    CHECK(scale == 0, "%s: subnormal block scale %u", mode_name(mode), scale);
    for (int i = 0; i < 7; i++)
      CHECK(code_at(packed, i) == want_sub[i], "%s: subnormal element %d (%a) code %u, want %u",
            mode_name(mode), i, v[i], code_at(packed, i), want_sub[i]);

    /* near FLT_MAX: no overflow, codes saturate correctly */
    for (int i = 0; i < 32; i++) v[i] = 0.0f;
    v[0] = FLT_MAX;
    v[1] = -FLT_MAX;
    v[2] = 0x1p+125f;
    tgemm_mxfp4_quantize_row_ref(v, 32, packed, &scale, mode);
    /* floor s = 125: FLT_MAX/2^125 ~ 8 -> 6 (7); 2^125 -> 1 (2)
     * even/rceil s = 126: ~4 -> 4 (6) ; 2^125 -> 0.5 (1) */
    int floor_mode = mode == TGEMM_SCALE_FLOOR;
    CHECK(scale == (floor_mode ? 252 : 253), "%s: FLT_MAX block scale %u", mode_name(mode),
          scale);
    CHECK(code_at(packed, 0) == (floor_mode ? 7 : 6), "%s: FLT_MAX code %u", mode_name(mode),
          code_at(packed, 0));
    CHECK(code_at(packed, 1) == (floor_mode ? 15 : 14), "%s: -FLT_MAX code %u", mode_name(mode),
          code_at(packed, 1));
    CHECK(code_at(packed, 2) == (floor_mode ? 2 : 1), "%s: 2^125 code %u", mode_name(mode),
          code_at(packed, 2));
  }
}

/* Widths that are not multiples of 32 (or of 2): padding codes are 0, the
 * lone last element sits in a low nibble, nothing past the row is written,
 * and the bytes match the oracle. */
static void check_widths(void) {
  const int64_t widths[] = {1, 2, 3, 31, 32, 33, 63, 64, 65, 100, 7167, 7168};
  for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
    int64_t n = widths[w], n_blocks = (n + 31) / 32;
    float *src = malloc((size_t)n * sizeof(float));
    uint8_t *packed = malloc((size_t)n_blocks * 16 + 8);
    uint8_t *scales = malloc((size_t)n_blocks + 8);
    uint8_t *want_packed = malloc((size_t)n_blocks * 16);
    uint8_t *want_scales = malloc((size_t)n_blocks);
    for (int64_t i = 0; i < n; i++) src[i] = test_rand_normal() * 3.0f;
    for (int m = 0; m < 3; m++) {
      memset(packed, 0xAA, (size_t)n_blocks * 16 + 8);
      memset(scales, 0xAA, (size_t)n_blocks + 8);
      tgemm_mxfp4_quantize_row_ref(src, n, packed, scales, all_modes[m]);
      oracle_quantize_row(src, n, want_packed, want_scales, all_modes[m]);
      CHECK(memcmp(packed, want_packed, (size_t)n_blocks * 16) == 0,
            "%s width %lld: packed bytes differ from the oracle", mode_name(all_modes[m]),
            (long long)n);
      CHECK(memcmp(scales, want_scales, (size_t)n_blocks) == 0,
            "%s width %lld: scales differ from the oracle", mode_name(all_modes[m]),
            (long long)n);
      for (int64_t i = n; i < n_blocks * 32; i++)
        CHECK(code_at(packed, (int)i) == 0, "width %lld: pad element %lld code %u",
              (long long)n, (long long)i, code_at(packed, (int)i));
      for (int j = 0; j < 8; j++) {
        CHECK(packed[n_blocks * 16 + j] == 0xAA, "width %lld: wrote past packed row",
              (long long)n);
        CHECK(scales[n_blocks + j] == 0xAA, "width %lld: wrote past scale row", (long long)n);
      }
    }
    free(src);
    free(packed);
    free(scales);
    free(want_packed);
    free(want_scales);
  }
}

/* ------------------------------------------------------- random nasty blocks */


static void random_block(float *v, int kind) {
  int e = -150 + (int)(test_rand_u64() % 280); /* -150 .. 129 */
  switch (kind) {
    case 0: /* any exponent, any mantissa, including subnormals */
      for (int i = 0; i < 32; i++) v[i] = test_random_bits_float(0, 254);
      break;
    case 1: /* clustered exponents: values near each other and the grid */
      for (int i = 0; i < 32; i++) {
        int ee = e - (int)(test_rand_u64() % 8);
        v[i] = ldexpf((float)(1.0 + test_rand_unit()), ee < -149 ? -149 : ee > 127 ? 127 : ee);
        if (test_rand_u64() & 1) v[i] = -v[i];
      }
      break;
    case 2: /* exact midpoints and grid points of one power of two */
      if (e > 125) e = 125;
      for (int i = 0; i < 32; i++) v[i] = test_random_grid_float(e - (int)(test_rand_u64() % 3));
      break;
    case 3: { /* amax significand at or next to 1.5 / 1.75 */
      static const float sig[] = {0x1.7ffffep+0f, 1.5f, 0x1.800002p+0f, 0x1.bffffep+0f,
                                  1.75f, 0x1.c00002p+0f, 0x1.fffffep+0f, 1.0f};
      if (e > 127) e = 127;
      for (int i = 0; i < 32; i++) v[i] = test_random_grid_float(e - 1 - (int)(test_rand_u64() % 4));
      v[test_rand_u64() % 32] = ldexpf(sig[test_rand_u64() % 8], e) * ((test_rand_u64() & 1) ? -1.0f : 1.0f);
      break;
    }
    case 4: /* f32 subnormals and tiny normals */
      for (int i = 0; i < 32; i++) v[i] = test_random_bits_float(0, (int)(test_rand_u64() % 4));
      break;
    case 5: /* huge values near FLT_MAX */
      for (int i = 0; i < 32; i++) v[i] = test_random_bits_float(250, 254);
      break;
    case 6: /* mostly zeros of both signs, a few other values */
      for (int i = 0; i < 32; i++) v[i] = (test_rand_u64() & 1) ? -0.0f : 0.0f;
      for (int k = (int)(test_rand_u64() % 3); k > 0; k--)
        v[test_rand_u64() % 32] = test_random_bits_float(0, 254);
      break;
    default: /* normal data with the occasional NaN / Inf */
      for (int i = 0; i < 32; i++) v[i] = test_rand_normal();
      break;
  }
  if (test_rand_u64() % 50 == 0) {
    static const float specials[3] = {NAN, INFINITY, -INFINITY};
    v[test_rand_u64() % 32] = specials[test_rand_u64() % 3];
  }
}

static void check_random_blocks(void) {
  enum { N_BLOCKS = 100000, BATCH = 64 };
  float v[BATCH * 32];
  uint8_t packed[BATCH * 16], scales[BATCH], want_packed[BATCH * 16], want_scales[BATCH];
  int reported = 0;
  for (int batch = 0; batch < N_BLOCKS / BATCH; batch++) {
    for (int b = 0; b < BATCH; b++) random_block(v + 32 * b, (int)(test_rand_u64() % 8));
    for (int m = 0; m < 3; m++) {
      tgemm_mxfp4_quantize_row_ref(v, BATCH * 32, packed, scales, all_modes[m]);
      oracle_quantize_row(v, BATCH * 32, want_packed, want_scales, all_modes[m]);
      for (int b = 0; b < BATCH && reported < 10; b++) {
        int ok = scales[b] == want_scales[b] &&
                 memcmp(packed + 16 * b, want_packed + 16 * b, 16) == 0;
        if (!ok) {
          reported++;
          CHECK(ok, "%s: block differs from the oracle: scale %u vs %u", mode_name(all_modes[m]),
                scales[b], want_scales[b]);
          for (int i = 0; i < 32; i++)
            if (code_at(packed + 16 * b, i) != code_at(want_packed + 16 * b, i))
              fprintf(stderr, "  element %d = %a: code %u, oracle %u\n", i, v[32 * b + i],
                      code_at(packed + 16 * b, i), code_at(want_packed + 16 * b, i));
        }
      }
    }
  }
}

int main(void) {
  test_seed("test_mxfp4_scale_modes");
  check_scale_table();
  check_block_codes();
  check_special_blocks();
  check_widths();
  check_random_blocks();
  return test_finish("test_mxfp4_scale_modes");
}
