/*
 * The libraries the engine binds to are Node's own (nghttp2 and OpenSSL, exported by the node
 * binary, never linked here). An older Node exports older ones: a function the engine calls may
 * be missing (and the addon's lazy binding would crash the process at its first call) or behave
 * differently. So the versions are checked once, when the addon loads, and an unfit one fails the
 * load with a message naming what is needed.
 *   nghttp2 >= 1.61.0: nghttp2_option_set_max_continuations (CONTINUATION flood guard, 1.61.0),
 *                      nghttp2_option_set_stream_reset_rate_limit (rapid reset guard, 1.58.0).
 *                      Node ships it from 20.12.1 (and 18.20.1, 21.7.2).
 *   OpenSSL >= 3.0.0:  SSL_get1_peer_certificate; TLS 1.3. Node ships 3.x since 18.
 */
#include "common.h"

#include <dlfcn.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <stdio.h>

#define NGHTTP2_MIN 0x013d00 /* 1.61.0 */
#define NGHTTP2_MIN_TEXT "1.61.0"
#define OPENSSL_MIN 0x30000000UL /* 3.0.0 */
#define OPENSSL_MIN_TEXT "3.0.0"
#define NODE_MIN_TEXT "20.12.1"

bool ambit_versions_check(int nghttp2_num, const char *nghttp2_text, unsigned long openssl_num, const char *openssl_text,
                          char *msg, size_t cap) {
  if (nghttp2_num < NGHTTP2_MIN) {
    snprintf(msg, cap,
             "ambit native addon: this Node's nghttp2 is %s; the engine needs nghttp2 >= " NGHTTP2_MIN_TEXT
             " (Node >= " NODE_MIN_TEXT ", which exports it)",
             nghttp2_text);
    return false;
  }
  if (openssl_num < OPENSSL_MIN) {
    snprintf(msg, cap,
             "ambit native addon: this Node's OpenSSL is %s; the engine needs OpenSSL >= " OPENSSL_MIN_TEXT
             " (Node >= " NODE_MIN_TEXT ")",
             openssl_text);
    return false;
  }
  return true;
}

/* "1.61.0" -> 0x013d00 (nghttp2's version_num form); 0 when it does not parse. */
static int parse_version(const char *s) {
  unsigned a = 0, b = 0, c = 0;
  if (s == NULL || sscanf(s, "%u.%u.%u", &a, &b, &c) < 2 || a > 255 || b > 255 || c > 255) return 0;
  return (int)((a << 16) | (b << 8) | c);
}

/*
 * nghttp2's version as this process has it: nghttp2_version() when the node binary exports it
 * (Node's own build does not), else what Node reports of the copy it was built with
 * (process.versions.nghttp2).
 */
static void nghttp2_ver(napi_env env, char *text, size_t cap, int *num) {
  typedef nghttp2_info *(*version_fn)(int);
  version_fn fn = (version_fn)dlsym(RTLD_DEFAULT, "nghttp2_version");
  nghttp2_info *ng = fn ? fn(0) : NULL;
  if (ng != NULL) {
    snprintf(text, cap, "%s", ng->version_str);
    *num = ng->version_num;
    return;
  }
  snprintf(text, cap, "unknown");
  *num = 0;
  napi_value global, process, versions, v;
  size_t n;
  if (napi_get_global(env, &global) == napi_ok && napi_get_named_property(env, global, "process", &process) == napi_ok &&
      napi_get_named_property(env, process, "versions", &versions) == napi_ok &&
      napi_get_named_property(env, versions, "nghttp2", &v) == napi_ok &&
      napi_get_value_string_utf8(env, v, text, cap, &n) == napi_ok) {
    *num = parse_version(text);
  }
}

/* The newest functions the engine calls: absent, and the first call would end the process. */
static const char *const needed_symbols[] = {
    "nghttp2_option_set_max_continuations",
    "nghttp2_option_set_stream_reset_rate_limit",
    "SSL_get1_peer_certificate",
};

/* At load: false after throwing AMBIT_NATIVE_VERSION. */
bool ambit_versions_ok(napi_env env) {
  char ng_text[64], msg[300];
  int ng_num;
  nghttp2_ver(env, ng_text, sizeof ng_text, &ng_num);
  if (!ambit_versions_check(ng_num, ng_text, OpenSSL_version_num(), OpenSSL_version(OPENSSL_VERSION), msg, sizeof msg)) {
    napi_throw_error(env, "AMBIT_NATIVE_VERSION", msg);
    return false;
  }
  for (size_t i = 0; i < sizeof needed_symbols / sizeof needed_symbols[0]; i++) {
    if (dlsym(RTLD_DEFAULT, needed_symbols[i]) == NULL) {
      snprintf(msg, sizeof msg,
               "ambit native addon: this Node does not export %s; the engine needs nghttp2 >= " NGHTTP2_MIN_TEXT
               " and OpenSSL >= " OPENSSL_MIN_TEXT " as exported by Node >= " NODE_MIN_TEXT,
               needed_symbols[i]);
      napi_throw_error(env, "AMBIT_NATIVE_VERSION", msg);
      return false;
    }
  }
  return true;
}

/*
 * versions() -> {nghttp2, nghttp2Min, openssl, opensslMin}: what the addon bound to and needs.
 * versionsCheck(nghttp2Num, opensslNum) -> the refusal message, or null: the load check on given
 * numbers (tests).
 */
napi_value ambit_versions(napi_env env, napi_callback_info info) {
  char ng_text[64];
  int ng_num;
  nghttp2_ver(env, ng_text, sizeof ng_text, &ng_num);
  napi_value out, v;
  AMBIT_NAPI(napi_create_object(env, &out));
  AMBIT_NAPI(napi_create_string_utf8(env, ng_text, NAPI_AUTO_LENGTH, &v));
  AMBIT_NAPI(napi_set_named_property(env, out, "nghttp2", v));
  AMBIT_NAPI(napi_create_string_utf8(env, NGHTTP2_MIN_TEXT, NAPI_AUTO_LENGTH, &v));
  AMBIT_NAPI(napi_set_named_property(env, out, "nghttp2Min", v));
  AMBIT_NAPI(napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &v));
  AMBIT_NAPI(napi_set_named_property(env, out, "openssl", v));
  AMBIT_NAPI(napi_create_string_utf8(env, OPENSSL_MIN_TEXT, NAPI_AUTO_LENGTH, &v));
  AMBIT_NAPI(napi_set_named_property(env, out, "opensslMin", v));
  return out;
}

napi_value ambit_versions_check_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t ng, ossl;
  if (!ambit_args(env, info, "versionsCheck", argv, 2, "nghttp2Num, opensslNum")) return NULL;
  if (!ambit_arg_int(env, argv[0], "versionsCheck", "nghttp2Num", 0, INT32_MAX, &ng)) return NULL;
  if (!ambit_arg_int(env, argv[1], "versionsCheck", "opensslNum", 0, UINT32_MAX, &ossl)) return NULL;
  char msg[300], ng_text[32], ossl_text[32];
  napi_value out;
  snprintf(ng_text, sizeof ng_text, "%u.%u.%u", (unsigned)(ng >> 16) & 255, (unsigned)(ng >> 8) & 255, (unsigned)ng & 255);
  /* OPENSSL_VERSION_NUMBER: 0xMNN00PP0 from 3.0, 0xMNNFFPPS before */
  unsigned major = (unsigned)(ossl >> 28) & 15;
  snprintf(ossl_text, sizeof ossl_text, "%u.%u.%u", major, (unsigned)(ossl >> 20) & 255,
           major >= 3 ? (unsigned)(ossl >> 4) & 255 : (unsigned)(ossl >> 12) & 255);
  if (ambit_versions_check((int)ng, ng_text, (unsigned long)ossl, ossl_text, msg, sizeof msg)) {
    AMBIT_NAPI(napi_get_null(env, &out));
  } else {
    AMBIT_NAPI(napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &out));
  }
  return out;
}
