/*
 * Passing file descriptors over unix sockets (SCM_RIGHTS): how pod netns fds reach the agent.
 *
 * recvWithFds waits on its own short-lived pthread and reports back through a thread-safe
 * function. It does not use the libuv thread pool (a long-lived reader would hold one of its four
 * threads) and does not register the fd with the event loop (the caller may have handed us an fd
 * that libuv already watches; two watchers on one fd abort libuv).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int fd;
  size_t max_bytes;
  int max_fds;
  int timeout_ms;
  napi_deferred deferred;
  napi_threadsafe_function tsfn;
  /* results */
  ambit_fail fail;
  bool eof;
  char *buf;
  size_t len;
  int fds[AMBIT_MAX_FDS];
  int nfds;
} recv_req;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_all(int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

static void do_recv(recv_req *req) {
  int64_t deadline = now_ms() + req->timeout_ms;
  size_t cmsg_space = CMSG_SPACE(sizeof(int) * (size_t)(req->max_fds > 0 ? req->max_fds : 1));
  char *cbuf = calloc(1, cmsg_space);
  if (cbuf == NULL) {
    ambit_fail_set(&req->fail, "calloc", ENOMEM, NULL);
    return;
  }
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      ambit_fail_set(&req->fail, "recvmsg", ETIMEDOUT, "no message within timeoutMs");
      break;
    }
    struct pollfd pfd = {.fd = req->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)left);
    if (pr < 0) {
      if (errno == EINTR) continue;
      ambit_fail_set(&req->fail, "poll", errno, NULL);
      break;
    }
    if (pr == 0) continue; /* the deadline check above reports the timeout */
    if (pfd.revents & POLLNVAL) {
      ambit_fail_set(&req->fail, "poll", EBADF, "fd was closed");
      break;
    }
    struct iovec iov = {.iov_base = req->buf, .iov_len = req->max_bytes};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (req->max_fds > 0) {
      msg.msg_control = cbuf;
      msg.msg_controllen = cmsg_space;
    }
    ssize_t n = recvmsg(req->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      ambit_fail_set(&req->fail, "recvmsg", errno, NULL);
      break;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      int *p = (int *)CMSG_DATA(c);
      for (int i = 0; i < count; i++) {
        int got;
        memcpy(&got, p + i, sizeof got);
        if (req->nfds < AMBIT_MAX_FDS) req->fds[req->nfds++] = got;
        else close(got);
      }
    }
    /* CMSG_SPACE rounds up, so the kernel may deliver a few more fds than asked for. */
    if (req->nfds > req->max_fds) {
      close_all(req->fds, req->nfds);
      req->nfds = 0;
      ambit_fail_set(&req->fail, "recvmsg", EMSGSIZE, "MSG_CTRUNC: more fds than maxFds");
      break;
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
      /* A partial message cannot be trusted; drop whatever fds did arrive so none leak. */
      close_all(req->fds, req->nfds);
      req->nfds = 0;
      ambit_fail_set(&req->fail, "recvmsg", EMSGSIZE,
                     (msg.msg_flags & MSG_CTRUNC) ? "MSG_CTRUNC: more fds than maxFds" : "MSG_TRUNC: message larger than maxBytes");
      break;
    }
    if (n == 0 && req->nfds == 0) req->eof = true;
    req->len = (size_t)n;
    break;
  }
  free(cbuf);
}

static void recv_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  recv_req *req = data;
  if (env != NULL) {
    napi_value value = NULL;
    if (req->fail.err != 0) {
      napi_reject_deferred(env, req->deferred, ambit_fail_error(env, &req->fail));
    } else if (req->eof) {
      napi_get_null(env, &value);
      napi_resolve_deferred(env, req->deferred, value);
    } else {
      napi_value data_buf, fds, one;
      void *copy;
      napi_create_object(env, &value);
      napi_create_buffer_copy(env, req->len, req->buf, &copy, &data_buf);
      napi_create_array_with_length(env, (size_t)req->nfds, &fds);
      for (int i = 0; i < req->nfds; i++) {
        napi_create_int32(env, req->fds[i], &one);
        napi_set_element(env, fds, (uint32_t)i, one);
      }
      napi_set_named_property(env, value, "data", data_buf);
      napi_set_named_property(env, value, "fds", fds);
      napi_resolve_deferred(env, req->deferred, value);
    }
  } else {
    /* The environment is going away: nobody will own the fds. */
    close_all(req->fds, req->nfds);
  }
  free(req->buf);
  free(req);
}

static void *recv_thread(void *arg) {
  recv_req *req = arg;
  do_recv(req);
  close(req->fd);
  req->fd = -1;
  napi_threadsafe_function tsfn = req->tsfn;
  if (napi_call_threadsafe_function(tsfn, req, napi_tsfn_blocking) != napi_ok) {
    close_all(req->fds, req->nfds);
    free(req->buf);
    free(req);
  }
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

/* recvWithFds(fd, maxBytes, maxFds, timeoutMs) -> Promise<{data, fds} | null> */
napi_value ambit_recv_with_fds(napi_env env, napi_callback_info info) {
  static const char *fn = "recvWithFds";
  napi_value argv[4];
  int fd;
  int64_t max_bytes, max_fds, timeout_ms;
  if (!ambit_args(env, info, fn, argv, 4, "fd, maxBytes, maxFds, timeoutMs")) return NULL;
  if (!ambit_arg_fd(env, argv[0], fn, "fd", &fd)) return NULL;
  if (!ambit_arg_int(env, argv[1], fn, "maxBytes", 1, AMBIT_MAX_MSG, &max_bytes)) return NULL;
  if (!ambit_arg_int(env, argv[2], fn, "maxFds", 0, AMBIT_MAX_FDS, &max_fds)) return NULL;
  if (!ambit_arg_int(env, argv[3], fn, "timeoutMs", 1, INT32_MAX, &timeout_ms)) return NULL;

  napi_value promise;
  napi_deferred deferred;
  AMBIT_NAPI(napi_create_promise(env, &deferred, &promise));
  ambit_fail f = {0};
  int type = 0;
  socklen_t tlen = sizeof type;
  /* Fail fast, on this thread, for fds that are closed or not sockets. */
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0) {
    ambit_fail_set(&f, "getsockopt", errno, "SO_TYPE");
    goto fail;
  }
  /* The helper thread works on its own duplicate: if the owner closes `fd` meanwhile and the
   * number is reused, the thread still reads the socket it was given, never a stranger's. */
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (own < 0) {
    ambit_fail_set(&f, "fcntl", errno, "F_DUPFD_CLOEXEC");
    goto fail;
  }
  recv_req *req = calloc(1, sizeof *req);
  char *buf = malloc((size_t)max_bytes);
  if (req == NULL || buf == NULL) {
    free(req);
    free(buf);
    close(own);
    ambit_fail_set(&f, "malloc", ENOMEM, NULL);
    goto fail;
  }
  req->fd = own;
  req->buf = buf;
  req->max_bytes = (size_t)max_bytes;
  req->max_fds = (int)max_fds;
  req->timeout_ms = (int)timeout_ms;
  req->deferred = deferred;
  napi_value name;
  napi_create_string_utf8(env, "ambit.recvWithFds", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, recv_call_js,
                                      &req->tsfn) != napi_ok) {
    close(req->fd);
    free(req->buf);
    free(req);
    ambit_fail_set(&f, "napi_create_threadsafe_function", EINVAL, NULL);
    goto fail;
  }
  int rc = ambit_thread_start(recv_thread, req, 128 * 1024, true, NULL);
  if (rc != 0) {
    napi_release_threadsafe_function(req->tsfn, napi_tsfn_abort);
    close(req->fd);
    free(req->buf);
    free(req);
    ambit_fail_set(&f, "pthread_create", rc, NULL);
    goto fail;
  }
  return promise;
fail:
  AMBIT_NAPI(napi_reject_deferred(env, deferred, ambit_fail_error(env, &f)));
  return promise;
}

/* sendWithFds(fd, data, fds): one message; waits (bounded) if the socket is non-blocking and full. */
napi_value ambit_send_with_fds(napi_env env, napi_callback_info info) {
  static const char *fn = "sendWithFds";
  napi_value argv[3];
  int fd;
  if (!ambit_args(env, info, fn, argv, 3, "fd, data, fds")) return NULL;
  if (!ambit_arg_fd(env, argv[0], fn, "fd", &fd)) return NULL;
  bool is_buf = false, is_arr = false;
  napi_is_buffer(env, argv[1], &is_buf);
  if (!is_buf) {
    ambit_type_error(env, fn, "data", "must be a Buffer");
    return NULL;
  }
  void *data;
  size_t len;
  AMBIT_NAPI(napi_get_buffer_info(env, argv[1], &data, &len));
  if (len == 0 || len > AMBIT_MAX_MSG) {
    ambit_type_error(env, fn, "data", "must hold 1..1048576 bytes (stream sockets drop fds sent with no data)");
    return NULL;
  }
  napi_is_array(env, argv[2], &is_arr);
  if (!is_arr) {
    ambit_type_error(env, fn, "fds", "must be an array of fds");
    return NULL;
  }
  uint32_t nfds;
  AMBIT_NAPI(napi_get_array_length(env, argv[2], &nfds));
  if (nfds > AMBIT_MAX_FDS) {
    ambit_type_error(env, fn, "fds", "must hold at most 253 fds");
    return NULL;
  }
  int fds[AMBIT_MAX_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value e;
    char field[24];
    snprintf(field, sizeof field, "fds[%u]", i);
    AMBIT_NAPI(napi_get_element(env, argv[2], i, &e));
    if (!ambit_arg_fd(env, e, fn, field, &fds[i])) return NULL;
  }
  char cbuf[CMSG_SPACE(sizeof(int) * AMBIT_MAX_FDS)];
  memset(cbuf, 0, sizeof cbuf);
  size_t sent = 0;
  bool fds_sent = nfds == 0;
  int64_t deadline = now_ms() + 5000;
  while (sent < len) {
    struct iovec iov = {.iov_base = (char *)data + sent, .iov_len = len - sent};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (!fds_sent) {
      msg.msg_control = cbuf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        /* A non-blocking socket whose buffer is full: wait a bounded time for room. */
        int64_t left = deadline - now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
          ambit_throw_errno(env, "sendmsg", ETIMEDOUT, "socket buffer stayed full for 5s");
          return NULL;
        }
        continue;
      }
      ambit_throw_errno(env, "sendmsg", errno, NULL);
      return NULL;
    }
    /* The fds travel with the first byte; a stream socket may take the rest in later calls. */
    fds_sent = true;
    sent += (size_t)n;
  }
  return NULL;
}

static bool arg_unix_type(napi_env env, napi_value v, const char *fn, int *type) {
  napi_valuetype t = napi_undefined;
  char kind[16];
  if (v != NULL) napi_typeof(env, v, &t);
  if (t == napi_undefined) {
    *type = SOCK_STREAM;
    return true;
  }
  if (!ambit_arg_string(env, v, fn, "kind", kind, sizeof kind)) return false;
  if (strcmp(kind, "stream") == 0) *type = SOCK_STREAM;
  else if (strcmp(kind, "seqpacket") == 0) *type = SOCK_SEQPACKET;
  else return ambit_type_error(env, fn, "kind", "must be 'stream' or 'seqpacket'");
  return true;
}

/* unixConnect(path, kind?) -> fd (non-blocking, CLOEXEC) */
napi_value ambit_unix_connect(napi_env env, napi_callback_info info) {
  static const char *fn = "unixConnect";
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  struct sockaddr_un sun;
  int type;
  AMBIT_NAPI(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    ambit_type_error(env, fn, "path", "is required");
    return NULL;
  }
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (!ambit_arg_string(env, argv[0], fn, "path", sun.sun_path, sizeof sun.sun_path)) return NULL;
  if (!arg_unix_type(env, argc >= 2 ? argv[1] : NULL, fn, &type)) return NULL;
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ambit_throw_errno(env, "socket", errno, NULL);
    return NULL;
  }
  /* Connect blocking (a unix connect completes at once unless the backlog is full), then switch. */
  if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
    int err = errno;
    close(fd);
    ambit_throw_errno(env, "connect", err, sun.sun_path);
    return NULL;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    ambit_throw_errno(env, "fcntl", err, "O_NONBLOCK");
    return NULL;
  }
  napi_value out;
  AMBIT_NAPI(napi_create_int32(env, fd, &out));
  return out;
}

/* unixSocketPair(kind?) -> [fd, fd] (non-blocking, CLOEXEC) */
napi_value ambit_unix_socketpair(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  int type, sv[2];
  AMBIT_NAPI(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_unix_type(env, argc >= 1 ? argv[0] : NULL, "unixSocketPair", &type)) return NULL;
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
    ambit_throw_errno(env, "socketpair", errno, NULL);
    return NULL;
  }
  napi_value arr, a, b;
  AMBIT_NAPI(napi_create_array_with_length(env, 2, &arr));
  AMBIT_NAPI(napi_create_int32(env, sv[0], &a));
  AMBIT_NAPI(napi_create_int32(env, sv[1], &b));
  AMBIT_NAPI(napi_set_element(env, arr, 0, a));
  AMBIT_NAPI(napi_set_element(env, arr, 1, b));
  return arr;
}
