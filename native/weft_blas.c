/*
 * weft_blas: a small N-API addon over a CPU BLAS for weft's native matrix products
 * (src/runtime/blas.ts is its only user). Built at `npm ci` by scripts/build_blas.mjs when a
 * compiler and a library's headers exist: OpenBLAS (cblas.h, -lopenblas) and, where present,
 * oneDNN (dnnl.h, -ldnnl); WEFT_OPENBLAS / WEFT_DNNL say which were compiled in.
 *
 * gemm(lib, a, b, c, batch, m, n, k, transA, transB, strideA, strideB, strideC, beta, threads) computes, for
 * i < batch, C_i = op(A_i) op(B_i) + beta C_i, row-major float32, with A_i = a + i strideA (a
 * stride of 0 broadcasts one matrix over the batch), op(X) = X^T where trans is set. lib 2 is
 * oneDNN's matmul on bfloat16 operands: A and B are rounded to bfloat16 (to nearest even; exact
 * where they hold bfloat16 values, as bf16 mixed precision's products do), multiplied with float32
 * accumulation (AMX or AVX512-BF16 kernels where the CPU has them) into float32 C. It runs on
 * the calling thread, synchronously: a rank's JavaScript thread waits on its products exactly as
 * it waits on an onnxruntime run, on `threads` threads (OpenBLAS's pool; oneDNN's OpenMP team, whose
 * size is per calling thread: every worker-thread rank sets its own). Arguments are checked (sizes against the arrays' lengths) and
 * a bad call throws naming the argument, so a wrong shape cannot write past an array.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

enum { LIB_OPENBLAS = 0, LIB_DNNL = 1, LIB_DNNL_BF16 = 2 };

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


#ifdef WEFT_DNNL
/*
 * bfloat16 products (lib 2) through oneDNN's matmul primitive. A primitive is made once per
 * geometry and thread count and kept in a small per-thread cache (a rank is a thread; oneDNN fixes
 * its parallel split when the primitive is made); the operands are converted into per-thread
 * bfloat16 buffers that grow as needed.
 */
#define MM_CACHE 64
typedef struct { int64_t key[11]; dnnl_primitive_t p; dnnl_memory_t A, B, C; } mm_entry;
static __thread mm_entry mm_cache[MM_CACHE];
static __thread int mm_count = 0, mm_next = 0;
static __thread dnnl_engine_t mm_engine = NULL;
static __thread dnnl_stream_t mm_stream = NULL;
static __thread uint16_t *bf_a = NULL, *bf_b = NULL;
static __thread size_t bf_a_cap = 0, bf_b_cap = 0;

static int mm_init(void) {
  if (mm_engine) return 1;
  if (dnnl_engine_create(&mm_engine, dnnl_cpu, 0) != dnnl_success) { mm_engine = NULL; return 0; }
  if (dnnl_stream_create(&mm_stream, mm_engine, dnnl_stream_default_flags) != dnnl_success) {
    dnnl_engine_destroy(mm_engine); mm_engine = NULL; return 0;
  }
  return 1;
}

/* float32 -> bfloat16 bits, rounded to nearest even; NaNs stay NaN. */
static void to_bf16_scalar(const float *x, uint16_t *y, size_t n) {
  const uint32_t *u = (const uint32_t *)x;
  for (size_t i = 0; i < n; i++) {
    uint32_t v = u[i];
    uint32_t r = (v + 0x7fffu + ((v >> 16) & 1u)) >> 16;
    y[i] = (v & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((v >> 16) | 0x40u) : (uint16_t)r;
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 10
#include <immintrin.h>
#define WEFT_AVX512BF16 1
/* The same rounding in AVX512-BF16's conversion instruction (vcvtne2ps2bf16: nearest even, NaNs kept). */
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void to_bf16_avx512(const float *x, uint16_t *y, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512((void *)(y + i), (__m512i)v);
  }
  to_bf16_scalar(x + i, y + i, n - i);
}
#endif

/* Converts on `threads` threads (OpenMP), in chunks, with the CPU's instruction where it has one. */
static void to_bf16(const float *x, uint16_t *y, size_t n, int threads) {
#ifdef WEFT_AVX512BF16
  static int has = -1;
  if (has < 0) has = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
#endif
  const size_t chunk = 1 << 16;
  const long chunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && chunks > 1)
  for (long c = 0; c < chunks; c++) {
    size_t lo = (size_t)c * chunk, len = n - lo < chunk ? n - lo : chunk;
#ifdef WEFT_AVX512BF16
    if (has) { to_bf16_avx512(x + lo, y + lo, len); continue; }
#endif
    to_bf16_scalar(x + lo, y + lo, len);
  }
}

static uint16_t *grow(uint16_t **buf, size_t *cap, size_t n) {
  if (*cap < n) {
    uint16_t *nb = realloc(*buf, n * sizeof(uint16_t));
    if (!nb) return NULL;
    *buf = nb;
    *cap = n;
  }
  return *buf;
}

static void mm_free(mm_entry *e) {
  dnnl_memory_destroy(e->A); dnnl_memory_destroy(e->B); dnnl_memory_destroy(e->C);
  dnnl_primitive_destroy(e->p);
}

/* The cached primitive for a geometry (made on first use), or NULL with *why set. */
static mm_entry *mm_get(int64_t batch, int64_t m, int64_t n, int64_t k, int64_t ta, int64_t tb, int64_t sa, int64_t sb, int64_t sc, double beta, int threads, const char **why) {
  int64_t key[11] = {batch, m, n, k, ta, tb, sa, sb, sc, beta != 0, threads};
  for (int i = 0; i < mm_count; i++) if (memcmp(mm_cache[i].key, key, sizeof key) == 0) return &mm_cache[i];
  if (!mm_init()) { *why = "oneDNN's CPU engine could not be made"; return NULL; }
  /* 3-D descriptors: a batch of 1 on an operand broadcasts it (a stride of 0). */
  dnnl_dims_t ad = {sa == 0 ? 1 : batch, m, k}, as = {sa == 0 ? m * k : sa, ta ? 1 : k, ta ? m : 1};
  dnnl_dims_t bd = {sb == 0 ? 1 : batch, k, n}, bs = {sb == 0 ? k * n : sb, tb ? 1 : n, tb ? k : 1};
  dnnl_dims_t cd = {batch, m, n}, cs = {sc == 0 ? m * n : sc, n, 1};
  dnnl_memory_desc_t amd, bmd, cmd;
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t p = NULL;
  *why = "oneDNN has no bfloat16 matmul for this geometry on this CPU";
  if (dnnl_memory_desc_init_by_strides(&amd, 3, ad, dnnl_bf16, as) != dnnl_success
      || dnnl_memory_desc_init_by_strides(&bmd, 3, bd, dnnl_bf16, bs) != dnnl_success
      || dnnl_memory_desc_init_by_strides(&cmd, 3, cd, dnnl_f32, cs) != dnnl_success
      || dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd) != dnnl_success
      || dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
  if (beta != 0) {
    if (dnnl_post_ops_create(&po) != dnnl_success || dnnl_post_ops_append_sum(po, (float)beta) != dnnl_success
        || dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) { if (po) dnnl_post_ops_destroy(po); dnnl_primitive_attr_destroy(attr); return NULL; }
  }
  dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, mm_engine, NULL);
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return NULL;
  st = dnnl_primitive_create(&p, pd);
  dnnl_primitive_desc_destroy(pd);
  if (st != dnnl_success) return NULL;
  mm_entry e;
  memcpy(e.key, key, sizeof key);
  e.p = p;
  e.A = e.B = e.C = NULL;
  if (dnnl_memory_create(&e.A, &amd, mm_engine, DNNL_MEMORY_NONE) != dnnl_success
      || dnnl_memory_create(&e.B, &bmd, mm_engine, DNNL_MEMORY_NONE) != dnnl_success
      || dnnl_memory_create(&e.C, &cmd, mm_engine, DNNL_MEMORY_NONE) != dnnl_success) { mm_free(&e); return NULL; }
  /* Full: the oldest entry goes (round robin). */
  int at;
  if (mm_count < MM_CACHE) at = mm_count++;
  else { at = mm_next; mm_free(&mm_cache[at]); mm_next = (mm_next + 1) % MM_CACHE; }
  mm_cache[at] = e;
  return &mm_cache[at];
}

/* C = op(A) op(B) + beta C in bfloat16 x bfloat16 -> float32; NULL on success, else why not. */
static const char *gemm_bf16(const float *a, size_t la, const float *b, size_t lb, float *c, int64_t batch, int64_t m, int64_t n, int64_t k,
                             int64_t ta, int64_t tb, int64_t sa, int64_t sb, int64_t sc, double beta, int threads) {
  const char *why = NULL;
  mm_entry *e = mm_get(batch, m, n, k, ta, tb, sa, sb, sc, beta, threads, &why);
  if (!e) return why;
  size_t na = (size_t)((sa == 0 ? 0 : (batch - 1) * sa) + m * k), nb = (size_t)((sb == 0 ? 0 : (batch - 1) * sb) + k * n);
  (void)la; (void)lb;
  uint16_t *a16 = grow(&bf_a, &bf_a_cap, na), *b16 = grow(&bf_b, &bf_b_cap, nb);
  if (!a16 || !b16) return "out of memory for the bfloat16 operands";
  to_bf16(a, a16, na, threads);
  to_bf16(b, b16, nb, threads);
  dnnl_memory_set_data_handle(e->A, a16);
  dnnl_memory_set_data_handle(e->B, b16);
  dnnl_memory_set_data_handle(e->C, c);
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->A}, {DNNL_ARG_WEIGHTS, e->B}, {DNNL_ARG_DST, e->C}};
  if (dnnl_primitive_execute(e->p, mm_stream, 3, args) != dnnl_success || dnnl_stream_wait(mm_stream) != dnnl_success) return "oneDNN's bfloat16 matmul failed";
  return NULL;
}
#endif

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
  if (lib == LIB_DNNL_BF16) {
#ifdef WEFT_DNNL
    const char *why = gemm_bf16(a, la, b, lb, c, batch, m, n, k, ta, tb, sa, sb, sc, beta, (int)threads);
    if (why) return throw_error(env, "weft_blas.gemm: %s", why);
    return NULL;
#else
    return throw_error(env, "weft_blas.gemm: %s", "built without oneDNN");
#endif
  }
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
      return throw_error(env, "weft_blas.gemm: %s must be 0 (OpenBLAS), 1 (oneDNN) or 2 (oneDNN bfloat16)", "lib");
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
  /* The kernel oneDNN picks for a bfloat16 product on this CPU (its name says the ISA), where it has one. */
  const char *why = NULL;
  set_library_threads(1);
  mm_entry *e = mm_get(1, 64, 64, 64, 0, 0, 64 * 64, 64 * 64, 64 * 64, 0, 1, &why);
  if (e) {
    const_dnnl_primitive_desc_t pd;
    const char *impl = NULL;
    if (dnnl_primitive_get_primitive_desc(e->p, &pd) == dnnl_success && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) {
      napi_create_string_utf8(env, impl, NAPI_AUTO_LENGTH, &v);
      napi_set_named_property(env, o, "dnnl_bf16", v);
    }
  }
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
