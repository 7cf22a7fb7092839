/*
 * Flows of the engine: one proxied TCP connection each. The app-facing socket is the captured
 * client (outbound) or our socket to the app (inbound); the other side is an HBONE stream
 * (engine_h2.c) or, for passthrough, a plain upstream socket relayed here. Half-close passes
 * through both ways; an error on either side resets both.
 */
#include "engine.h"

#include <sys/epoll.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void buf_reset(ebuf *b) {
  free(b->p);
  b->p = NULL;
  b->off = b->len = b->cap = 0;
}

void flow_buf_reset(ebuf *b) { buf_reset(b); }

bool flow_buf_append(ebuf *b, const char *p, size_t n) {
  if (b->off > 0 && b->off == b->len) {
    b->off = b->len = 0;
  } else if (b->off > 0) {
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->len + n > b->cap) {
    uint32_t cap = b->cap ? b->cap : 16 * 1024;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) return false;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += (uint32_t)n;
  return true;
}

static bool watch(engine *e, int fd, evsrc *src) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = src};
  return epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

flow *flow_new(engine *e, listener *l, uint8_t mode, int app_fd) {
  return flow_new_id(e, l, mode, app_fd, eng_next_id(e));
}

flow *flow_new_id(engine *e, listener *l, uint8_t mode, int app_fd, uint32_t id) {
  flow *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  f->app_ev.kind = EV_APP;
  f->up_ev.kind = EV_UP;
  f->e = e;
  f->l = l;
  l->refs++;
  f->mode = mode;
  f->app_fd = app_fd;
  f->up_fd = -1;
  f->app_w = 1;
  f->last_active = e->now;
  f->tw_slot = -1;
  f->id = id;
  eng_fmap_add(e, f);
  f->next = e->flows;
  if (e->flows) e->flows->prev = f;
  e->flows = f;
  __atomic_add_fetch(&e->nflows, 1, __ATOMIC_RELAXED);
  return f;
}

/* Start watching the app socket (after the decision, so no event comes before there is a plan). */
bool flow_watch_app(flow *f) {
  return watch(f->e, f->app_fd, &f->app_ev);
}

void flow_fail(flow *f, uint8_t kind) {
  if (f->fail == FAIL_NONE) f->fail = kind;
}

void flow_set_err(flow *f, const char *reason) {
  if (f->err == NULL && reason != NULL) f->err = strdup(reason);
}

/* Close with RST rather than FIN: the peer must not take a cut connection for a complete one. */
void flow_reset_fd(int fd) {
  if (fd < 0) return;
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static void flow_end(flow *f, bool reset) {
  if (f->dead) return;
  f->dead = 1;
  engine *e = f->e;
  eng_timer_del(f);
  if (f->queued) tconn_dequeue(f);
  else if (f->tc != NULL) {
    tconn *tc = f->tc;
    int32_t sid = f->sid;
    h2_detach(f);
    if (reset && sid > 0 && tc->h2 != NULL && !tc->dead) {
      nghttp2_submit_rst_stream(tc->h2, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
      eng_dirty(tc);
    }
  }
  if (f->link != NULL) {
    uint8_t kind = f->fail != FAIL_NONE ? f->fail : f->established ? FAIL_RESET : FAIL_LOCAL;
    link_publish(f->link, reset ? LINK_FAILED : LINK_DONE, kind, f->status, f->err);
  }
  /* Out of epoll before the close: a file description that lives on elsewhere (a copy JS or
   * another process holds) would keep its registration, and its next event would name this flow
   * after it is freed. */
  if (f->app_fd >= 0) epoll_ctl(e->epfd, EPOLL_CTL_DEL, f->app_fd, NULL);
  if (f->up_fd >= 0) epoll_ctl(e->epfd, EPOLL_CTL_DEL, f->up_fd, NULL);
  if (reset) {
    flow_reset_fd(f->app_fd);
    flow_reset_fd(f->up_fd);
  } else {
    if (f->app_fd >= 0) close(f->app_fd);
    if (f->up_fd >= 0) close(f->up_fd);
  }
  f->app_fd = f->up_fd = -1;
  if (!f->silent) eng_event(e, EVT_CLOSED, f);
  __atomic_sub_fetch(&e->nflows, 1, __ATOMIC_RELAXED);
  e->ndead++;
  f->gnext = e->dead_flows;
  e->dead_flows = f;
}

void flow_abort(flow *f, const char *reason) {
  flow_set_err(f, reason);
  flow_end(f, true);
}

void flow_free(flow *f) {
  listener_unref(f->l);
  if (f->link) link_unref(f->link);
  buf_reset(&f->to_app);
  buf_reset(&f->to_up);
  buf_reset(&f->early);
  free(f->authority);
  free(f->forwarded);
  free(f->hdrs);
  free(f->err);
  free(f->pend);
  free(f);
}

void flow_maybe_finish(flow *f) {
  if (f->dead) return;
  if (f->to_app.len > f->to_app.off || f->to_up.len > f->to_up.off) return;
  if (f->mode == M_H2) {
    if (f->sid >= 0 || f->queued || !f->app_shut) return;
  } else {
    if (!(f->app_eof && f->up_shut && f->peer_eof && f->app_shut)) return;
  }
  flow_end(f, false);
}

void flow_flush_to_app(flow *f) {
  ebuf *b = &f->to_app;
  if (f->dead || f->app_fd < 0 || f->dialing) return;
  while (b->len > b->off && f->app_w) {
    ssize_t n = write(f->app_fd, b->p + b->off, b->len - b->off);
    if (n > 0) {
      b->off += (uint32_t)n;
      f->to_app_n += (uint64_t)n;
      f->last_active = f->e->now;
      if (f->mode == M_H2 && f->tc != NULL && f->sid > 0 && f->tc->h2 != NULL) {
        nghttp2_session_consume(f->tc->h2, f->sid, (size_t)n);
        eng_dirty(f->tc);
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      f->app_w = 0;
      return;
    }
    char why[96];
    snprintf(why, sizeof why, "write to app: %s", ambit_errno_name(n < 0 ? errno : EIO));
    flow_abort(f, why);
    return;
  }
  if (b->len > b->off) return;
  buf_reset(b);
  if (f->peer_eof && !f->app_shut) {
    if (f->link != NULL) link_publish(f->link, LINK_PEER_EOF, FAIL_NONE, 0, NULL);
    shutdown(f->app_fd, SHUT_WR);
    f->app_shut = 1;
  }
  flow_maybe_finish(f);
}

/* Plain relay, one direction. Returns false once the flow is gone. */
static bool pump(flow *f, bool from_app) {
  engine *e = f->e;
  int src = from_app ? f->app_fd : f->up_fd;
  int dst = from_app ? f->up_fd : f->app_fd;
  ebuf *pend = from_app ? &f->to_up : &f->to_app;
  for (int rounds = 0; rounds < 64; rounds++) {
    if (pend->len > pend->off) {
      if (!(from_app ? f->up_w : f->app_w)) return true;
      ssize_t n = write(dst, pend->p + pend->off, pend->len - pend->off);
      if (n > 0) {
        pend->off += (uint32_t)n;
        f->last_active = e->now;
        if (!from_app) f->to_app_n += (uint64_t)n;
        if (pend->off == pend->len) buf_reset(pend);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        if (from_app) f->up_w = 0;
        else f->app_w = 0;
        return true;
      }
      char why[96];
      snprintf(why, sizeof why, "write to %s: %s", from_app ? "upstream" : "app", ambit_errno_name(n < 0 ? errno : EIO));
      flow_abort(f, why);
      return false;
    }
    if (from_app ? f->app_eof : f->peer_eof) {
      if (from_app && !f->up_shut) {
        shutdown(dst, SHUT_WR);
        f->up_shut = 1;
      } else if (!from_app && !f->app_shut) {
        shutdown(dst, SHUT_WR);
        f->app_shut = 1;
      }
      return true;
    }
    if (!(from_app ? f->app_r : f->up_r)) return true;
    ssize_t n = read(src, e->rbuf, sizeof e->rbuf);
    if (n > 0) {
      f->last_active = e->now;
      if (from_app) f->from_app_n += (uint64_t)n;
      /* a short read emptied the socket: the next bytes bring a new edge */
      if ((size_t)n < sizeof e->rbuf && !(from_app ? f->app_hup : f->up_hup)) {
        if (from_app) f->app_r = 0;
        else f->up_r = 0;
      }
      ssize_t w;
      do w = write(dst, e->rbuf, (size_t)n);
      while (w < 0 && errno == EINTR);
      if (w < 0 && errno != EAGAIN) {
        char why[96];
        snprintf(why, sizeof why, "write to %s: %s", from_app ? "upstream" : "app", ambit_errno_name(errno));
        flow_abort(f, why);
        return false;
      }
      if (w < 0) w = 0;
      if (!from_app) f->to_app_n += (uint64_t)w;
      if (w < n) {
        if (from_app) f->up_w = 0;
        else f->app_w = 0;
        if (!flow_buf_append(pend, e->rbuf + w, (size_t)(n - w))) {
          flow_abort(f, "out of memory");
          return false;
        }
      }
      continue;
    }
    if (n == 0) {
      if (from_app) {
        f->app_eof = 1;
        f->app_r = 0;
      } else {
        f->peer_eof = 1;
        f->up_r = 0;
      }
      eng_timer(f); /* half-closed: its shorter limit */
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (from_app) f->app_r = 0;
      else f->up_r = 0;
      return true;
    }
    char why[96];
    snprintf(why, sizeof why, "read from %s: %s", from_app ? "app" : "upstream", ambit_errno_name(errno));
    flow_abort(f, why);
    return false;
  }
  /* A busy pair gives the others a turn. What it left unread is not reported again by the
   * edge-triggered epoll unless more arrives, so re-arm the socket: EPOLL_CTL_MOD queues an
   * event for it if it is still ready, and the relay resumes on the next poll. */
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                           .data.ptr = from_app ? &f->app_ev : &f->up_ev};
  epoll_ctl(e->epfd, EPOLL_CTL_MOD, src, &ev);
  return true;
}

static void plain_pump(flow *f) {
  if (f->dead || f->dialing) return;
  if (!pump(f, true)) return;
  if (!pump(f, false)) return;
  flow_maybe_finish(f);
}

/* The socket we dialed finished connecting (or failed). */
static void dial_done(flow *f, int fd) {
  int soerr = ambit_socket_error(fd);
  f->dialing = 0;
  char why[96];
  if (soerr != 0) {
    snprintf(why, sizeof why, "connect: %s", ambit_errno_name(soerr));
    flow_fail(f, FAIL_CONNECT);
  }
  if (f->server) {
    h2_server_connected(f, soerr == 0, why);
    return;
  }
  if (soerr != 0) {
    flow_abort(f, why);
    return;
  }
  f->established = 1;
  f->last_active = f->e->now;
  eng_event(f->e, EVT_ESTABLISHED, f);
  plain_pump(f);
}

void flow_app_event(flow *f, uint32_t ev) {
  if (f->dead) return;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) f->app_r = 1;
  if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) f->app_hup = 1;
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) f->app_w = 1;
  if (f->dialing) {
    if (f->server) {
      if (f->app_w) dial_done(f, f->app_fd);
    } else if (ev & (EPOLLERR | EPOLLHUP)) {
      /* the captured client reset (or fully closed) while its upstream is still connecting:
       * nobody waits for that dial any more, so it must not sit in SYN-SENT until its deadline */
      eng_count(&f->e->ctr.dials_cancelled);
      flow_fail(f, FAIL_LOCAL);
      flow_abort(f, "client went away while dialing");
    }
    return;
  }
  if (f->mode == M_PLAIN) {
    plain_pump(f);
    return;
  }
  if (f->to_app.len > f->to_app.off && f->app_w) flow_flush_to_app(f);
  if (f->dead) return;
  if (f->app_r) h2_resume(f);
  /* An app socket in error whose stream waits on flow control would otherwise sit: read it. */
  if ((ev & EPOLLERR) && !f->deferred) {
    int soerr = ambit_socket_error(f->app_fd);
    if (soerr != 0) {
      char why[96];
      snprintf(why, sizeof why, "app socket: %s", ambit_errno_name(soerr));
      flow_abort(f, why);
    }
  }
}

void flow_up_event(flow *f, uint32_t ev) {
  if (f->dead) return;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) f->up_r = 1;
  if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) f->up_hup = 1;
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) f->up_w = 1;
  if (f->dialing) {
    if (f->up_w) dial_done(f, f->up_fd);
    return;
  }
  plain_pump(f);
}

/*
 * Where a dial goes: ip:port, optionally from a spoofed source (transparent). -1 with `why` for
 * an address that does not parse.
 */
bool eng_dial_addr(const char *ip, int port, const char *spoof, dialaddr *d, char *why, size_t cap) {
  memset(d, 0, sizeof *d);
  if (port < 1 || port > 65535) {
    snprintf(why, cap, "bad port %d", port);
    return false;
  }
  if (inet_pton(AF_INET, ip, &d->to.u.v4.sin_addr) == 1) {
    d->to.u.v4.sin_family = AF_INET;
    d->to.u.v4.sin_port = htons((uint16_t)port);
    d->to.len = sizeof d->to.u.v4;
  } else if (inet_pton(AF_INET6, ip, &d->to.u.v6.sin6_addr) == 1) {
    d->to.u.v6.sin6_family = AF_INET6;
    d->to.u.v6.sin6_port = htons((uint16_t)port);
    d->to.len = sizeof d->to.u.v6;
  } else {
    snprintf(why, cap, "bad address %.60s", ip);
    return false;
  }
  int family = d->to.u.sa.sa_family;
  if (spoof != NULL) {
    if (family == AF_INET && inet_pton(AF_INET, spoof, &d->from.u.v4.sin_addr) == 1) {
      d->from.u.v4.sin_family = AF_INET;
      d->from.len = sizeof d->from.u.v4;
    } else if (family == AF_INET6 && inet_pton(AF_INET6, spoof, &d->from.u.v6.sin6_addr) == 1) {
      d->from.u.v6.sin6_family = AF_INET6;
      d->from.len = sizeof d->from.u.v6;
    } else {
      snprintf(why, cap, "bad source address %.60s", spoof);
      return false;
    }
    d->spoof = true;
  }
  return true;
}

/* From a pool helper thread (under its lock): the socket a miss asked for, as a command. */
static void socket_ready(void *owner, uint32_t id, uint8_t what, int fd, int err) {
  engine *e = owner;
  jcmd *c = calloc(1, sizeof *c);
  if (c == NULL) {
    /* the dial waiting for it fails at its connect deadline */
    if (fd >= 0) close(fd);
    return;
  }
  c->type = C_SOCKET;
  c->id = id;
  c->t = what;
  c->fd = fd;
  c->status = err;
  eng_send_cmd(e, c);
}

/*
 * Options, bind and a non-blocking connect on a fresh socket of the listener's pod netns:
 * NODELAY, keepalive, the listener's mark, optionally the spoofed source. The fd, or -1 with
 * `why` (the socket is closed then); *connecting when the handshake is pending.
 */
int eng_dial_fd(listener *l, int fd, const dialaddr *d, bool *connecting, char *why, size_t cap) {
  ambit_fail fl = {0};
  int one = 1;
  int family = d->to.u.sa.sa_family;
  char ip[64];
  int port;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  eng_sockopts(l->e, fd);
  if (ambit_set_mark(fd, l->mark, &fl) != 0) {
    snprintf(why, cap, "SO_MARK: %s", ambit_errno_name(fl.err));
    close(fd);
    return -1;
  }
  if (d->spoof) {
    if (ambit_set_transparent(fd, family, &fl) != 0) {
      snprintf(why, cap, "transparent: %s", ambit_errno_name(fl.err));
      close(fd);
      return -1;
    }
    if (family == AF_INET) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, &d->from.u.sa, d->from.len) != 0) {
      int err = errno;
      ambit_addr_text(&d->from.u.sa, ip, sizeof ip, &port);
      snprintf(why, cap, "bind %.60s: %s", ip, ambit_errno_name(err));
      close(fd);
      return -1;
    }
  }
  *connecting = false;
  if (connect(fd, &d->to.u.sa, d->to.len) != 0) {
    if (errno != EINPROGRESS) {
      int err = errno;
      ambit_addr_text(&d->to.u.sa, ip, sizeof ip, &port);
      snprintf(why, cap, "connect %.60s port %d: %s", ip, port, ambit_errno_name(err));
      close(fd);
      return -1;
    }
    *connecting = true;
  }
  return fd;
}

/*
 * A socket from the listener's pod netns pool, dialing d (eng_dial_fd). The pool was pinned when
 * the listener opened, so this never makes a thread: when it is empty the socket is asked of its
 * helper thread and arrives later as a C_SOCKET command for (what, id): DIAL_PENDING. -1 with
 * `why` when it cannot.
 */
int eng_dial(listener *l, const dialaddr *d, uint8_t what, uint32_t id, bool *connecting, char *why, size_t cap) {
  if (l->pool == NULL) {
    snprintf(why, cap, "socket: no socket pool for the netns");
    return -1;
  }
  int err = 0;
  int fd = ambit_pool_get(l->pool, d->to.u.sa.sa_family, socket_ready, l->e, id, what, &err);
  if (fd == -1) {
    eng_count(&l->e->ctr.pool_waits);
    return DIAL_PENDING;
  }
  if (fd < 0) {
    snprintf(why, cap, "socket: %s", ambit_errno_name(err));
    return -1;
  }
  return eng_dial_fd(l, fd, d, connecting, why, cap);
}

/* The flow's dialed socket is connecting: watch it as the app (inbound) or the upstream side. */
static int flow_dialed(flow *f, int fd, char *why, size_t cap) {
  engine *e = f->e;
  evsrc *src;
  if (f->server) {
    f->app_fd = fd;
    f->app_w = 0;
    src = &f->app_ev;
  } else {
    f->up_fd = fd;
    src = &f->up_ev;
    eng_user_timeout(e, fd); /* a passthrough upstream: another host, as a rule */
  }
  if (!watch(e, fd, src)) {
    snprintf(why, cap, "epoll: %s", ambit_errno_name(errno));
    if (f->server) f->app_fd = -1;
    else f->up_fd = -1;
    f->dialing = 0;
    close(fd);
    return -1;
  }
  return 0;
}

/*
 * Dial for the flow (the app, inbound; the upstream, passthrough) and watch the socket; or, on a
 * pool miss, wait for the socket (flow_socket). The connect deadline covers both waits.
 */
int flow_dial(flow *f, const char *ip, int port, const char *spoof, char *why, size_t cap) {
  engine *e = f->e;
  dialaddr d;
  bool connecting;
  if (!eng_dial_addr(ip, port, spoof, &d, why, cap)) return -1;
  int fd = eng_dial(f->l, &d, DIAL_FLOW, f->id, &connecting, why, cap);
  if (fd == -1) return -1;
  f->dialing = 1;
  f->deadline = eng_now(e) + e->connect_ms;
  eng_timer(f);
  if (fd == DIAL_PENDING) {
    f->pend = malloc(sizeof *f->pend);
    if (f->pend == NULL) {
      f->dialing = 0;
      snprintf(why, cap, "out of memory");
      return -1;
    }
    *f->pend = d;
    return 0;
  }
  return flow_dialed(f, fd, why, cap);
}

/* The socket a pool miss waited for (or the errno it failed with): the dial goes on. */
void flow_socket(flow *f, int *fd, int err) {
  if (f->dead || f->pend == NULL) return;
  dialaddr *d = f->pend;
  f->pend = NULL;
  char why[200];
  bool connecting;
  int s = -1;
  if (*fd < 0) {
    snprintf(why, sizeof why, "socket: %s", ambit_errno_name(err ? err : EIO));
  } else {
    s = eng_dial_fd(f->l, *fd, d, &connecting, why, sizeof why);
    *fd = -1;
  }
  free(d);
  if (s >= 0 && flow_dialed(f, s, why, sizeof why) == 0) return;
  f->dialing = 0;
  flow_fail(f, FAIL_CONNECT);
  if (f->server) h2_server_connected(f, false, why);
  else flow_abort(f, why);
}
