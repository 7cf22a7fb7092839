/*
 * Shared helpers for the ambit native addon: errno-carrying errors, argument checks, socket
 * addresses. The addon is Linux-only and does syscalls only; policy lives in TypeScript.
 */
#ifndef AMBIT_COMMON_H
#define AMBIT_COMMON_H

#include <node_api.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Linux constants that older libc headers may lack. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IP_FREEBIND
#define IP_FREEBIND 15
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif

/* The kernel refuses more than this many fds in one SCM_RIGHTS message. */
#define AMBIT_MAX_FDS 253
/* Upper bound for one message sent or received with fds (ZDS frames are ~1 KiB). */
#define AMBIT_MAX_MSG (1024 * 1024)

/* An IPv4 or IPv6 socket address. */
typedef struct {
  socklen_t len;
  union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } u;
} ambit_addr;

/* Result of a failing syscall, carried from a helper (or another thread) to the JS error. */
typedef struct {
  int err;              /* errno value, 0 on success */
  const char *syscall;  /* static string naming the syscall */
  char detail[160];     /* optional context, may be empty */
} ambit_fail;

const char *ambit_errno_name(int err);
void ambit_fail_set(ambit_fail *f, const char *syscall, int err, const char *detail);

/* Error with message "<syscall>: <ENAME> (<strerror>)[: detail]" and .code/.syscall/.errno. */
napi_value ambit_errno_error(napi_env env, const char *syscall, int err, const char *detail);
void ambit_throw_errno(napi_env env, const char *syscall, int err, const char *detail);
void ambit_throw_fail(napi_env env, const ambit_fail *f);
napi_value ambit_fail_error(napi_env env, const ambit_fail *f);

/* Argument checks. Each returns false after throwing a TypeError naming fn and field. */
bool ambit_type_error(napi_env env, const char *fn, const char *field, const char *what);
/* Reads exactly `want` arguments into argv; fewer is a TypeError "<fn>: <names> is/are required". */
bool ambit_args(napi_env env, napi_callback_info info, const char *fn, napi_value *argv, size_t want,
                const char *names);
/* (target, opts) arguments: opts must be an object ("opts must be an object" otherwise). */
bool ambit_args_with_opts(napi_env env, napi_callback_info info, const char *fn, napi_value argv[2]);
/* The required opts.address (into ip) and opts.port (min..65535). */
bool ambit_opt_endpoint(napi_env env, napi_value opts, const char *fn, char *ip, size_t cap, int64_t min_port,
                        int64_t *port);
bool ambit_arg_int(napi_env env, napi_value v, const char *fn, const char *field, int64_t min,
                   int64_t max, int64_t *out);
bool ambit_arg_fd(napi_env env, napi_value v, const char *fn, const char *field, int *out);
bool ambit_arg_string(napi_env env, napi_value v, const char *fn, const char *field, char *buf,
                      size_t cap);
/* Optional property of an options object; *present=false when missing or undefined. */
bool ambit_get_prop(napi_env env, napi_value obj, const char *name, napi_value *out, bool *present);
bool ambit_opt_int(napi_env env, napi_value obj, const char *fn, const char *name, int64_t min,
                   int64_t max, int64_t dflt, int64_t *out);
bool ambit_opt_bool(napi_env env, napi_value obj, const char *fn, const char *name, bool dflt,
                    bool *out);
bool ambit_parse_addr(napi_env env, const char *fn, const char *field, const char *ip, int port,
                      ambit_addr *out);
napi_value ambit_addr_to_js(napi_env env, const struct sockaddr *sa);

/* Start a thread with every signal blocked (Node handles signals on its own threads). stack 0:
 * the default size; detached: nobody joins it. Returns 0 or pthread_create's error. */
int ambit_thread_start(void *(*fn)(void *), void *arg, size_t stack, bool detached, pthread_t *tid);

/* netns helpers (netns.c). Return 0 or an errno, filling *f. */
int ambit_netns_check_fd(int fd, ambit_fail *f);
int ambit_netns_open(const char *path, int *out_fd, ambit_fail *f);
/* Accepts a path (opened and checked) or an fd (checked); *owned says whether to close it. */
bool ambit_arg_netns(napi_env env, napi_value v, const char *fn, int *out_fd, bool *owned);
/* Create a socket inside the netns on a short-lived pthread: the caller's thread never moves. */
int ambit_socket_in_netns(int nsfd, int family, int type, int *out_fd, ambit_fail *f);

/* A fresh non-blocking socket made in the netns, from its helper's pool; -1 on a miss (connect.c). */
int ambit_pool_take(int nsfd, int family);

/*
 * Pinned pools (connect.c), for the engine: its thread must never create or join a thread.
 * ambit_pool_pin (the JS thread, when a pod's listener opens) starts the netns's pool if there is
 * none and waits until its helper thread is in the netns; a pinned pool never goes idle. The
 * engine takes sockets with ambit_pool_get: a miss (the pool is empty under a burst) is queued
 * and answered by the helper, which calls `done` (on its thread, under the pool lock: keep it
 * short) with the fd or an errno. ambit_pool_forget(owner) drops an owner's pending misses (after
 * it, `done` is never called for that owner again).
 */
typedef struct ns_pool ns_pool;
typedef void (*ambit_pool_done)(void *owner, uint32_t id, uint8_t what, int fd, int err);
/* families: 1 IPv4, 2 IPv6 (a mask of the families kept ready). NULL with *f on failure. */
ns_pool *ambit_pool_pin(int nsfd, int families, ambit_fail *f);
void ambit_pool_unpin(ns_pool *p);
/* >= 0: a socket; -1: a miss, queued (done follows); -2: failed, errno in *err. */
int ambit_pool_get(ns_pool *p, int family, ambit_pool_done done, void *owner, uint32_t id, uint8_t what, int *err);
void ambit_pool_forget(void *owner);

/* sockopt helpers (sockopt.c). */
int ambit_set_transparent(int fd, int family, ambit_fail *f);
int ambit_set_mark(int fd, uint32_t mark, ambit_fail *f);
int ambit_socket_family(int fd, ambit_fail *f);
/* The socket's pending error (SO_ERROR; errno if it cannot be read); 0 when none. */
int ambit_socket_error(int fd);
/* The pre-redirect destination of an accepted socket of `family` (its peer's family). */
int ambit_orig_dst(int fd, int family, ambit_addr *dst, ambit_fail *f);
/* "1.2.3.4" / "fd00::1" (v4-mapped shown as IPv4) and the port of an address. */
void ambit_addr_text(const struct sockaddr *sa, char *text, size_t cap, int *port);

/* Exported functions. */
napi_value ambit_open_netns(napi_env env, napi_callback_info info);
napi_value ambit_netns_id(napi_env env, napi_callback_info info);
napi_value ambit_listen_in_netns(napi_env env, napi_callback_info info);
napi_value ambit_original_dst(napi_env env, napi_callback_info info);
napi_value ambit_set_mark_js(napi_env env, napi_callback_info info);
napi_value ambit_set_transparent_js(napi_env env, napi_callback_info info);
napi_value ambit_close_fd(napi_env env, napi_callback_info info);
napi_value ambit_raise_fd_limit(napi_env env, napi_callback_info info);
napi_value ambit_set_parent_death_signal(napi_env env, napi_callback_info info);
napi_value ambit_connect_in_netns(napi_env env, napi_callback_info info);
napi_value ambit_recv_with_fds(napi_env env, napi_callback_info info);
napi_value ambit_send_with_fds(napi_env env, napi_callback_info info);
napi_value ambit_unix_connect(napi_env env, napi_callback_info info);
napi_value ambit_unix_socketpair(napi_env env, napi_callback_info info);
/* The data-path engine (engine.c). */
bool ambit_engine_init(napi_env env, napi_value exports);
/* The nghttp2 and OpenSSL the addon binds to (versions.c): checked at load. */
bool ambit_versions_check(int nghttp2_num, const char *nghttp2_text, unsigned long openssl_num, const char *openssl_text,
                          char *msg, size_t cap);
bool ambit_versions_ok(napi_env env);
napi_value ambit_versions(napi_env env, napi_callback_info info);
napi_value ambit_versions_check_js(napi_env env, napi_callback_info info);

#define AMBIT_NAPI(call)                                                          \
  do {                                                                            \
    if ((call) != napi_ok) {                                                      \
      bool pending_ = false;                                                      \
      napi_is_exception_pending(env, &pending_);                                  \
      if (!pending_) napi_throw_error(env, "AMBIT_BUG", "node-api call failed: " #call); \
      return NULL;                                                                \
    }                                                                             \
  } while (0)

#endif
