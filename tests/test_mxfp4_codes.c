/* E2M1 codes: the 16 decode values, exact round trips, ties to even at
 * every midpoint, saturation, the sign of zero; and E8M0 scale bytes. */
#include <float.h>

#include "mxfp4/mxfp4.h"
#include "test_util.h"

static const float magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

static void check_decode_table(void) {
  for (int code = 0; code < 16; code++) {
    float want = code < 8 ? magnitudes[code] : -magnitudes[code - 8];
    float got = tgemm__e2m1_value[code];
    CHECK(got == want, "code %d decodes to %g, expected %g", code, got, want);
    CHECK(!!signbit(got) == (code >= 8), "code %d: sign bit of %g", code, got);
  }
}

static void check_exact_round_trip(void) {
  for (int code = 0; code < 16; code++) {
    float v = tgemm__e2m1_value[code];
    uint8_t got = tgemm__e2m1_encode(v);
    CHECK(got == code, "encode(%g) = %u, expected %d", v, got, code);
  }
}

/* Each midpoint between neighbours goes to the neighbour with the even
 * code; one ulp either side goes to the nearer one. */
static void check_midpoints(void) {
  static const struct {
    float mid;
    uint8_t below, above, tie;
  } cases[] = {
      {0.25f, 0, 1, 0}, {0.75f, 1, 2, 2}, {1.25f, 2, 3, 2}, {1.75f, 3, 4, 4},
      {2.5f, 4, 5, 4},  {3.5f, 5, 6, 6},  {5.0f, 6, 7, 6},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int neg = 0; neg < 2; neg++) {
      float m = neg ? -cases[i].mid : cases[i].mid;
      uint8_t sign = neg ? 8 : 0;
      float inside = nextafterf(m, 0.0f);
      float outside = nextafterf(m, neg ? -INFINITY : INFINITY);
      uint8_t got_tie = tgemm__e2m1_encode(m);
      uint8_t got_in = tgemm__e2m1_encode(inside);
      uint8_t got_out = tgemm__e2m1_encode(outside);
      CHECK(got_tie == (cases[i].tie | sign), "tie %.9g -> %u, expected %u", m, got_tie,
            cases[i].tie | sign);
      CHECK(got_in == (cases[i].below | sign), "%.9g -> %u, expected %u", inside, got_in,
            cases[i].below | sign);
      CHECK(got_out == (cases[i].above | sign), "%.9g -> %u, expected %u", outside, got_out,
            cases[i].above | sign);
    }
  }
}

static void check_saturation(void) {
  const float big[] = {6.0f, nextafterf(6.0f, INFINITY), 6.5f, 7.0f, 8.0f, 100.0f,
                       1e30f, FLT_MAX};
  for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
    CHECK(tgemm__e2m1_encode(big[i]) == 7, "encode(%g) = %u, expected 7", big[i],
          tgemm__e2m1_encode(big[i]));
    CHECK(tgemm__e2m1_encode(-big[i]) == 15, "encode(%g) = %u, expected 15", -big[i],
          tgemm__e2m1_encode(-big[i]));
  }
}

static void check_zero_sign(void) {
  CHECK(tgemm__e2m1_encode(0.0f) == 0, "+0 -> %u", tgemm__e2m1_encode(0.0f));
  CHECK(tgemm__e2m1_encode(-0.0f) == 8, "-0 -> %u", tgemm__e2m1_encode(-0.0f));
  /* values that round to zero keep their sign */
  const float small[] = {1e-45f, 1e-30f, 0.1f, 0.2499999f, 0.25f};
  for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
    CHECK(tgemm__e2m1_encode(small[i]) == 0, "%g -> %u", small[i],
          tgemm__e2m1_encode(small[i]));
    CHECK(tgemm__e2m1_encode(-small[i]) == 8, "%g -> %u", -small[i],
          tgemm__e2m1_encode(-small[i]));
  }
}

/* Random values: the code is the nearest magnitude (checked in double),
 * with the even code on exact ties. */
static void check_random_nearest(void) {
  for (int t = 0; t < 200000; t++) {
    float v = (float)(test_rand_unit() * 14.0 - 7.0);
    if (t % 4 == 0) v = (float)((double)(test_rand_u64() % 29) * 0.25 - 3.5); /* on grid */
    uint8_t code = tgemm__e2m1_encode(v);
    double a = fabs((double)v) > 6.0 ? 6.0 : fabs((double)v);
    int best = 0;
    for (int k = 1; k < 8; k++) {
      double dk = fabs(a - magnitudes[k]), db = fabs(a - magnitudes[best]);
      if (dk < db || (dk == db && k % 2 == 0)) best = k;
    }
    int want = best | (signbit(v) ? 8 : 0);
    if (code != want) {
      CHECK(code == want, "encode(%.9g) = %u, expected %d", v, code, want);
      return;
    }
  }
}

static void check_e8m0(void) {
  CHECK(isnan(tgemm__e8m0_to_f32(0xFF)), "0xFF must decode to NaN");
  for (int byte = 0; byte < 255; byte++) {
    float got = tgemm__e8m0_to_f32((uint8_t)byte);
    double want = ldexp(1.0, byte - 127);
    CHECK((double)got == want, "byte %d -> %a, expected %a", byte, got, want);
  }
  CHECK(tgemm__e8m0_to_f32(0) == 0x1p-127f && tgemm__e8m0_to_f32(0) > 0,
        "byte 0 is the subnormal 2^-127");
}

int main(void) {
  test_seed("test_mxfp4_codes");
  check_decode_table();
  check_exact_round_trip();
  check_midpoints();
  check_saturation();
  check_zero_sign();
  check_random_nearest();
  check_e8m0();
  return test_finish("test_mxfp4_codes");
}
