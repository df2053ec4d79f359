/*
 * weft_mem: the C allocator's settings, from Node (N-API).
 *
 * onnxruntime-node copies every output of a program into a fresh ArrayBuffer, which V8 allocates
 * with glibc's calloc. Past glibc's mmap threshold (dynamic, at most 32 MiB) each such buffer is a
 * fresh mapping: every page faults on first touch, and is unmapped again when the buffer is
 * collected. Freed heap memory above the trim threshold goes back to the OS the same way. A step
 * moving hundreds of MB of activations between programs pays for those faults on every step.
 *
 * `tune(mmapThreshold, trimThreshold)` sets M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (mallopt), so
 * that large buffers are carved from the heap and their pages stay mapped for the next step, as a
 * caching allocator keeps them. Returns [ok_mmap, ok_trim]: mallopt's own answers (1 applied,
 * 0 refused). `stats()` returns mallinfo2's arena (heap bytes from the OS), hblkhd (bytes in
 * mmapped blocks) and fordblks (free bytes held).
 *
 * Not glibc: both are answered with nulls, and nothing changes.
 */
#include <node_api.h>
#include <stddef.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif

static napi_value number(napi_env env, double x) {
  napi_value v;
  napi_create_double(env, x, &v);
  return v;
}

static inline napi_value null_value(napi_env env) {
  napi_value v;
  napi_get_null(env, &v);
  return v;
}

static napi_value tune(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "weft_mem.tune(mmapThreshold, trimThreshold): two byte counts");
    return NULL;
  }
  double mmap_threshold, trim_threshold;
  if (napi_get_value_double(env, argv[0], &mmap_threshold) != napi_ok || napi_get_value_double(env, argv[1], &trim_threshold) != napi_ok ||
      mmap_threshold < 0 || trim_threshold < 0) {
    napi_throw_type_error(env, NULL, "weft_mem.tune(mmapThreshold, trimThreshold): byte counts must be non-negative numbers");
    return NULL;
  }
  napi_value out;
  napi_create_array_with_length(env, 2, &out);
#ifdef __GLIBC__
  /* mallopt takes an int: thresholds past 2^31 - 1 are clamped to it. */
  int a = mallopt(M_MMAP_THRESHOLD, mmap_threshold > 2147483647.0 ? 2147483647 : (int)mmap_threshold);
  int b = mallopt(M_TRIM_THRESHOLD, trim_threshold > 2147483647.0 ? 2147483647 : (int)trim_threshold);
  napi_set_element(env, out, 0, number(env, a));
  napi_set_element(env, out, 1, number(env, b));
#else
  napi_set_element(env, out, 0, null_value(env));
  napi_set_element(env, out, 1, null_value(env));
#endif
  return out;
}

static napi_value stats(napi_env env, napi_callback_info info) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 m = mallinfo2();
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "arena", number(env, (double)m.arena));
  napi_set_named_property(env, out, "mmapped", number(env, (double)m.hblkhd));
  napi_set_named_property(env, out, "free", number(env, (double)m.fordblks));
  return out;
#else
  return null_value(env);
#endif
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"tune", NULL, tune, NULL, NULL, NULL, napi_default, NULL},
    {"stats", NULL, stats, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
