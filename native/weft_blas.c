/*
 * weft_blas: a small N-API addon over a CPU BLAS for weft's native matrix products
 * (src/runtime/blas.ts is its only user). Built at `npm ci` by scripts/build_blas.mjs when a
 * compiler and a library's headers exist: OpenBLAS (cblas.h, -lopenblas) and, where present,
 * oneDNN (dnnl.h, -ldnnl); WEFT_OPENBLAS / WEFT_DNNL say which were compiled in.
 *
 * gemm(lib, a, b, c, batch, m, n, k, transA, transB, strideA, strideB, strideC, beta, threads) computes, for
 * i < batch, C_i = op(A_i) op(B_i) + beta C_i, row-major float32, with A_i = a + i strideA (a
 * stride of 0 broadcasts one matrix over the batch), op(X) = X^T where trans is set. It runs on
 * the calling thread, synchronously: a rank's JavaScript thread waits on its products exactly as
 * it waits on an onnxruntime run, on `threads` threads (OpenBLAS's pool; oneDNN's OpenMP team, whose
 * size is per calling thread: every worker-thread rank sets its own). Arguments are checked (sizes against the arrays' lengths) and
 * a bad call throws naming the argument, so a wrong shape cannot write past an array.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#ifdef WEFT_OPENBLAS
#include <cblas.h>
extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);
#endif
#ifdef WEFT_DNNL
#include <dnnl.h>
#endif

enum { LIB_OPENBLAS = 0, LIB_DNNL = 1 };

#ifdef WEFT_DNNL
extern void omp_set_num_threads(int);
#endif
/* OpenBLAS's pool size is global; OpenMP's team size is the calling thread's. Set when it changes. */
static void set_library_threads(int n) {
#ifdef WEFT_OPENBLAS
  static int openblas_threads = 0;
  if (openblas_threads != n) { openblas_set_num_threads(n); openblas_threads = n; }
#endif
#ifdef WEFT_DNNL
  static __thread int omp_threads = 0;
  if (omp_threads != n) { omp_set_num_threads(n); omp_threads = n; }
#endif
}

static napi_value throw_error(napi_env env, const char *fmt, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, what);
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  return napi_get_value_int64(env, v, out) == napi_ok;
}

static float *get_f32(napi_env env, napi_value v, size_t *len) {
  napi_typedarray_type t;
  void *data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, &data, &ab, &off) != napi_ok || t != napi_float32_array) return NULL;
  return (float *)data;
}

static napi_value gemm(napi_env env, napi_callback_info info) {
  size_t argc = 15;
  napi_value argv[15];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 15) return throw_error(env, "weft_blas.gemm: %s", "expected 15 arguments");
  static const char *names[] = {"lib", "a", "b", "c", "batch", "m", "n", "k", "transA", "transB", "strideA", "strideB", "strideC", "beta"};
  int64_t lib, batch, m, n, k, ta, tb, sa, sb, sc;
  int64_t *ints[] = {&lib, NULL, NULL, NULL, &batch, &m, &n, &k, &ta, &tb, &sa, &sb, &sc};
  for (int i = 0; i < 13; i++) {
    if (ints[i] && !get_i64(env, argv[i], ints[i])) return throw_error(env, "weft_blas.gemm: %s must be an integer", names[i]);
  }
  double beta;
  if (napi_get_value_double(env, argv[13], &beta) != napi_ok) return throw_error(env, "weft_blas.gemm: %s must be a number", "beta");
  int64_t threads;
  if (!get_i64(env, argv[14], &threads) || threads < 1) return throw_error(env, "weft_blas.gemm: %s must be an integer >= 1", "threads");
  set_library_threads((int)threads);
  size_t la, lb, lc;
  float *a = get_f32(env, argv[1], &la), *b = get_f32(env, argv[2], &lb), *c = get_f32(env, argv[3], &lc);
  if (!a) return throw_error(env, "weft_blas.gemm: %s must be a Float32Array", "a");
  if (!b) return throw_error(env, "weft_blas.gemm: %s must be a Float32Array", "b");
  if (!c) return throw_error(env, "weft_blas.gemm: %s must be a Float32Array", "c");
  if (batch < 1 || m < 1 || n < 1 || k < 1 || sa < 0 || sb < 0 || sc < 0) return throw_error(env, "weft_blas.gemm: %s", "batch, m, n, k must be >= 1 and strides >= 0");
  if ((int64_t)la < (batch - 1) * sa + m * k) return throw_error(env, "weft_blas.gemm: %s is too short for batch x m x k", "a");
  if ((int64_t)lb < (batch - 1) * sb + k * n) return throw_error(env, "weft_blas.gemm: %s is too short for batch x k x n", "b");
  if ((int64_t)lc < (batch - 1) * sc + m * n) return throw_error(env, "weft_blas.gemm: %s is too short for batch x m x n", "c");
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  for (int64_t i = 0; i < batch; i++) {
    const float *ai = a + i * sa, *bi = b + i * sb;
    float *ci = c + i * sc;
    if (lib == LIB_OPENBLAS) {
#ifdef WEFT_OPENBLAS
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, ai, (int)lda, bi, (int)ldb, (float)beta, ci, (int)n);
#else
      return throw_error(env, "weft_blas.gemm: %s", "built without OpenBLAS");
#endif
    } else if (lib == LIB_DNNL) {
#ifdef WEFT_DNNL
      if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, ai, lda, bi, ldb, (float)beta, ci, n) != dnnl_success)
        return throw_error(env, "weft_blas.gemm: %s", "dnnl_sgemm failed");
#else
      return throw_error(env, "weft_blas.gemm: %s", "built without oneDNN");
#endif
    } else {
      return throw_error(env, "weft_blas.gemm: %s must be 0 (OpenBLAS) or 1 (oneDNN)", "lib");
    }
  }
  return NULL;
}


/* info(): which libraries were compiled in, and OpenBLAS's build string (its kernel target). */
static napi_value lib_info(napi_env env, napi_callback_info info) {
  napi_value o, v;
  napi_create_object(env, &o);
#ifdef WEFT_OPENBLAS
  napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "openblas", v);
#endif
#ifdef WEFT_DNNL
  const dnnl_version_t *ver = dnnl_version();
  char buf[64];
  snprintf(buf, sizeof buf, "%d.%d.%d %s", ver->major, ver->minor, ver->patch, ver->cpu_runtime == DNNL_RUNTIME_OMP ? "omp" : "seq");
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "dnnl", v);
#endif
  return o;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
    {"info", NULL, lib_info, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
