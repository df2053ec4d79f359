/*
 * bench/native/bf16_matmul.c (built and run by bench/bf16.ts): oneDNN's matmul primitive on the
 * benchmark GPT's product shapes, float32 x float32 -> float32 against bfloat16 x bfloat16 ->
 * float32 (what bf16 mixed precision would run), on one thread; the implementation oneDNN picked
 * for each (its name says the ISA: avx512_core_amx, avx512_core_bf16, avx2...). Prints one JSON
 * object. Inputs are random in [-1, 1); bf16 rounds them to nearest even; the bf16 result's largest
 * relative difference from float32's is reported too (it must be at bf16's precision, ~1e-2).
 */
#include <dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#define CHECK(x) do { dnnl_status_t st_ = (x); if (st_ != dnnl_success) { fprintf(stderr, "bf16_matmul: %s failed (%d)\n", #x, (int)st_); exit(1); } } while (0)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static uint16_t to_bf16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

typedef struct { const char *name; long m, k, n; } shape_t;

/* One matmul of dtype dt (inputs), f32 output: the fastest of `reps` runs after a warm-up, seconds; impl name out. */
static double run(dnnl_engine_t eng, dnnl_stream_t s, dnnl_data_type_t dt, long M, long K, long N, void *a, void *b, float *c, int reps, const char **impl) {
  dnnl_memory_desc_t amd, bmd, cmd;
  dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N};
  CHECK(dnnl_memory_desc_init_by_tag(&amd, 2, ad, dt, dnnl_ab));
  CHECK(dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dt, dnnl_ab));
  CHECK(dnnl_memory_desc_init_by_tag(&cmd, 2, cd, dnnl_f32, dnnl_ab));
  dnnl_matmul_desc_t md;
  CHECK(dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd));
  dnnl_primitive_desc_t pd;
  CHECK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
  CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl));
  dnnl_primitive_t p;
  CHECK(dnnl_primitive_create(&p, pd));
  dnnl_memory_t A, B, C;
  CHECK(dnnl_memory_create(&A, &amd, eng, a));
  CHECK(dnnl_memory_create(&B, &bmd, eng, b));
  CHECK(dnnl_memory_create(&C, &cmd, eng, c));
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, B}, {DNNL_ARG_DST, C}};
  double best = 1e30;
  for (int r = 0; r < reps + 1; r++) {
    double t0 = now();
    CHECK(dnnl_primitive_execute(p, s, 3, args));
    CHECK(dnnl_stream_wait(s));
    double t = now() - t0;
    if (r > 0 && t < best) best = t;
  }
  dnnl_memory_destroy(A); dnnl_memory_destroy(B); dnnl_memory_destroy(C);
  dnnl_primitive_destroy(p);
  /* impl points into pd's storage: copy it before pd goes. */
  *impl = strdup(*impl);
  dnnl_primitive_desc_destroy(pd);
  return best;
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 9;
  shape_t shapes[] = {
    {"medium qkv fwd", 2048, 512, 1536}, {"medium fc1 fwd", 2048, 512, 2048}, {"medium fc2 fwd", 2048, 2048, 512},
    {"medium fc1 dW", 512, 2048, 2048}, {"small fc1 fwd", 2048, 256, 1024}, {"square 1024", 1024, 1024, 1024},
  };
  int ns = sizeof shapes / sizeof shapes[0];
  dnnl_engine_t eng; dnnl_stream_t s;
  CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
  CHECK(dnnl_stream_create(&s, eng, dnnl_stream_default_flags));
  const dnnl_version_t *v = dnnl_version();
  printf("{\"onednn\": \"%d.%d.%d\", \"shapes\": [", v->major, v->minor, v->patch);
  srand(1);
  for (int i = 0; i < ns; i++) {
    long M = shapes[i].m, K = shapes[i].k, N = shapes[i].n;
    float *a = malloc(4 * M * K), *b = malloc(4 * K * N), *c32 = malloc(4 * M * N), *c16 = malloc(4 * M * N);
    uint16_t *a16 = malloc(2 * M * K), *b16 = malloc(2 * K * N);
    for (long j = 0; j < M * K; j++) { a[j] = 2.0f * rand() / RAND_MAX - 1; a16[j] = to_bf16(a[j]); }
    for (long j = 0; j < K * N; j++) { b[j] = 2.0f * rand() / RAND_MAX - 1; b16[j] = to_bf16(b[j]); }
    const char *i32, *i16;
    double t32 = run(eng, s, dnnl_f32, M, K, N, a, b, c32, reps, &i32);
    double t16 = run(eng, s, dnnl_bf16, M, K, N, a16, b16, c16, reps, &i16);
    double maxdiff = 0, maxabs = 0;
    for (long j = 0; j < M * N; j++) { double d = fabs(c16[j] - c32[j]); if (d > maxdiff) maxdiff = d; if (fabs(c32[j]) > maxabs) maxabs = fabs(c32[j]); }
    double flops = 2.0 * M * K * N;
    printf("%s{\"name\": \"%s\", \"m\": %ld, \"k\": %ld, \"n\": %ld, \"f32_gflops\": %.1f, \"bf16_gflops\": %.1f, \"bf16_over_f32\": %.3f, "
           "\"f32_impl\": \"%s\", \"bf16_impl\": \"%s\", \"bf16_max_rel_diff\": %.2e}",
           i ? ", " : "", shapes[i].name, M, K, N, flops / t32 / 1e9, flops / t16 / 1e9, t32 / t16, i32, i16, maxdiff / maxabs);
    free(a); free(b); free(c32); free(c16); free(a16); free(b16);
  }
  printf("]}\n");
  dnnl_stream_destroy(s);
  dnnl_engine_destroy(eng);
  return 0;
}
