/* tgemm tune: parse the shape list, make a context, run the tuner. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands_tune.h"
#include "core/internal.h"
#include "tune/preset.h"
#include "tune/tuner.h"

#define MAX_LIST 64

static void usage(FILE *f) {
  fprintf(f,
          "usage: tgemm tune (--shapes N,K[,M,...] ... | --preset NAME [--tp T] | --from-log FILE)\n"
          "                  -o TABLE.csv\n"
          "                  [--m 1,2,4,...] [--routes skinny,library,w4a16,w4a4]\n"
          "                  [--dtype bf16] [--out-dtype bf16] [--bias] [--backend auto|cpu|cuda]\n"
          "                  [--threads N] [--max-seconds S] [--reps N] [--flush MODE] [--graph]\n"
          "                  [--copies N] [--seed S] [-v]\n\n"
          "For every shape, runs every candidate kernel of every route, checks its error\n"
          "against a double reference (dense routes over 1e-2 are rejected as bugs), times\n"
          "it (median, cold weights) and writes the fastest per (shape, route) into TABLE\n"
          "(the route's built-in choice unless another candidate beats it by 3%%),\n"
          "merging with what is there (the faster row per key wins).  The table is saved\n"
          "after each shape; Ctrl-C finishes the current kernel, saves and exits 130.\n"
          "MXFP4 rows carry their error; the router uses them only within the caller's\n"
          "error budget.\n\n"
          "  --shapes N,K[,M...]  a layer; its own M list, else --m (repeatable)\n"
          "  --from-log FILE      the shapes a TGEMM_LOG_UNTUNED file recorded (M, N, K, bias,\n"
          "                       dtypes as logged)\n"
          "  --preset NAME        model layers (");
  for (const char *const *n = tgemm__preset_names(); *n; n++) fprintf(f, "%s%s", n == tgemm__preset_names() ? "" : ", ", *n);
  fprintf(f,
          "); --tp splits them (default 1)\n"
          "  --m LIST             token counts (default 1,2,4,...,8192)\n"
          "  --max-seconds S      time budget per kernel (default 1)\n"
          "  --reps N             timed repetitions per kernel at most (default 100)\n"
          "  --flush MODE         how the cache is emptied before each repetition: clean (default;\n"
          "                       read a buffer twice the cache), dirty (write one, as a memset\n"
          "                       does: the timed kernel then also writes those lines back) or\n"
          "                       none; --no-flush is none\n"
          "  --graph              time calls back to back replayed from a CUDA graph, as a served\n"
          "                       model's decode graph runs them (implies --flush none; GPU only).\n"
          "                       Its µs leave out launch costs: write them to a table of their own,\n"
          "                       since merged rows and routes are compared by µs\n"
          "  --copies N           weight copies rotated through (default: enough to exceed the cache)\n"
          "  --floors             measure copy bandwidth and GEMM rate first, and show each time\n"
          "                       as [fraction of its floor] (DESIGN.md section 6)\n");
}

typedef struct layer_arg {
  int64_t n, k;
  int64_t ms[MAX_LIST];
  int n_ms; /* 0: use --m */
} layer_arg;

static int parse_routes(const char *text, tgemm_route *out) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", text);
  int n = 0;
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    tgemm_route r;
    if (tgemm_route_parse(tok, &r) != TGEMM_OK || r == TGEMM_ROUTE_AUTO || n == TGEMM_ROUTE_COUNT) return -1;
    bool dup = false;
    for (int i = 0; i < n; i++) dup |= out[i] == r;
    if (!dup) out[n++] = r;
  }
  return n > 0 ? n : -1;
}

/* Shapes of an untuned log (src/route/untuned_log.h): "m,n,k,bias,dtype,
 * out_dtype,device,..." after a header.  Appends to *shapes; returns the
 * count added or -1 (with a message). */
static int load_untuned_log(const char *path, tgemm__shape **shapes, int *n_shapes) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "tgemm tune: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[1024];
  int added = 0, line_no = 0;
  while (fgets(line, sizeof line, f)) {
    line_no++;
    if (line_no == 1 && !strncmp(line, "m,n,k,", 6)) continue;
    long long m, n, k;
    int bias;
    char dt[16], odt[16];
    tgemm__shape s;
    if (sscanf(line, "%lld,%lld,%lld,%d,%15[^,],%15[^,\n]", &m, &n, &k, &bias, dt, odt) != 6 || m < 1 ||
        n < 1 || k < 1 || (bias != 0 && bias != 1) || tgemm_dtype_parse(dt, &s.dtype) != TGEMM_OK ||
        tgemm_dtype_parse(odt, &s.out_dtype) != TGEMM_OK) {
      fprintf(stderr, "tgemm tune: %s:%d: not an untuned-log line; skipped\n", path, line_no);
      continue;
    }
    s.m = m;
    s.n = n;
    s.k = k;
    s.has_bias = bias == 1;
    bool seen = false;
    for (int i = 0; i < *n_shapes && !seen; i++)
      seen = ((*shapes)[i].m == s.m && (*shapes)[i].n == s.n && (*shapes)[i].k == s.k &&
              (*shapes)[i].dtype == s.dtype && (*shapes)[i].out_dtype == s.out_dtype &&
              (*shapes)[i].has_bias == s.has_bias);
    if (seen) continue;
    tgemm__shape *grown = realloc(*shapes, (size_t)(*n_shapes + 1) * sizeof **shapes);
    if (!grown) {
      fclose(f);
      fprintf(stderr, "tgemm tune: out of memory\n");
      return -1;
    }
    *shapes = grown;
    (*shapes)[(*n_shapes)++] = s;
    added++;
  }
  fclose(f);
  return added;
}

int tgemm__cmd_tune(int argc, char **argv) {
  const char *out_path = NULL, *preset = NULL, *from_log = NULL;
  int tp = 1;
  layer_arg *layers = NULL;
  int n_layers = 0;
  const int64_t *std_ms;
  int64_t ms[MAX_LIST];
  int n_ms = tgemm__preset_m_list(&std_ms);
  memcpy(ms, std_ms, (size_t)n_ms * sizeof *ms);
  tgemm_route routes[TGEMM_ROUTE_COUNT];
  tgemm__tune_options topt;
  tgemm__tune_options_default(&topt);
  int n_routes = topt.n_routes;
  memcpy(routes, topt.routes, (size_t)n_routes * sizeof *routes);
  tgemm_dtype dtype = TGEMM_BF16, out_dtype = TGEMM_BF16;
  bool bias = false, floors = false, flush_given = false;
  tgemm_ctx_options copt;
  tgemm_ctx_options_default(&copt);
  copt.tuned = 0;          /* measure kernels, never route through an old table */
  copt.untuned_log = "";   /* and log nothing */
  int exit_code = 2;
  tgemm__shape *shapes = NULL;
  tgemm_ctx *ctx = NULL;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    if (cli_is_help(a)) {
      usage(stdout);
      exit_code = 0;
      goto out;
    } else if (!strcmp(a, "--shapes")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      int64_t vals[MAX_LIST + 2];
      int n = cli_parse_int_list(v, vals, MAX_LIST + 2);
      if (n < 2) {
        fprintf(stderr, "tgemm tune: --shapes wants N,K[,M,...] with positive integers, not '%s'\n", v);
        goto out;
      }
      layer_arg *grown = realloc(layers, (size_t)(n_layers + 1) * sizeof *layers);
      if (!grown) goto oom;
      layers = grown;
      layer_arg *l = &layers[n_layers++];
      l->n = vals[0];
      l->k = vals[1];
      l->n_ms = n - 2;
      memcpy(l->ms, vals + 2, (size_t)l->n_ms * sizeof *l->ms);
    } else if (!strcmp(a, "--from-log")) {
      if (!cli_take_value(argc, argv, &i, "tune", &from_log)) goto out;
    } else if (!strcmp(a, "--preset")) {
      if (!cli_take_value(argc, argv, &i, "tune", &preset)) goto out;
    } else if (!strcmp(a, "--tp")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      tp = atoi(v);
    } else if (!strcmp(a, "--m")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      if ((n_ms = cli_parse_int_list(v, ms, MAX_LIST)) < 1) {
        fprintf(stderr, "tgemm tune: --m wants positive integers, not '%s'\n", v);
        goto out;
      }
    } else if (!strcmp(a, "--routes")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      if ((n_routes = parse_routes(v, routes)) < 1) {
        fprintf(stderr, "tgemm tune: --routes wants names among reference, skinny, library, w4a16, w4a4, not '%s'\n", v);
        goto out;
      }
    } else if (!strcmp(a, "--dtype") || !strcmp(a, "--out-dtype")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      tgemm_dtype d;
      bool is_out = !strcmp(a, "--out-dtype");
      if (tgemm_dtype_parse(v, &d) != TGEMM_OK || d == TGEMM_MXFP4 || (is_out && d == TGEMM_F16)) {
        fprintf(stderr, "tgemm tune: %s %s is not supported (x: bf16, f16, f32; y: bf16, f32)\n", a, v);
        goto out;
      }
      *(is_out ? &out_dtype : &dtype) = d;
    } else if (!strcmp(a, "--bias")) {
      bias = true;
    } else if (!strcmp(a, "--backend")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      if (!cli_parse_backend(v, &copt.backend)) {
        fprintf(stderr, "tgemm tune: unknown backend '%s'\n", v);
        goto out;
      }
    } else if (!strcmp(a, "--threads")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      copt.n_threads = atoi(v);
    } else if (!strcmp(a, "--max-seconds")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      topt.timing.max_seconds = atof(v);
      if (!(topt.timing.max_seconds > 0)) {
        fprintf(stderr, "tgemm tune: --max-seconds wants a positive number\n");
        goto out;
      }
    } else if (!strcmp(a, "--reps")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      topt.timing.max_reps = atoi(v);
      if (topt.timing.max_reps < 1) {
        fprintf(stderr, "tgemm tune: --reps wants a positive number\n");
        goto out;
      }
    } else if (!strcmp(a, "--no-flush")) {
      topt.timing.flush = TGEMM__FLUSH_NONE;
      flush_given = true;
    } else if (!strcmp(a, "--graph")) {
      topt.timing.graph = true;
    } else if (!strcmp(a, "--flush")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      if (!tgemm__flush_mode_parse(v, &topt.timing.flush)) {
        fprintf(stderr, "tgemm tune: --flush wants clean, dirty or none, not '%s'\n", v);
        goto out;
      }
      flush_given = true;
    } else if (!strcmp(a, "--copies")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      topt.n_weight_copies = atoi(v);
    } else if (!strcmp(a, "--seed")) {
      if (!cli_take_value(argc, argv, &i, "tune", &v)) goto out;
      topt.seed = strtoull(v, NULL, 0);
    } else if (!strcmp(a, "--floors")) {
      floors = true;
    } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
      topt.verbose = true;
    } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
      if (!cli_take_value(argc, argv, &i, "tune", &out_path)) goto out;
    } else {
      fprintf(stderr, "tgemm tune: unknown option '%s' (try tgemm tune --help)\n", a);
      goto out;
    }
  }
  if (!out_path) {
    fprintf(stderr, "tgemm tune: -o TABLE.csv is required\n");
    goto out;
  }
  if (topt.timing.graph && flush_given && topt.timing.flush != TGEMM__FLUSH_NONE) {
    fprintf(stderr, "tgemm tune: --graph replays calls back to back; it cannot flush the cache between them "
                    "(--flush %s)\n", tgemm__flush_mode_name(topt.timing.flush));
    goto out;
  }
  if (topt.timing.graph) topt.timing.flush = TGEMM__FLUSH_NONE;
  if (preset) {
    tgemm__layer_shape pl[TGEMM__PRESET_MAX_LAYERS];
    int n = tgemm__preset_layers(preset, tp, pl);
    if (n < 0) {
      if (n == -1) fprintf(stderr, "tgemm tune: unknown preset '%s'\n", preset);
      else fprintf(stderr, "tgemm tune: --tp %d does not split the layers of %s\n", tp, preset);
      goto out;
    }
    layer_arg *grown = realloc(layers, (size_t)(n_layers + n) * sizeof *layers);
    if (!grown) goto oom;
    layers = grown;
    for (int j = 0; j < n; j++) {
      layers[n_layers].n = pl[j].n;
      layers[n_layers].k = pl[j].k;
      layers[n_layers].n_ms = 0;
      n_layers++;
    }
  }
  int n_shapes = 0;
  for (int j = 0; j < n_layers; j++) n_shapes += layers[j].n_ms ? layers[j].n_ms : n_ms;
  shapes = calloc((size_t)n_shapes + 1, sizeof *shapes);
  if (!shapes) goto oom;
  n_shapes = 0;
  for (int j = 0; j < n_layers; j++) {
    const int64_t *list = layers[j].n_ms ? layers[j].ms : ms;
    int count = layers[j].n_ms ? layers[j].n_ms : n_ms;
    for (int q = 0; q < count; q++)
      shapes[n_shapes++] = (tgemm__shape){list[q], layers[j].n, layers[j].k, dtype, out_dtype, bias};
  }

  if (from_log && load_untuned_log(from_log, &shapes, &n_shapes) < 0) goto out;
  if (n_shapes == 0) {
    fprintf(stderr, "tgemm tune: no shapes: give --shapes N,K[,M...], --preset NAME or --from-log FILE\n");
    goto out;
  }

  exit_code = 1;
  tgemm_status st = tgemm_ctx_create(&copt, &ctx);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm tune: %s: %s\n", tgemm_status_str(st), tgemm_ctx_create_error());
    goto out;
  }
  if (topt.timing.graph && !ctx->backend->graph_begin) {
    fprintf(stderr, "tgemm tune: --graph needs CUDA graphs; the %s backend has none\n", tgemm_ctx_backend_name(ctx));
    goto out;
  }
  printf("tgemm tune: %d shapes on %s (%s backend) -> %s\n", n_shapes, tgemm_ctx_device_name(ctx),
         tgemm_ctx_backend_name(ctx), out_path);
  printf("routes:");
  for (int r = 0; r < n_routes; r++) printf(" %s", tgemm_route_name(routes[r]));
  printf("; per kernel at most %d reps / %.3g s, cache flush %s%s\n", topt.timing.max_reps,
         topt.timing.max_seconds, tgemm__flush_mode_name(topt.timing.flush),
         topt.timing.graph ? ", calls replayed back to back from a CUDA graph" : "");
  if (floors) {
    st = tgemm__measure_ceilings(ctx, &topt.bandwidth_gbs, &topt.tflops);
    if (st != TGEMM_OK) {
      fprintf(stderr, "tgemm tune: measuring the ceilings: %s\n", tgemm_ctx_last_error(ctx));
      goto out;
    }
    printf("ceilings: copy %.0f GB/s (read + write), bf16 GEMM %.3g TFLOP/s; [x] = floor / time\n",
           topt.bandwidth_gbs, topt.tflops);
  }
  fflush(stdout);

  topt.shapes = shapes;
  topt.n_shapes = n_shapes;
  topt.routes = routes;
  topt.n_routes = n_routes;
  topt.out_path = out_path;
  topt.log = stdout;
  topt.stop = tgemm__tune_install_signal_handlers();
  tgemm__tune_summary sum;
  st = tgemm__tune(ctx, &topt, &sum);
  printf("tgemm tune: %d shapes, %d kernels timed, %d rejected, %d rows -> %s\n", sum.shapes_done,
         sum.kernels_timed, sum.kernels_rejected, sum.rows_written, out_path);
  if (st == TGEMM_INTERRUPTED) {
    fprintf(stderr, "tgemm tune: %s\n", tgemm_ctx_last_error(ctx));
    exit_code = 128 + (int)*topt.stop;
  } else if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm tune: %s: %s\n", tgemm_status_str(st), tgemm_ctx_last_error(ctx));
  } else {
    if (sum.kernels_rejected)
      fprintf(stderr, "tgemm tune: %d kernels rejected (see the REJECTED lines): a wrong result is a bug\n",
              sum.kernels_rejected);
    exit_code = 0;
  }
  goto out;
oom:
  fprintf(stderr, "tgemm tune: out of memory\n");
  exit_code = 1;
out:
  tgemm_ctx_free(ctx);
  free(shapes);
  free(layers);
  return exit_code;
}
