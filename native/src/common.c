/* Errors and argument checks shared by every exported function. */
#include "common.h"

#include <signal.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *ambit_errno_name(int err) {
  /* glibc >= 2.32 knows the symbolic names; older libcs get a numeric fallback. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name != NULL) return name;
#endif
  static __thread char buf[24];
  snprintf(buf, sizeof buf, "E%d", err);
  return buf;
}

void ambit_fail_set(ambit_fail *f, const char *syscall, int err, const char *detail) {
  f->err = err;
  f->syscall = syscall;
  f->detail[0] = '\0';
  if (detail != NULL) snprintf(f->detail, sizeof f->detail, "%s", detail);
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *val) {
  napi_value v;
  if (napi_create_string_utf8(env, val, NAPI_AUTO_LENGTH, &v) == napi_ok) {
    napi_set_named_property(env, obj, key, v);
  }
}

napi_value ambit_errno_error(napi_env env, const char *syscall, int err, const char *detail) {
  char msg[384];
  char ebuf[128];
  /* strerror_r (GNU variant) may return a static string instead of filling ebuf. */
  const char *text = strerror_r(err, ebuf, sizeof ebuf);
  const char *name = ambit_errno_name(err);
  if (detail != NULL && detail[0] != '\0') {
    snprintf(msg, sizeof msg, "%s: %s (%s): %s", syscall, name, text, detail);
  } else {
    snprintf(msg, sizeof msg, "%s: %s (%s)", syscall, name, text);
  }
  napi_value jmsg, error, errnum;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) != napi_ok) return NULL;
  if (napi_create_error(env, NULL, jmsg, &error) != napi_ok) return NULL;
  set_str(env, error, "code", name);
  set_str(env, error, "syscall", syscall);
  if (napi_create_int32(env, err, &errnum) == napi_ok) napi_set_named_property(env, error, "errno", errnum);
  return error;
}

void ambit_throw_errno(napi_env env, const char *syscall, int err, const char *detail) {
  napi_value e = ambit_errno_error(env, syscall, err, detail);
  if (e != NULL) napi_throw(env, e);
  else napi_throw_error(env, ambit_errno_name(err), syscall);
}

napi_value ambit_fail_error(napi_env env, const ambit_fail *f) {
  return ambit_errno_error(env, f->syscall, f->err, f->detail);
}

void ambit_throw_fail(napi_env env, const ambit_fail *f) {
  ambit_throw_errno(env, f->syscall, f->err, f->detail);
}

bool ambit_type_error(napi_env env, const char *fn, const char *field, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s %s", fn, field, what);
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  return false;
}

bool ambit_args(napi_env env, napi_callback_info info, const char *fn, napi_value *argv, size_t want,
                const char *names) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "AMBIT_BUG", "node-api call failed: napi_get_cb_info");
    return false;
  }
  if (argc < want) return ambit_type_error(env, fn, names, strchr(names, ',') ? "are required" : "is required");
  return true;
}

bool ambit_args_with_opts(napi_env env, napi_callback_info info, const char *fn, napi_value argv[2]) {
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "AMBIT_BUG", "node-api call failed: napi_get_cb_info");
    return false;
  }
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  if (t != napi_object) return ambit_type_error(env, fn, "opts", "must be an object");
  return true;
}

bool ambit_opt_endpoint(napi_env env, napi_value opts, const char *fn, char *ip, size_t cap, int64_t min_port,
                        int64_t *port) {
  napi_value v;
  bool present;
  if (!ambit_get_prop(env, opts, "address", &v, &present)) return false;
  if (!present) return ambit_type_error(env, fn, "opts.address", "is required");
  if (!ambit_arg_string(env, v, fn, "opts.address", ip, cap)) return false;
  if (!ambit_opt_int(env, opts, fn, "port", min_port, 65535, -1, port)) return false;
  if (*port < 0) return ambit_type_error(env, fn, "opts.port", "is required");
  return true;
}

bool ambit_arg_int(napi_env env, napi_value v, const char *fn, const char *field, int64_t min,
                   int64_t max, int64_t *out) {
  napi_valuetype t;
  char what[96];
  snprintf(what, sizeof what, "must be an integer in %lld..%lld", (long long)min, (long long)max);
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return ambit_type_error(env, fn, field, what);
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return ambit_type_error(env, fn, field, what);
  /* NaN fails both comparisons, so it lands here too. */
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    return ambit_type_error(env, fn, field, what);
  }
  *out = (int64_t)d;
  return true;
}

bool ambit_arg_fd(napi_env env, napi_value v, const char *fn, const char *field, int *out) {
  int64_t n;
  if (!ambit_arg_int(env, v, fn, field, 0, INT32_MAX, &n)) return false;
  *out = (int)n;
  return true;
}

bool ambit_arg_string(napi_env env, napi_value v, const char *fn, const char *field, char *buf,
                      size_t cap) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    return ambit_type_error(env, fn, field, "must be a string");
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len == 0 || len >= cap) {
    return ambit_type_error(env, fn, field, "must be a non-empty string of bounded length");
  }
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) {
    return ambit_type_error(env, fn, field, "must be a string");
  }
  if (strlen(buf) != len) return ambit_type_error(env, fn, field, "must not contain NUL bytes");
  return true;
}

bool ambit_get_prop(napi_env env, napi_value obj, const char *name, napi_value *out, bool *present) {
  napi_value v;
  napi_valuetype t;
  *present = false;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return false;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t != napi_undefined && t != napi_null) {
    *present = true;
    *out = v;
  }
  return true;
}

bool ambit_opt_int(napi_env env, napi_value obj, const char *fn, const char *name, int64_t min,
                   int64_t max, int64_t dflt, int64_t *out) {
  napi_value v;
  bool present;
  char field[64];
  snprintf(field, sizeof field, "opts.%s", name);
  if (!ambit_get_prop(env, obj, name, &v, &present)) return false;
  if (!present) {
    *out = dflt;
    return true;
  }
  return ambit_arg_int(env, v, fn, field, min, max, out);
}

bool ambit_opt_bool(napi_env env, napi_value obj, const char *fn, const char *name, bool dflt,
                    bool *out) {
  napi_value v;
  bool present;
  napi_valuetype t;
  char field[64];
  snprintf(field, sizeof field, "opts.%s", name);
  if (!ambit_get_prop(env, obj, name, &v, &present)) return false;
  if (!present) {
    *out = dflt;
    return true;
  }
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) {
    return ambit_type_error(env, fn, field, "must be a boolean");
  }
  return napi_get_value_bool(env, v, out) == napi_ok;
}

bool ambit_parse_addr(napi_env env, const char *fn, const char *field, const char *ip, int port,
                      ambit_addr *out) {
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET, ip, &out->u.v4.sin_addr) == 1) {
    out->u.v4.sin_family = AF_INET;
    out->u.v4.sin_port = htons((uint16_t)port);
    out->len = sizeof out->u.v4;
    return true;
  }
  if (inet_pton(AF_INET6, ip, &out->u.v6.sin6_addr) == 1) {
    out->u.v6.sin6_family = AF_INET6;
    out->u.v6.sin6_port = htons((uint16_t)port);
    out->len = sizeof out->u.v6;
    return true;
  }
  char what[128];
  snprintf(what, sizeof what, "is not an IPv4 or IPv6 address: '%.60s'", ip);
  return ambit_type_error(env, fn, field, what);
}

void ambit_addr_text(const struct sockaddr *sa, char *text, size_t cap, int *port) {
  text[0] = 0;
  *port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, text, cap);
    *port = ntohs(a->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    *port = ntohs(a->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], text, cap);
    } else {
      inet_ntop(AF_INET6, &a->sin6_addr, text, cap);
    }
  }
}

napi_value ambit_addr_to_js(napi_env env, const struct sockaddr *sa) {
  char text[INET6_ADDRSTRLEN];
  int port, family;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    port = ntohs(a->sin_port);
    family = 4;
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    port = ntohs(a->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      /* Report v4-mapped destinations as the IPv4 address the client dialled. */
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], text, sizeof text);
      family = 4;
    } else {
      inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      family = 6;
    }
  } else {
    ambit_throw_errno(env, "getsockopt", EAFNOSUPPORT, "unexpected address family");
    return NULL;
  }
  napi_value obj, jaddr, jport, jfam;
  AMBIT_NAPI(napi_create_object(env, &obj));
  AMBIT_NAPI(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &jaddr));
  AMBIT_NAPI(napi_create_int32(env, port, &jport));
  AMBIT_NAPI(napi_create_int32(env, family, &jfam));
  AMBIT_NAPI(napi_set_named_property(env, obj, "address", jaddr));
  AMBIT_NAPI(napi_set_named_property(env, obj, "port", jport));
  AMBIT_NAPI(napi_set_named_property(env, obj, "family", jfam));
  return obj;
}

int ambit_thread_start(void *(*fn)(void *), void *arg, size_t stack, bool detached, pthread_t *tid) {
  pthread_attr_t attr;
  pthread_t ignored;
  sigset_t all, old;
  pthread_attr_init(&attr);
  if (stack > 0) pthread_attr_setstacksize(&attr, stack);
  if (detached) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(tid ? tid : &ignored, &attr, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return rc;
}
