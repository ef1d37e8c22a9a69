/* tgemm_linear inside a CUDA graph: calls on several routes (library,
 * reference, skinny, W4A16, W4A4, and a library call whose shape is first
 * seen during capture) are captured on the context's stream in global
 * capture mode, which rejects any synchronizing or allocating call.
 * Capture must not execute anything; two replays must give results
 * bit-identical to an eager run, and the eager results must be right.
 *
 * Then chains, where each call's output is the next call's input: the
 * decode kernels start before the kernel ahead of them has finished
 * (programmatic dependent launch), so back to back, eagerly and replayed
 * from a graph, every link must equal a run that waits for each call.
 * Exit 77 without a GPU. */
#include "test_util.h"

#ifdef TGEMM_HAVE_CUDA

#include <cuda_runtime_api.h>

#include "core/internal.h"

#define MAX_CALLS 8

typedef struct call {
  const char *label;
  tgemm_route route;
  int64_t m;
  tgemm_dtype y_dtype;
  bool bias;
  void *y_dev;
  size_t y_bytes;
  void *eager;  /* host copy of the eager result */
  void *poison; /* host NaN pattern */
  double tol;   /* against its double reference */
} call;

static tgemm_ctx *ctx;
static cudaStream_t stream;
static tgemm_weight *weight;
static tgemm_matrix x_all, bias_bf16, bias_f32; /* x_all: the M=300 activations */

#define CUDA_OK(expr)                                                                   \
  do {                                                                                  \
    cudaError_t e_ = (expr);                                                            \
    CHECK(e_ == cudaSuccess, "%s: %s (%s)", #expr, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
  } while (0)

static void *upload(const void *host, size_t bytes) {
  void *dev = NULL;
  CHECK_OK(tgemm_malloc(ctx, bytes, &dev));
  if (dev) CHECK_OK(tgemm_memcpy(ctx, dev, host, bytes, TGEMM_COPY_HOST_TO_DEVICE));
  return dev;
}

/* Issue every call on the context's stream (captured or not); the first
 * M rows of x_all are the activations.  The bias has y's dtype. */
static void issue_all(const call *calls, int n_calls) {
  for (int c = 0; c < n_calls; c++) {
    const call *cl = &calls[c];
    if (!cl->y_dev) continue;
    tgemm_matrix x = x_all;
    x.rows = cl->m;
    tgemm_matrix y = tgemm_matrix_dense(cl->y_dev, cl->y_dtype, cl->m, weight->n, TGEMM_DEVICE);
    const tgemm_matrix *b = !cl->bias ? NULL : cl->y_dtype == TGEMM_BF16 ? &bias_bf16 : &bias_f32;
    tgemm_linear_options lo;
    tgemm_linear_options_default(&lo);
    lo.route = cl->route;
    tgemm_status s = tgemm_linear(ctx, &x, weight, b, &y, &lo, NULL);
    CHECK(s == TGEMM_OK, "%s: %s", cl->label, tgemm_ctx_last_error(ctx));
  }
}

#define CHAIN_LINKS 6

/* A chain of CHAIN_LINKS calls on `route` through the square weight sq:
 * buf[i + 1] = buf[i] · sqᵀ, M tokens, bf16 throughout. */
static void issue_chain(tgemm_weight *sq, tgemm_route route, const char *kernel, int64_t m,
                        void *const *buf, bool sync_each) {
  for (int i = 0; i < CHAIN_LINKS; i++) {
    tgemm_matrix x = tgemm_matrix_dense(buf[i], TGEMM_BF16, m, sq->k, TGEMM_DEVICE);
    tgemm_matrix y = tgemm_matrix_dense(buf[i + 1], TGEMM_BF16, m, sq->n, TGEMM_DEVICE);
    tgemm_linear_options lo;
    tgemm_linear_options_default(&lo);
    lo.route = route;
    lo.kernel = kernel;
    tgemm_status s = tgemm_linear(ctx, &x, sq, NULL, &y, &lo, NULL);
    CHECK(s == TGEMM_OK, "chain link %d: %s", i, tgemm_ctx_last_error(ctx));
    if (sync_each) CUDA_OK(cudaStreamSynchronize(stream));
  }
}

/* ref[m, n] = x[m, k] · w[n, k]ᵀ in double, from bf16 operands. */
static void host_product(const uint16_t *x, const uint16_t *w, int64_t m, int64_t n, int64_t k,
                         double *ref) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      for (int64_t q = 0; q < k; q++)
        acc += (double)tgemm_bf16_to_f32(x[i * k + q]) * tgemm_bf16_to_f32(w[j * k + q]);
      ref[i * n + j] = acc;
    }
}

/* Poisons links 1.. of the chain. */
static void poison_chain(void *const *buf, const void *poison, size_t bytes) {
  for (int i = 1; i <= CHAIN_LINKS; i++)
    CHECK_OK(tgemm_memcpy(ctx, buf[i], poison, bytes, TGEMM_COPY_HOST_TO_DEVICE));
}

/* Every link of the chain equals `want` (CHAIN_LINKS buffers of `bytes`). */
static void check_chain(void *const *buf, const unsigned char *want, size_t bytes, void *got,
                        const char *label, const char *how) {
  for (int i = 1; i <= CHAIN_LINKS; i++) {
    CHECK_OK(tgemm_memcpy(ctx, got, buf[i], bytes, TGEMM_COPY_DEVICE_TO_HOST));
    CHECK(memcmp(got, want + (size_t)(i - 1) * bytes, bytes) == 0,
          "%s: link %d %s differs from the run that waits for each call", label, i, how);
  }
}

/* Chains on the decode routes, with the built-in kernel and its twin that
 * lets the next kernel launch at the other place (the start, or after the
 * main loop: "_tl"): one waiting for each call (the results to match,
 * checked against a host reference of its own links), then back to back
 * and replayed from a graph, into poisoned links. */
static void test_chains(void) {
  const int64_t n = 1000; /* square: each output is the next input */
  uint16_t *w_host = malloc(sizeof(uint16_t) * (size_t)(n * n));
  test_fill_normal(w_host, TGEMM_BF16, (size_t)(n * n), 1.0f / 32); /* keeps |y| near |x| */
  void *w_dev = upload(w_host, sizeof(uint16_t) * (size_t)(n * n));
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, TGEMM_BF16, n, n, TGEMM_DEVICE);
  tgemm_weight_options wopt = {TGEMM_WEIGHT_MXFP4, TGEMM_SCALE_EVEN};
  tgemm_weight *sq = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, &wopt, &sq));
  const struct {
    const char *label;
    tgemm_route route;
    int64_t m;
  } chains[] = {{"skinny chain M=1", TGEMM_ROUTE_SKINNY, 1},
                {"skinny chain M=16", TGEMM_ROUTE_SKINNY, 16},
                {"w4a16 chain M=3", TGEMM_ROUTE_W4A16, 3},
                {"w4a16 chain M=16", TGEMM_ROUTE_W4A16, 16}};
  const int64_t m_max = 16;
  const size_t max_bytes = sizeof(uint16_t) * (size_t)(m_max * n);
  uint16_t *x_host = malloc(max_bytes);
  void *poison = malloc(max_bytes), *got = malloc(max_bytes);
  unsigned char *want = malloc(max_bytes * CHAIN_LINKS);
  test_poison(poison, TGEMM_BF16, (size_t)(m_max * n));
  void *buf[CHAIN_LINKS + 1] = {0};
  for (int i = 0; i <= CHAIN_LINKS; i++) CHECK_OK(tgemm_malloc(ctx, max_bytes, &buf[i]));
  for (size_t v = 0; sq && buf[CHAIN_LINKS] && v < 2 * sizeof chains / sizeof chains[0]; v++) {
    const size_t c = v / 2;
    const int64_t m = chains[c].m;
    const size_t bytes = sizeof(uint16_t) * (size_t)(m * n);
    tgemm__shape shape = {m, n, n, TGEMM_BF16, TGEMM_BF16, false};
    if (!ctx->backend->supports(ctx, &shape, chains[c].route)) {
      printf("NOTE: %s: route not available in this build or shape: left out\n", chains[c].label);
      continue;
    }
    tgemm__kernel builtin;
    CHECK_OK(ctx->backend->default_kernel(ctx, &shape, chains[c].route, &builtin));
    /* the twin: the same name with "_tl" added or removed */
    char kernel[sizeof builtin.name + 8], label[160];
    const size_t len = strlen(builtin.name);
    const bool tl = len > 3 && strcmp(builtin.name + len - 3, "_tl") == 0;
    snprintf(kernel, sizeof kernel, "%.*s%s", (int)(v % 2 && tl ? len - 3 : len), builtin.name,
             v % 2 && !tl ? "_tl" : "");
    snprintf(label, sizeof label, "%s %s", chains[c].label, kernel);
    test_fill_normal(x_host, TGEMM_BF16, (size_t)(m * n), 1.0f);
    CHECK_OK(tgemm_memcpy(ctx, buf[0], x_host, bytes, TGEMM_COPY_HOST_TO_DEVICE));

    /* 1. Waiting for each call; each link against a host product of the
     *    link before (the MXFP4 route loosely: test_cuda_kernels checks
     *    its exactness). */
    poison_chain(buf, poison, bytes);
    issue_chain(sq, chains[c].route, kernel, m, buf, true);
    const double tol = chains[c].route == TGEMM_ROUTE_W4A16 ? 0.3 : 1e-2;
    for (int i = 1; i <= CHAIN_LINKS; i++) {
      const uint16_t *in = i == 1 ? x_host : (const uint16_t *)(want + (size_t)(i - 2) * bytes);
      CHECK_OK(tgemm_memcpy(ctx, want + (size_t)(i - 1) * bytes, buf[i], bytes,
                            TGEMM_COPY_DEVICE_TO_HOST));
      double *r = malloc(sizeof(double) * (size_t)(m * n));
      host_product(in, w_host, m, n, n, r);
      double err = test_rel_error(want + (size_t)(i - 1) * bytes, TGEMM_BF16, m, n, n, r);
      CHECK(err <= tol, "%s: link %d rel error %.3g > %.0e", label, i, err, tol);
      free(r);
    }

    /* 2. Back to back on the stream, then 3. replayed from a graph. */
    const int failures_before = test_failures;
    poison_chain(buf, poison, bytes);
    issue_chain(sq, chains[c].route, kernel, m, buf, false);
    CUDA_OK(cudaStreamSynchronize(stream));
    check_chain(buf, want, bytes, got, label, "back to back");
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    issue_chain(sq, chains[c].route, kernel, m, buf, false);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    if (graph) CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; exec && rep < 2; rep++) {
      poison_chain(buf, poison, bytes);
      CUDA_OK(cudaGraphLaunch(exec, stream));
      CUDA_OK(cudaStreamSynchronize(stream));
      check_chain(buf, want, bytes, got, label, rep ? "in replay 2" : "in replay 1");
    }
    if (test_failures == failures_before)
      printf("%-60s %d links: back to back and replayed equal the waiting run\n", label,
             CHAIN_LINKS);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
  for (int i = 0; i <= CHAIN_LINKS; i++) tgemm_free(ctx, buf[i]);
  tgemm_weight_free(sq);
  tgemm_free(ctx, w_dev);
  free(w_host);
  free(x_host);
  free(poison);
  free(got);
  free(want);
}

int main(void) {
  test_seed("test_cuda_graph");
  int devices = 0;
  cudaError_t derr = cudaGetDeviceCount(&devices);
  if (derr != cudaSuccess || devices < 1) {
    printf("test_cuda_graph: SKIP: no CUDA device: cudaGetDeviceCount returned %s (%d devices)\n",
           cudaGetErrorName(derr), devices);
    return TEST_SKIP;
  }
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CUDA;
  o.tuned = 0;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  /* a GPU was found above, so a context that cannot start (no cuBLASLt,
   * a broken driver) is a failure, not a skip; the CHECK below reports it */
  CHECK(st == TGEMM_OK, "tgemm_ctx_create(cuda): %s", tgemm_ctx_create_error());
  if (st != TGEMM_OK) return test_finish("test_cuda_graph");
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CHECK_OK(tgemm_ctx_set_stream(ctx, stream));

  /* One weight (dense + MXFP4), two activations: M=8 (decode routes) and
   * M=300 (a shape first met inside the capture). */
  const int64_t n = 1000, k = 1537, m_small = 8, m_big = 300;
  uint16_t *w_host = malloc(sizeof(uint16_t) * (size_t)(n * k));
  uint16_t *x_host = malloc(sizeof(uint16_t) * (size_t)(m_big * k));
  uint16_t *b_host = malloc(sizeof(uint16_t) * (size_t)n);
  float *b32_host = malloc(sizeof(float) * (size_t)n);
  test_fill_normal(w_host, TGEMM_BF16, (size_t)(n * k), 1.0f);
  test_fill_normal(x_host, TGEMM_BF16, (size_t)(m_big * k), 1.0f);
  test_fill_normal(b_host, TGEMM_BF16, (size_t)n, 1.0f);
  for (int64_t j = 0; j < n; j++) b32_host[j] = tgemm_bf16_to_f32(b_host[j]);
  void *w_dev = upload(w_host, sizeof(uint16_t) * (size_t)(n * k));
  void *x_dev = upload(x_host, sizeof(uint16_t) * (size_t)(m_big * k));
  void *b_dev = upload(b_host, sizeof(uint16_t) * (size_t)n);
  void *b32_dev = upload(b32_host, sizeof(float) * (size_t)n);
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, TGEMM_BF16, n, k, TGEMM_DEVICE);
  x_all = tgemm_matrix_dense(x_dev, TGEMM_BF16, m_big, k, TGEMM_DEVICE);
  bias_bf16 = tgemm_matrix_dense(b_dev, TGEMM_BF16, 1, n, TGEMM_DEVICE);
  bias_f32 = tgemm_matrix_dense(b32_dev, TGEMM_F32, 1, n, TGEMM_DEVICE);
  tgemm_weight_options wopt = {TGEMM_WEIGHT_MXFP4, TGEMM_SCALE_EVEN};
  st = tgemm_weight_create(ctx, &wm, &wopt, &weight);
  CHECK(st == TGEMM_OK, "MXFP4 weight on the GPU: %s", tgemm_ctx_last_error(ctx));
  if (!weight) return test_finish("test_cuda_graph");

  /* Dense double reference for both M (MXFP4 routes are checked loosely
   * here: their exactness is test_cuda_kernels' job). */
  double *ref = malloc(sizeof(double) * (size_t)(m_big * n));
  host_product(x_host, w_host, m_big, n, k, ref);

  call calls[MAX_CALLS] = {
      {"library M=8", TGEMM_ROUTE_LIBRARY, m_small, TGEMM_BF16, true, 0, 0, 0, 0, 1e-2},
      {"reference M=8", TGEMM_ROUTE_REFERENCE, m_small, TGEMM_F32, false, 0, 0, 0, 0, 1e-5},
      {"skinny M=8", TGEMM_ROUTE_SKINNY, m_small, TGEMM_BF16, true, 0, 0, 0, 0, 1e-2},
      {"w4a16 M=8", TGEMM_ROUTE_W4A16, m_small, TGEMM_F32, true, 0, 0, 0, 0, 0.3},
      {"w4a4 M=8", TGEMM_ROUTE_W4A4, m_small, TGEMM_BF16, false, 0, 0, 0, 0, 0.4},
      {"library M=300 (first seen in capture)", TGEMM_ROUTE_LIBRARY, m_big, TGEMM_F32, false, 0,
       0, 0, 0, 1e-5},
      {"w4a4 M=300", TGEMM_ROUTE_W4A4, m_big, TGEMM_F32, true, 0, 0, 0, 0, 0.4},
  };
  int n_calls = 7;
  for (int c = 0; c < n_calls; c++) {
    call *cl = &calls[c];
    tgemm__shape shape = {cl->m, n, k, TGEMM_BF16, cl->y_dtype, cl->bias};
    bool mx = cl->route == TGEMM_ROUTE_W4A16 || cl->route == TGEMM_ROUTE_W4A4;
    if ((mx && !weight->has_mxfp4) || !ctx->backend->supports(ctx, &shape, cl->route)) {
      printf("NOTE: %s: route not available in this build or shape: left out\n", cl->label);
      cl->route = TGEMM_ROUTE_AUTO; /* marks it skipped */
      continue;
    }
    cl->y_bytes = (size_t)(cl->m * n) * tgemm_dtype_size(cl->y_dtype);
    CHECK_OK(tgemm_malloc(ctx, cl->y_bytes, &cl->y_dev));
    cl->eager = malloc(cl->y_bytes);
    cl->poison = malloc(cl->y_bytes);
    test_poison(cl->poison, cl->y_dtype, (size_t)(cl->m * n));
  }

  for (int c = 0; c < n_calls; c++)
    if (calls[c].y_dev)
      CHECK_OK(tgemm_memcpy(ctx, calls[c].y_dev, calls[c].poison, calls[c].y_bytes,
                            TGEMM_COPY_HOST_TO_DEVICE));

  /* 1. Capture first: shapes seen for the first time build their cuBLASLt
   *    descriptors during capture. */
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  issue_all(calls, n_calls);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  if (!graph) return test_finish("test_cuda_graph");
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  size_t nodes = 0;
  CUDA_OK(cudaGraphGetNodes(graph, NULL, &nodes));
  printf("captured %zu graph nodes\n", nodes);

  /* Capture ran nothing: outputs still hold the poison. */
  for (int c = 0; c < n_calls; c++) {
    call *cl = &calls[c];
    if (!cl->y_dev) continue;
    CHECK_OK(tgemm_memcpy(ctx, cl->eager, cl->y_dev, cl->y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
    CHECK(memcmp(cl->eager, cl->poison, cl->y_bytes) == 0, "%s: capture wrote the output",
          cl->label);
  }

  /* 2. Eager run: the results to match, checked against the reference. */
  issue_all(calls, n_calls);
  for (int c = 0; c < n_calls; c++) {
    call *cl = &calls[c];
    if (!cl->y_dev) continue;
    CHECK_OK(tgemm_memcpy(ctx, cl->eager, cl->y_dev, cl->y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
    double *r = malloc(sizeof(double) * (size_t)(cl->m * n));
    for (int64_t i = 0; i < cl->m; i++)
      for (int64_t j = 0; j < n; j++)
        r[i * n + j] = ref[i * n + j] + (cl->bias ? b32_host[j] : 0.0);
    double err = test_rel_error(cl->eager, cl->y_dtype, cl->m, n, n, r);
    printf("%-40s eager rel error %.3g (bound %.0e)\n", cl->label, err, cl->tol);
    CHECK(err <= cl->tol, "%s: eager rel error %.3g > %.0e", cl->label, err, cl->tol);
    free(r);
  }

  /* 3. Two replays, each into poisoned outputs: bit-identical to eager. */
  void *got = malloc(sizeof(float) * (size_t)(m_big * n));
  for (int rep = 0; rep < 2; rep++) {
    for (int c = 0; c < n_calls; c++)
      if (calls[c].y_dev)
        CHECK_OK(tgemm_memcpy(ctx, calls[c].y_dev, calls[c].poison, calls[c].y_bytes,
                              TGEMM_COPY_HOST_TO_DEVICE));
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    for (int c = 0; c < n_calls; c++) {
      call *cl = &calls[c];
      if (!cl->y_dev) continue;
      CHECK_OK(tgemm_memcpy(ctx, got, cl->y_dev, cl->y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
      CHECK(memcmp(got, cl->eager, cl->y_bytes) == 0, "%s: replay %d differs from eager",
            cl->label, rep + 1);
    }
  }

  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  test_chains();
  for (int c = 0; c < n_calls; c++) {
    tgemm_free(ctx, calls[c].y_dev);
    free(calls[c].eager);
    free(calls[c].poison);
  }
  tgemm_weight_free(weight);
  tgemm_free(ctx, w_dev);
  tgemm_free(ctx, x_dev);
  tgemm_free(ctx, b_dev);
  tgemm_free(ctx, b32_dev);
  CHECK_OK(tgemm_ctx_set_stream(ctx, NULL));
  tgemm_ctx_free(ctx);
  cudaStreamDestroy(stream);
  free(got);
  free(ref);
  free(w_host);
  free(x_host);
  free(b_host);
  free(b32_host);
  return test_finish("test_cuda_graph");
}

#else /* !TGEMM_HAVE_CUDA */

int main(void) {
  printf("test_cuda_graph: SKIP: built without CUDA (configure with -DTGEMM_CUDA=ON)\n");
  return TEST_SKIP;
}

#endif
