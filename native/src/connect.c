/*
 * connectInNetns: a TCP connection made from inside a pod's netns.
 *
 * Only socket() has to run inside the netns. Creating a thread per call for that (netns.c) costs
 * a clone, a scheduling round trip and a join on the JS thread: in the node agent it was the
 * largest single item of the server side's CPU profile for new connections. So each netns that is
 * connected from gets a small pool of fresh sockets, kept full by one long-lived helper thread
 * that entered the netns once and never leaves it; the JS thread only pops an fd under a mutex.
 * A miss (first call, pool empty, too many pools) falls back to the per-call thread; not for the
 * engine, whose thread never makes a thread: it pins the pool when a pod's listeners open and has
 * a miss answered by the helper (ambit_pool_pin, ambit_pool_get). A pool with no pin and no use
 * for POOL_IDLE_SEC closes its sockets and its thread exits, so it never keeps a deleted pod's
 * netns alive for longer than that. Options, bind and a non-blocking connect() follow on
 * the calling thread. Waiting for the handshake is event driven:
 * a uv_poll on the event loop plus a uv_timer for the deadline. That keeps both the JS thread and
 * the libuv thread pool free, so many slow or blackholed upstreams cannot starve file or DNS work.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* Ready sockets kept per netns and family: enough for a burst of parallel new connections. */
#define POOL_TARGET 8
/* Pools started by connectInNetns alone (one helper thread each) alive at once; beyond that, its
 * calls use the per-call thread. Pools pinned by engine listeners do not count: a pod's listeners
 * cost their own fds already, and the engine never falls back to a thread of its own. */
#define POOL_MAX 128
#define POOL_IDLE_SEC 3

/* A socket asked for while the pool was empty (the engine's miss): made by the helper, handed to done. */
typedef struct pool_req {
  struct pool_req *next;
  ambit_pool_done done;
  void *owner; /* NULL once forgotten (ambit_pool_forget) */
  uint32_t id;
  uint8_t what;
  int fam;
} pool_req;

struct ns_pool {
  struct ns_pool *next;
  dev_t dev;
  ino_t ino;
  int nsfd; /* a private dup, owned by the helper thread */
  bool want[2]; /* families asked for: [0] IPv4, [1] IPv6 */
  int count[2];
  int fds[2][POOL_TARGET];
  bool entered; /* the helper is in the netns */
  bool dead; /* the helper could not enter the netns, or is leaving */
  int err; /* dead: why (setns's errno) */
  int pins; /* engine listeners (and sources) of this netns: a pinned pool never goes idle */
  pool_req *reqs, *reqs_tail; /* misses waiting for a socket, oldest first */
  pool_req *inflight; /* the request the helper is making a socket for (outside the lock) */
  time_t last_use; /* CLOCK_MONOTONIC seconds */
  pthread_cond_t cond;
};

/* One lock for the pool list and every pool: takes are a few instructions, refills are rare. */
static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
/* pool helpers announce that they entered their netns (or could not): ambit_pool_pin waits for it */
static pthread_cond_t pools_entered = PTHREAD_COND_INITIALIZER;
static ns_pool *pools;
static int npools, npinned;

static time_t mono_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec;
}

static void *pool_thread(void *arg) {
  ns_pool *p = arg;
  pthread_setname_np(pthread_self(), "ambit-nspool");
  /* This thread lives in the pod netns until it exits; it never switches back. */
  bool entered = setns(p->nsfd, CLONE_NEWNET) == 0;
  int setns_err = errno;
  pthread_mutex_lock(&pools_mu);
  if (!entered) {
    p->dead = true;
    p->err = setns_err;
  }
  p->entered = entered;
  pthread_cond_broadcast(&pools_entered);
  while (!p->dead) {
    pool_req *q = p->reqs;
    if (q != NULL) {
      /* a miss first: someone waits for exactly this socket */
      p->reqs = q->next;
      if (p->reqs == NULL) p->reqs_tail = NULL;
      p->inflight = q;
      pthread_mutex_unlock(&pools_mu);
      int fd = socket(q->fam ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      int err = fd < 0 ? errno : 0;
      pthread_mutex_lock(&pools_mu);
      p->inflight = NULL;
      if (q->owner != NULL) q->done(q->owner, q->id, q->what, fd, err);
      else if (fd >= 0) close(fd);
      free(q);
      continue;
    }
    int fam = -1;
    for (int i = 0; i < 2; i++) {
      if (p->want[i] && p->count[i] < POOL_TARGET) {
        fam = i;
        break;
      }
    }
    if (fam >= 0) {
      pthread_mutex_unlock(&pools_mu);
      int fd = socket(fam ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      pthread_mutex_lock(&pools_mu);
      if (fd < 0) {
        /* Out of fds or memory: stop refilling this family until the next take asks again. */
        p->want[fam] = false;
      } else if (p->dead || p->count[fam] >= POOL_TARGET) {
        close(fd);
      } else {
        p->fds[fam][p->count[fam]++] = fd;
      }
      continue;
    }
    if (p->pins > 0) {
      pthread_cond_wait(&p->cond, &pools_mu);
      continue;
    }
    time_t now = mono_sec();
    if (now - p->last_use >= POOL_IDLE_SEC) break;
    struct timespec until = {.tv_sec = p->last_use + POOL_IDLE_SEC, .tv_nsec = 0};
    pthread_cond_timedwait(&p->cond, &pools_mu, &until);
  }
  p->dead = true;
  /* Unlink first: from here on no take can see this pool. */
  for (ns_pool **pp = &pools; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  npools--;
  for (int i = 0; i < 2; i++) {
    while (p->count[i] > 0) close(p->fds[i][--p->count[i]]);
  }
  /* only when the helper never entered the netns: misses are answered with the error */
  while (p->reqs != NULL) {
    pool_req *q = p->reqs;
    p->reqs = q->next;
    if (q->owner != NULL) q->done(q->owner, q->id, q->what, -1, p->err ? p->err : EBADF);
    free(q);
  }
  p->reqs_tail = NULL;
  /* a pool that failed while pinned: its pinners still hold it until they unpin */
  while (p->pins > 0) pthread_cond_wait(&p->cond, &pools_mu);
  pthread_mutex_unlock(&pools_mu);
  close(p->nsfd);
  pthread_cond_destroy(&p->cond);
  free(p);
  return NULL;
}

/* Start a pool for the netns (called with pools_mu held). NULL when it cannot (*err says why). */
static ns_pool *pool_start(int nsfd, const struct stat *st, int fi, int pins, int *err) {
  if (pins == 0 && npools - npinned >= POOL_MAX) {
    *err = EAGAIN;
    return NULL;
  }
  ns_pool *p = calloc(1, sizeof *p);
  if (p == NULL) {
    *err = ENOMEM;
    return NULL;
  }
  p->dev = st->st_dev;
  p->ino = st->st_ino;
  if (fi & 1) p->want[0] = true;
  if (fi & 2) p->want[1] = true;
  p->pins = pins;
  p->last_use = mono_sec();
  p->nsfd = fcntl(nsfd, F_DUPFD_CLOEXEC, 3);
  *err = errno;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int crc = pthread_cond_init(&p->cond, &ca);
  pthread_condattr_destroy(&ca);
  if (p->nsfd < 0 || crc != 0) {
    if (p->nsfd >= 0) close(p->nsfd);
    if (crc == 0) pthread_cond_destroy(&p->cond);
    else *err = crc;
    free(p);
    return NULL;
  }
  /* a helper thread, parked in the netns until the pool goes idle (never while pinned) */
  int rc = ambit_thread_start(pool_thread, p, 64 * 1024, true, NULL);
  if (rc != 0) {
    close(p->nsfd);
    pthread_cond_destroy(&p->cond);
    free(p);
    *err = rc;
    return NULL;
  }
  p->next = pools;
  pools = p;
  npools++;
  if (pins > 0) npinned++;
  return p;
}

static ns_pool *pool_find(const struct stat *st) {
  ns_pool *p = pools;
  while (p != NULL && !(p->dev == st->st_dev && p->ino == st->st_ino && !p->dead)) p = p->next;
  return p;
}

/* A fresh socket of `family` created in the netns, from its pool; -1 on a miss (never fails). */
int ambit_pool_take(int nsfd, int family) {
  struct stat st;
  if (fstat(nsfd, &st) != 0) return -1;
  int fi = family == AF_INET6 ? 1 : 0;
  int fd = -1, err;
  pthread_mutex_lock(&pools_mu);
  ns_pool *p = pool_find(&st);
  if (p == NULL) {
    pool_start(nsfd, &st, 1 << fi, 0, &err);
  } else {
    p->last_use = mono_sec();
    p->want[fi] = true;
    if (p->count[fi] > 0) fd = p->fds[fi][--p->count[fi]];
    /* Wake the helper only at half empty: a futex wake per connection costs more than it saves. */
    if (p->count[fi] <= POOL_TARGET / 2) pthread_cond_signal(&p->cond);
  }
  pthread_mutex_unlock(&pools_mu);
  return fd;
}

ns_pool *ambit_pool_pin(int nsfd, int families, ambit_fail *f) {
  struct stat st;
  if (fstat(nsfd, &st) != 0) {
    ambit_fail_set(f, "fstat", errno, "netns");
    return NULL;
  }
  int err = 0;
  pthread_mutex_lock(&pools_mu);
  ns_pool *p = pool_find(&st);
  if (p != NULL) {
    if (p->pins++ == 0) npinned++;
    if (families & 1) p->want[0] = true;
    if (families & 2) p->want[1] = true;
    pthread_cond_signal(&p->cond);
  } else {
    p = pool_start(nsfd, &st, families, 1, &err);
  }
  /* ready when this returns: the helper is in the netns (a failure to enter it is this call's) */
  while (p != NULL && !p->entered && !p->dead) pthread_cond_wait(&pools_entered, &pools_mu);
  if (p != NULL && p->dead) {
    err = p->err ? p->err : EBADF;
    if (--p->pins == 0) npinned--;
    pthread_cond_signal(&p->cond);
    p = NULL;
  }
  pthread_mutex_unlock(&pools_mu);
  if (p == NULL) ambit_fail_set(f, err == EAGAIN || err == ENOMEM ? "pthread_create" : "setns", err, "netns socket pool");
  return p;
}

void ambit_pool_unpin(ns_pool *p) {
  if (p == NULL) return;
  pthread_mutex_lock(&pools_mu);
  if (--p->pins == 0) {
    npinned--;
    p->last_use = mono_sec(); /* idle from now: the netns is let go POOL_IDLE_SEC later */
  }
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&pools_mu);
}

int ambit_pool_get(ns_pool *p, int family, ambit_pool_done done, void *owner, uint32_t id, uint8_t what, int *err) {
  int fi = family == AF_INET6 ? 1 : 0;
  int fd = -1;
  pthread_mutex_lock(&pools_mu);
  if (p->dead) {
    *err = p->err ? p->err : EBADF;
    fd = -2;
  } else {
    p->want[fi] = true;
    if (p->count[fi] > 0 && p->reqs == NULL) {
      fd = p->fds[fi][--p->count[fi]];
      if (p->count[fi] <= POOL_TARGET / 2) pthread_cond_signal(&p->cond);
    } else {
      pool_req *q = calloc(1, sizeof *q);
      if (q == NULL) {
        *err = ENOMEM;
        fd = -2;
      } else {
        q->done = done;
        q->owner = owner;
        q->id = id;
        q->what = what;
        q->fam = fi;
        if (p->reqs_tail) p->reqs_tail->next = q;
        else p->reqs = q;
        p->reqs_tail = q;
        pthread_cond_signal(&p->cond);
      }
    }
  }
  pthread_mutex_unlock(&pools_mu);
  return fd;
}

void ambit_pool_forget(void *owner) {
  pthread_mutex_lock(&pools_mu);
  for (ns_pool *p = pools; p != NULL; p = p->next) {
    if (p->inflight != NULL && p->inflight->owner == owner) p->inflight->owner = NULL;
    for (pool_req *q = p->reqs; q != NULL; q = q->next) {
      if (q->owner == owner) q->owner = NULL;
    }
  }
  pthread_mutex_unlock(&pools_mu);
}

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
  int soerr = ambit_socket_error(req->fd);
  if (soerr != 0) {
    ambit_fail_set(&req->fail, "connect", soerr, NULL);
  } else if (status < 0) {
    ambit_fail_set(&req->fail, "connect", -status, "poll");
  }
  settle(req);
}

static void on_timeout(uv_timer_t *t) {
  connect_req *req = t->data;
  if (req->settled) return;
  /* libuv runs due timers before it polls: after the event loop was blocked past the deadline,
   * the handshake may have finished (or been refused) long ago. Ask the socket before calling
   * it a timeout. */
  struct pollfd pfd = {.fd = req->fd, .events = POLLOUT};
  if (poll(&pfd, 1, 0) == 1) {
    on_writable(&req->poll, 0, UV_WRITABLE);
    return;
  }
  ambit_fail_set(&req->fail, "connect", ETIMEDOUT, "no answer within timeoutMs");
  settle(req);
}

/* connectInNetns(netns, {address, port, mark?, localAddress?, localPort?, transparent?, timeoutMs?}) */
napi_value ambit_connect_in_netns(napi_env env, napi_callback_info info) {
  static const char *fn = "connectInNetns";
  napi_value argv[2];
  napi_value v;
  bool transparent, has_local;
  char ip[64], local_ip[64];
  int64_t port, mark, local_port, timeout_ms;
  if (!ambit_args_with_opts(env, info, fn, argv)) return NULL;
  if (!ambit_opt_endpoint(env, argv[1], fn, ip, sizeof ip, 1, &port)) return NULL;
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
  int rc = 0;
  fd = ambit_pool_take(nsfd, family);
  if (fd < 0) rc = ambit_socket_in_netns(nsfd, family, SOCK_STREAM, &fd, &f);
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
