/* Presets as data.  DeepSeek-V3 attention projections (DESIGN.md §7):
 * hidden 7168, q_lora_rank 1536, kv_lora_rank 512, 128 heads of
 * (128 nope + 64 rope) for q and 128 nope + 128 v for kv. */
#include "tune/preset.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* How a layer splits under tensor parallelism. */
typedef enum { REPLICATED, SPLIT_N, SPLIT_K } split_kind;

typedef struct {
  const char *layer;
  int64_t n, k; /* at tp = 1 */
  split_kind split;
} preset_layer;

static const preset_layer deepseek_v3[] = {
    {"fused_qkv_a_proj", 2112, 7168, REPLICATED}, /* q_a 1536 + kv_a 576 */
    {"q_a_proj", 1536, 7168, REPLICATED},
    {"kv_a_proj_with_mqa", 576, 7168, REPLICATED}, /* kv_lora_rank 512 + rope 64 */
    {"q_b_proj", 24576, 1536, SPLIT_N},            /* 128 heads x 192 */
    {"kv_b_proj", 32768, 512, SPLIT_N},            /* 128 heads x (128 + 128) */
    {"o_proj", 7168, 16384, SPLIT_K},              /* row-parallel: 128 heads x 128 */
};

static const int64_t m_list[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};

static const char *const names[] = {"deepseek-v3", NULL};

_Static_assert(sizeof deepseek_v3 / sizeof deepseek_v3[0] <= TGEMM__PRESET_MAX_LAYERS,
               "preset larger than TGEMM__PRESET_MAX_LAYERS");

int tgemm__preset_layers(const char *name, int tp, tgemm__layer_shape *out) {
  if (!name || !out) return -1;
  if (strcasecmp(name, "deepseek-v3") != 0 && strcasecmp(name, "deepseek_v3") != 0 &&
      strcasecmp(name, "dsv3") != 0)
    return -1;
  if (tp < 1) return -2;
  int count = (int)(sizeof deepseek_v3 / sizeof deepseek_v3[0]);
  for (int i = 0; i < count; i++) {
    const preset_layer *l = &deepseek_v3[i];
    int64_t n = l->n, k = l->k;
    if (l->split == SPLIT_N) {
      if (n % tp) return -2;
      n /= tp;
    } else if (l->split == SPLIT_K) {
      if (k % tp) return -2;
      k /= tp;
    }
    out[i].layer = l->layer;
    out[i].n = n;
    out[i].k = k;
  }
  return count;
}

int tgemm__preset_m_list(const int64_t **out) {
  if (out) *out = m_list;
  return (int)(sizeof m_list / sizeof m_list[0]);
}

const char *const *tgemm__preset_names(void) { return names; }
