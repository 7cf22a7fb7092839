/*
 * Flows of the engine: one proxied TCP connection each. The app-facing socket is the captured
 * client (outbound) or our socket to the app (inbound); the other side is an HBONE stream
 * (engine_h2.c) or, for passthrough, a plain upstream socket relayed here. Half-close passes
 * through both ways; an error on either side resets both.
 */
#include "engine.h"

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
  if (reset) {
    flow_reset_fd(f->app_fd);
    flow_reset_fd(f->up_fd);
  } else {
    if (f->app_fd >= 0) close(f->app_fd);
    if (f->up_fd >= 0) close(f->up_fd);
  }
  f->app_fd = f->up_fd = -1;
  if (!f->silent) eng_event(e, 2, f);
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
  if (soerr != 0) snprintf(why, sizeof why, "connect: %s", ambit_errno_name(soerr));
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
  eng_event(f->e, 1, f);
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
 * A socket made inside the flow's pod netns, marked, optionally with a spoofed source, connecting
 * to ip:port. Watched as the app side (inbound) or the upstream side (outbound passthrough).
 */
/*
 * A non-blocking TCP socket made in the listener's pod netns (from the netns socket pool),
 * NODELAY, with the listener's mark, optionally bound to a spoofed source (transparent), and
 * connecting to ip:port. -1 with `why` when it cannot; *connecting when the handshake is pending.
 */
int eng_dial(listener *l, const char *ip, int port, const char *spoof, bool *connecting, char *why, size_t cap) {
  ambit_addr addr, local;
  memset(&addr, 0, sizeof addr);
  memset(&local, 0, sizeof local);
  if (port < 1 || port > 65535) {
    snprintf(why, cap, "bad port %d", port);
    return -1;
  }
  if (inet_pton(AF_INET, ip, &addr.u.v4.sin_addr) == 1) {
    addr.u.v4.sin_family = AF_INET;
    addr.u.v4.sin_port = htons((uint16_t)port);
    addr.len = sizeof addr.u.v4;
  } else if (inet_pton(AF_INET6, ip, &addr.u.v6.sin6_addr) == 1) {
    addr.u.v6.sin6_family = AF_INET6;
    addr.u.v6.sin6_port = htons((uint16_t)port);
    addr.len = sizeof addr.u.v6;
  } else {
    snprintf(why, cap, "bad address %.60s", ip);
    return -1;
  }
  int family = addr.u.sa.sa_family;
  if (spoof != NULL) {
    if (family == AF_INET && inet_pton(AF_INET, spoof, &local.u.v4.sin_addr) == 1) {
      local.u.v4.sin_family = AF_INET;
      local.len = sizeof local.u.v4;
    } else if (family == AF_INET6 && inet_pton(AF_INET6, spoof, &local.u.v6.sin6_addr) == 1) {
      local.u.v6.sin6_family = AF_INET6;
      local.len = sizeof local.u.v6;
    } else {
      snprintf(why, cap, "bad source address %.60s", spoof);
      return -1;
    }
  }
  ambit_fail fl = {0};
  int fd = ambit_pool_take(l->nsfd, family);
  if (fd < 0 && ambit_socket_in_netns(l->nsfd, family, SOCK_STREAM, &fd, &fl) != 0) {
    snprintf(why, cap, "socket: %s", ambit_errno_name(fl.err));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  eng_sockopts(l->e, fd);
  if (ambit_set_mark(fd, l->mark, &fl) != 0) {
    snprintf(why, cap, "SO_MARK: %s", ambit_errno_name(fl.err));
    close(fd);
    return -1;
  }
  if (spoof != NULL) {
    if (ambit_set_transparent(fd, family, &fl) != 0) {
      snprintf(why, cap, "transparent: %s", ambit_errno_name(fl.err));
      close(fd);
      return -1;
    }
    if (family == AF_INET) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, &local.u.sa, local.len) != 0) {
      snprintf(why, cap, "bind %.60s: %s", spoof, ambit_errno_name(errno));
      close(fd);
      return -1;
    }
  }
  *connecting = false;
  if (connect(fd, &addr.u.sa, addr.len) != 0) {
    if (errno != EINPROGRESS) {
      snprintf(why, cap, "connect %.60s port %d: %s", ip, port, ambit_errno_name(errno));
      close(fd);
      return -1;
    }
    *connecting = true;
  }
  return fd;
}

/* Dial for the flow (the app, inbound; the upstream, passthrough) and watch the socket. */
int flow_dial(flow *f, const char *ip, int port, const char *spoof, int *out_fd, char *why, size_t cap) {
  engine *e = f->e;
  bool connecting;
  int fd = eng_dial(f->l, ip, port, spoof, &connecting, why, cap);
  if (fd < 0) return -1;
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
  f->dialing = 1;
  f->deadline = eng_now(e) + e->connect_ms;
  if (!watch(e, fd, src)) {
    snprintf(why, cap, "epoll: %s", ambit_errno_name(errno));
    if (f->server) f->app_fd = -1;
    else f->up_fd = -1;
    f->dialing = 0;
    close(fd);
    return -1;
  }
  *out_fd = fd;
  return 0;
}
