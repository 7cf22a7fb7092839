/*
 * connectInNetns: a TCP connection made from inside a pod's netns.
 *
 * The socket is created in the netns (short-lived pthread, see netns.c); options, bind and a
 * non-blocking connect() follow on the calling thread. Waiting for the handshake is event driven:
 * a uv_poll on the event loop plus a uv_timer for the deadline. That keeps both the JS thread and
 * the libuv thread pool free, so many slow or blackholed upstreams cannot starve file or DNS work.
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
  napi_env env;
  napi_deferred deferred;
  napi_async_context actx;
  uv_poll_t poll;
  uv_timer_t timer;
  int fd;
  int open_handles; /* uv handles still to be closed before the request is freed */
  bool settled;
  ambit_fail fail;
} connect_req;

static void on_handle_closed(uv_handle_t *h) {
  connect_req *req = h->data;
  if (--req->open_handles == 0) free(req);
}

/* Resolve or reject inside a callback scope so promise continuations run right away. */
static void settle(connect_req *req) {
  napi_env env = req->env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_value resource, value;
  req->settled = true;
  uv_poll_stop(&req->poll);
  uv_timer_stop(&req->timer);
  uv_close((uv_handle_t *)&req->poll, on_handle_closed);
  uv_close((uv_handle_t *)&req->timer, on_handle_closed);
  if (req->fail.err != 0) {
    close(req->fd);
    req->fd = -1;
  }
  if (napi_open_handle_scope(env, &hs) != napi_ok) return;
  napi_create_object(env, &resource);
  bool scoped = napi_open_callback_scope(env, resource, req->actx, &cs) == napi_ok;
  if (req->fail.err != 0) {
    value = ambit_fail_error(env, &req->fail);
    napi_reject_deferred(env, req->deferred, value);
  } else {
    napi_create_int32(env, req->fd, &value);
    napi_resolve_deferred(env, req->deferred, value);
  }
  if (scoped) napi_close_callback_scope(env, cs);
  napi_async_destroy(env, req->actx);
  napi_close_handle_scope(env, hs);
}

static void on_writable(uv_poll_t *p, int status, int events) {
  connect_req *req = p->data;
  if (req->settled) return;
  /* libuv reports POLLERR as status UV_EBADF; the socket's pending error says what happened. */
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(req->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
    ambit_fail_set(&req->fail, "getsockopt", errno, "SO_ERROR");
  } else if (soerr != 0) {
    ambit_fail_set(&req->fail, "connect", soerr, NULL);
  } else if (status < 0) {
    ambit_fail_set(&req->fail, "connect", -status, "poll");
  }
  settle(req);
}

static void on_timeout(uv_timer_t *t) {
  connect_req *req = t->data;
  if (req->settled) return;
  ambit_fail_set(&req->fail, "connect", ETIMEDOUT, "no answer within timeoutMs");
  settle(req);
}

/* connectInNetns(netns, {address, port, mark?, localAddress?, localPort?, transparent?, timeoutMs?}) */
napi_value ambit_connect_in_netns(napi_env env, napi_callback_info info) {
  static const char *fn = "connectInNetns";
  size_t argc = 2;
  napi_value argv[2];
  AMBIT_NAPI(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  if (t != napi_object) {
    ambit_type_error(env, fn, "opts", "must be an object");
    return NULL;
  }
  napi_value v;
  bool present, transparent, has_local;
  char ip[64], local_ip[64];
  int64_t port, mark, local_port, timeout_ms;
  if (!ambit_get_prop(env, argv[1], "address", &v, &present)) return NULL;
  if (!present) {
    ambit_type_error(env, fn, "opts.address", "is required");
    return NULL;
  }
  if (!ambit_arg_string(env, v, fn, "opts.address", ip, sizeof ip)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "port", 1, 65535, -1, &port)) return NULL;
  if (port < 0) {
    ambit_type_error(env, fn, "opts.port", "is required");
    return NULL;
  }
  if (!ambit_opt_int(env, argv[1], fn, "mark", 0, UINT32_MAX, -1, &mark)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "localPort", 0, 65535, 0, &local_port)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "timeoutMs", 1, INT32_MAX, 10000, &timeout_ms)) return NULL;
  if (!ambit_opt_bool(env, argv[1], fn, "transparent", false, &transparent)) return NULL;
  if (!ambit_get_prop(env, argv[1], "localAddress", &v, &has_local)) return NULL;
  if (has_local && !ambit_arg_string(env, v, fn, "opts.localAddress", local_ip, sizeof local_ip)) return NULL;

  ambit_addr addr, local;
  if (!ambit_parse_addr(env, fn, "opts.address", ip, (int)port, &addr)) return NULL;
  int family = addr.u.sa.sa_family;
  bool do_bind = has_local || local_port != 0;
  if (has_local) {
    if (!ambit_parse_addr(env, fn, "opts.localAddress", local_ip, (int)local_port, &local)) return NULL;
    if (local.u.sa.sa_family != family) {
      ambit_type_error(env, fn, "opts.localAddress", "must be of the same IP family as opts.address");
      return NULL;
    }
  } else if (do_bind) {
    ambit_parse_addr(env, fn, "opts.localAddress", family == AF_INET ? "0.0.0.0" : "::", (int)local_port, &local);
  }

  int nsfd;
  bool owned;
  if (!ambit_arg_netns(env, argv[0], fn, &nsfd, &owned)) return NULL;

  napi_value promise;
  napi_deferred deferred;
  AMBIT_NAPI(napi_create_promise(env, &deferred, &promise));

  ambit_fail f = {0};
  int fd = -1, one = 1;
  int rc = ambit_socket_in_netns(nsfd, family, SOCK_STREAM, &fd, &f);
  if (owned) close(nsfd);
  if (rc != 0) goto fail;
  if (mark >= 0 && ambit_set_mark(fd, (uint32_t)mark, &f) != 0) goto fail;
  if (transparent && ambit_set_transparent(fd, family, &f) != 0) goto fail;
  if (do_bind) {
    /* With port 0 the kernel picks the port at connect() time, knowing the 4-tuple, so spoofed
     * source addresses do not exhaust the ephemeral range at bind(). */
    if (local_port == 0 && family == AF_INET) {
      setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    }
    if (bind(fd, &local.u.sa, local.len) != 0) {
      ambit_fail_set(&f, "bind", errno, has_local ? local_ip : NULL);
      goto fail;
    }
  }
  if (connect(fd, &addr.u.sa, addr.len) == 0) {
    napi_value jfd;
    AMBIT_NAPI(napi_create_int32(env, fd, &jfd));
    AMBIT_NAPI(napi_resolve_deferred(env, deferred, jfd));
    return promise;
  }
  if (errno != EINPROGRESS) {
    char d[96];
    snprintf(d, sizeof d, "%s port %d", ip, (int)port);
    ambit_fail_set(&f, "connect", errno, d);
    goto fail;
  }

  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    ambit_fail_set(&f, "napi_get_uv_event_loop", EINVAL, NULL);
    goto fail;
  }
  connect_req *req = calloc(1, sizeof *req);
  if (req == NULL) {
    ambit_fail_set(&f, "calloc", ENOMEM, NULL);
    goto fail;
  }
  req->env = env;
  req->deferred = deferred;
  req->fd = fd;
  napi_value name;
  napi_create_string_utf8(env, "ambit.connectInNetns", NAPI_AUTO_LENGTH, &name);
  if (napi_async_init(env, NULL, name, &req->actx) != napi_ok) {
    free(req);
    ambit_fail_set(&f, "napi_async_init", EINVAL, NULL);
    goto fail;
  }
  int uerr = uv_poll_init_socket(loop, &req->poll, fd);
  if (uerr != 0) {
    napi_async_destroy(env, req->actx);
    free(req);
    ambit_fail_set(&f, "uv_poll_init", -uerr, NULL);
    goto fail;
  }
  uv_timer_init(loop, &req->timer);
  req->poll.data = req;
  req->timer.data = req;
  req->open_handles = 2;
  uv_timer_start(&req->timer, on_timeout, (uint64_t)timeout_ms, 0);
  uerr = uv_poll_start(&req->poll, UV_WRITABLE, on_writable);
  if (uerr != 0) {
    ambit_fail_set(&req->fail, "uv_poll_start", -uerr, NULL);
    settle(req);
  }
  return promise;

fail:
  if (fd >= 0) close(fd);
  AMBIT_NAPI(napi_reject_deferred(env, deferred, ambit_fail_error(env, &f)));
  return promise;
}
