/*
 * The engine thread: one epoll set per engine, waited on by a thread of its own, so carrying
 * bytes never waits for the JS thread (or its garbage collector) and costs one epoll_wait per
 * wake-up, not Node's loop plus a nested epoll. It owns every listener, flow and HBONE
 * connection once they are handed over, and talks to JavaScript only through two queues:
 *   - messages to JS (engine_js.c turns them into the callbacks): a captured connection needs a
 *     plan, a CONNECT needs a decision, a peer chain needs verifying, an accepted HBONE socket
 *     needs its listener's TLS context, a flow was established or closed. Posted at the end of a
 *     batch (one lock, one uv_async_send per batch); news alone (eng_event of a captured flow)
 *     may wait up to NEWS_MS for a batch with something urgent.
 *   - commands from JS (answers and API calls), read when the eventfd wakes the thread.
 * A flow or connection waiting for an answer just waits; answers naming something that died
 * meanwhile are dropped. Objects that an event of the current batch may still name are only
 * marked dead and freed at the end of the batch (eng_reap).
 */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* TLS connections (HBONE sessions) one engine holds at most. */
#define MAX_TCONNS 8192
/* what epoll's data.ptr is for the eventfd */
static evsrc wake_src = {.kind = 0};

uint64_t eng_now(engine *e) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void eng_count(uint32_t *c) { __atomic_add_fetch(c, 1, __ATOMIC_RELAXED); }

/*
 * Dead peers are found by the kernel too, not only by HTTP/2 PING: keepalive probes an idle
 * connection (every socket the engine owns), and TCP_USER_TIMEOUT (eng_user_timeout) bounds how
 * long sent data or a probe may stay unacknowledged before the connection fails with ETIMEDOUT
 * (else the kernel retransmits for about 15 minutes).
 */
void eng_sockopts(engine *e, int fd) {
  int one = 1;
  if (e->ka_idle_s > 0) {
    int idle = (int)e->ka_idle_s, intvl = (int)e->ka_intvl_s, cnt = (int)e->ka_cnt;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
}

/*
 * TCP_USER_TIMEOUT, on sockets to other hosts only (HBONE tunnels, passthrough upstreams): Linux
 * also counts a receive window that stays closed against it, so on a socket to the pod's own app
 * it would cut a reader that pauses longer; a local app's death is seen at once anyway (RST/FIN).
 */
void eng_user_timeout(engine *e, int fd) {
  if (e->user_timeout_ms == 0) return;
  unsigned int ut = e->user_timeout_ms;
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
}

void eng_log(engine *e, int level, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  jmsg *m = eng_msg(J_LOG);
  if (m == NULL) return;
  m->kind = (uint8_t)level;
  m->s[0] = strdup(line);
  eng_post(e, m);
}

void eng_dirty(tconn *tc) {
  if (tc->dirty || tc->dead) return;
  tc->dirty = 1;
  tc->dnext = tc->e->dirty;
  tc->e->dirty = tc;
}

void eng_flush_dirty(engine *e) {
  while (e->dirty) {
    tconn *tc = e->dirty;
    e->dirty = tc->dnext;
    tc->dnext = NULL;
    tc->dirty = 0;
    if (!tc->dead) tconn_flush(tc);
  }
}

/* ---- messages to JS ---- */

jmsg *eng_msg(uint8_t type) {
  jmsg *m = calloc(1, sizeof *m);
  if (m) m->type = type;
  return m;
}

void eng_msg_free(jmsg *m) {
  for (int i = 0; i < 5; i++) free(m->s[i]);
  for (int i = 0; i < m->nder; i++) free(m->der[i]);
  free(m->der);
  free(m->der_len);
  if (m->ctx) tlsctx_unref(m->ctx);
  free(m);
}

void eng_cmd_free(jcmd *c) {
  if (c->fd >= 0) {
    /* an adopted socket nobody took (the flow died before the answer, or the engine did) */
    if (c->link) link_publish(c->link, LINK_FAILED, FAIL_LOCAL, 0, "hbone: the stream was gone before it was taken");
    flow_reset_fd(c->fd);
  }
  if (c->link) link_unref(c->link);
  free(c->ip);
  free(c->spoof);
  free(c->key);
  free(c->tag);
  free(c->hdrs);
  free(c->peer);
  free(c->reason);
  if (c->ctx) tlsctx_unref(c->ctx);
  free(c);
}

void eng_post(engine *e, jmsg *m) {
  if (m == NULL) return;
  if (e->stop) {
    eng_msg_free(m);
    return;
  }
  m->next = NULL;
  if (e->pend_tail) e->pend_tail->next = m;
  else {
    e->pend_head = m;
    e->pend_since = e->now;
  }
  e->pend_tail = m;
  e->pend_n++;
  if (!m->news) e->pend_urgent = true;
}

/* When the waiting news must go even with nothing urgent (UINT64_MAX: nothing waits). */
static uint64_t news_due(engine *e) {
  return e->pend_head == NULL ? UINT64_MAX : e->pend_since + NEWS_MS;
}

static void post_pending(engine *e) {
  if (e->pend_head == NULL) return;
  if (!e->pend_urgent && e->pend_n < NEWS_MAX && !e->stop && e->now < news_due(e)) return;
  pthread_mutex_lock(&e->mu);
  if (e->out_tail) e->out_tail->next = e->pend_head;
  else e->out_head = e->pend_head;
  e->out_tail = e->pend_tail;
  pthread_mutex_unlock(&e->mu);
  e->pend_head = e->pend_tail = NULL;
  e->pend_n = 0;
  e->pend_urgent = false;
  uv_async_send(&e->async);
}

uint32_t eng_next_id(engine *e) {
  uint32_t id;
  do id = __atomic_add_fetch(&e->next_id, 1, __ATOMIC_RELAXED);
  while (id == 0);
  return id;
}

void link_unref(flowlink *k) {
  if (__atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) == 0) free(k);
}

void link_publish(flowlink *k, uint8_t state, uint8_t fail, uint16_t status, const char *reason) {
  uint8_t cur = __atomic_load_n(&k->state, __ATOMIC_ACQUIRE);
  if (cur == LINK_FAILED || cur == LINK_DONE || cur >= state) return;
  if (state == LINK_FAILED) {
    k->fail = fail;
    k->status = status;
    snprintf(k->reason, sizeof k->reason, "%s", reason ? reason : "hbone: stream failed");
  }
  __atomic_store_n(&k->state, state, __ATOMIC_RELEASE);
}

void eng_event(engine *e, int kind, flow *f) {
  if (kind == EVT_ESTABLISHED && f->link) __atomic_store_n(&f->link->established, 1, __ATOMIC_RELEASE);
  if (kind == EVT_ESTABLISHED) eng_timer(f); /* established: the idle limit from here */
  jmsg *m = eng_msg(J_EVENT);
  if (m == NULL) return;
  m->kind = (uint8_t)kind;
  m->id = f->id;
  m->n1 = (double)f->from_app_n;
  m->n2 = (double)f->to_app_n;
  m->p1 = kind == EVT_CLOSED ? f->fail : FAIL_NONE;
  /* telemetry, unless JS holds the flow's socket (a waypoint's stream waits for 'established') */
  m->news = f->link == NULL;
  if (f->err) m->s[0] = strdup(f->err);
  eng_post(e, m);
}

/* ---- ids, lifetimes ---- */

void eng_fmap_add(engine *e, flow *f) {
  flow **b = &e->fmap[f->id & (FLOW_BUCKETS - 1)];
  f->hnext = *b;
  *b = f;
}

static void fmap_del(engine *e, flow *f) {
  for (flow **pp = &e->fmap[f->id & (FLOW_BUCKETS - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == f) {
      *pp = f->hnext;
      return;
    }
  }
}

static flow *fmap_get(engine *e, uint32_t id) {
  for (flow *f = e->fmap[id & (FLOW_BUCKETS - 1)]; f != NULL; f = f->hnext) {
    if (f->id == id) return f->dead ? NULL : f;
  }
  return NULL;
}

void eng_tmap_add(engine *e, tconn *tc) {
  tconn **b = &e->tmap[tc->id & (TCONN_BUCKETS - 1)];
  tc->hnext = *b;
  *b = tc;
}

static void tmap_del(engine *e, tconn *tc) {
  for (tconn **pp = &e->tmap[tc->id & (TCONN_BUCKETS - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == tc) {
      *pp = tc->hnext;
      return;
    }
  }
}

static tconn *tconn_by_id(engine *e, uint32_t id) {
  for (tconn *tc = e->tmap[id & (TCONN_BUCKETS - 1)]; tc != NULL; tc = tc->hnext) {
    if (tc->id == id) return tc->dead ? NULL : tc;
  }
  return NULL;
}

/* ---- the deadline wheel ---- */

static void wheel_unlink(engine *e, flow *f) {
  if (f->tw_slot == -1) return;
  flow **head = f->tw_slot == -2 ? &e->wheel_tmp : &e->wheel[f->tw_slot];
  if (f->twprev) f->twprev->twnext = f->twnext;
  else *head = f->twnext;
  if (f->twnext) f->twnext->twprev = f->twprev;
  f->twprev = f->twnext = NULL;
  f->tw_slot = -1;
}

static void wheel_insert(engine *e, flow *f, uint64_t due) {
  uint64_t at = due / e->tick_ms;
  if (at < e->wheel_next) at = e->wheel_next; /* already due: the next tick sees it */
  int32_t slot = (int32_t)(at % WHEEL_SLOTS);
  f->due = due;
  f->tw_slot = slot;
  f->twprev = NULL;
  f->twnext = e->wheel[slot];
  if (f->twnext) f->twnext->twprev = f;
  e->wheel[slot] = f;
}

/* The flow's next deadline (0: none): the dial's, or the idle / half-closed limit from the last
 * byte moved once it is established. */
static uint64_t flow_due(flow *f) {
  engine *e = f->e;
  if (f->dead) return 0;
  if (f->dialing) return f->deadline;
  /* before it is established a flow waits on other deadlines (the decision, the tunnel's
   * handshake and keepalive) */
  if (!f->established) return 0;
  uint32_t limit = f->app_eof || f->peer_eof ? e->half_closed_ms : e->flow_idle_ms;
  return limit == 0 ? 0 : f->last_active + limit;
}

void eng_timer(flow *f) {
  uint64_t due = flow_due(f);
  if (due == 0) {
    wheel_unlink(f->e, f);
    return;
  }
  /* scheduled no later than that: the wheel rechecks then (a later due only moves it lazily) */
  if (f->tw_slot >= 0 && f->due <= due) return;
  wheel_unlink(f->e, f);
  wheel_insert(f->e, f, due);
}

void eng_timer_del(flow *f) { wheel_unlink(f->e, f); }

/* A flow whose checked deadline has come. */
static void flow_expire(engine *e, flow *f, uint64_t now) {
  if (f->dialing) {
    f->dialing = 0;
    flow_fail(f, FAIL_CONNECT);
    if (f->server) h2_server_connected(f, false, "connect: ETIMEDOUT");
    else flow_abort(f, "connect: ETIMEDOUT");
    return;
  }
  /* one way already ended (or both, and bytes wait for a reader that does not read) */
  bool half = f->app_eof || f->peer_eof;
  uint32_t limit = half ? e->half_closed_ms : e->flow_idle_ms;
  char why[96];
  if (half) {
    eng_count(&e->ctr.half_closed);
    snprintf(why, sizeof why, "half-closed with no traffic for %u ms", limit);
  } else {
    eng_count(&e->ctr.idle_closed);
    snprintf(why, sizeof why, "idle for %u ms", limit);
  }
  flow_fail(f, FAIL_LOCAL);
  flow_abort(f, why);
}

/*
 * The wheel's slots from the last tick to now: each flow there whose deadline came is checked
 * against its state now (bytes moved since push the idle deadline on: it goes back in the wheel),
 * the others wait their round. A tick visits only the flows of its slots, not every flow.
 */
static void wheel_expire(engine *e, uint64_t now) {
  uint64_t until = now / e->tick_ms;
  uint64_t from = e->wheel_next;
  if (until - from >= WHEEL_SLOTS) from = until - (WHEEL_SLOTS - 1); /* a long stall: one full turn */
  e->wheel_next = until + 1;
  for (uint64_t at = from; at <= until && !e->stop; at++) {
    int32_t slot = (int32_t)(at % WHEEL_SLOTS);
    e->wheel_tmp = e->wheel[slot];
    e->wheel[slot] = NULL;
    for (flow *f = e->wheel_tmp; f != NULL; f = f->twnext) f->tw_slot = -2;
    while (e->wheel_tmp != NULL) {
      flow *f = e->wheel_tmp;
      wheel_unlink(e, f);
      uint64_t due = flow_due(f);
      if (due == 0) continue;
      if (due > now) wheel_insert(e, f, due);
      else flow_expire(e, f, now);
    }
  }
}

static void listener_free(listener *l) {
  engine *e = l->e;
  for (listener **pp = &e->lmap[l->id & (LISTENER_BUCKETS - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == l) {
      *pp = l->hnext;
      break;
    }
  }
  for (listener **pp = &e->listeners; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      break;
    }
  }
  if (l->fd >= 0) close(l->fd);
  if (l->nsfd >= 0) close(l->nsfd);
  ambit_pool_unpin(l->pool);
  free(l->tag);
  free(l);
}

/* The last reference frees it, but never inside a batch: an event of this round may name it. */
void listener_unref(listener *l) {
  if (--l->refs > 0) return;
  if (l->e->in_batch) {
    l->e->ndead++;
    return;
  }
  listener_free(l);
}

/* Free what died; only between batches, when no epoll event or nghttp2 frame can name it. */
void eng_reap(engine *e) {
  if (e->in_batch || e->ndead == 0) return;
  e->ndead = 0;
  /* Only the dead are visited: with many long-lived flows a walk of them all per batch would cost. */
  while (e->dead_flows) {
    flow *f = e->dead_flows;
    e->dead_flows = f->gnext;
    if (f->prev) f->prev->next = f->next;
    else e->flows = f->next;
    if (f->next) f->next->prev = f->prev;
    fmap_del(e, f);
    flow_free(f);
  }
  while (e->dead_tconns) {
    tconn *tc = e->dead_tconns;
    e->dead_tconns = tc->gnext;
    if (tc->prev) tc->prev->next = tc->next;
    else e->tconns = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
    tmap_del(e, tc);
    tconn_free(tc);
  }
  /* listeners last: the flows and tconns above held references to them */
  for (listener *l = e->listeners, *next; l != NULL; l = next) {
    next = l->next;
    if (l->refs <= 0) listener_free(l);
  }
}

static void batch_open(engine *e) { e->in_batch = true; }

static void batch_close(engine *e) {
  eng_flush_dirty(e);
  e->in_batch = false;
  eng_reap(e);
  post_pending(e);
}

/* ---- accepting ---- */

/* Carry out JS's plan for a captured connection (the command is consumed by the caller). */
static void outbound_plan(engine *e, flow *f, jcmd *c) {
  char why[256];
  f->silent = 0;
  if (c->t == PLAN_PLAIN) {
    f->mode = M_PLAIN;
    if (!flow_watch_app(f)) {
      flow_abort(f, "epoll");
      return;
    }
    if (flow_dial(f, c->ip ? c->ip : "", c->port, NULL, why, sizeof why) != 0) {
      flow_fail(f, FAIL_CONNECT);
      flow_abort(f, why);
    }
    return;
  }
  if (c->t != PLAN_HBONE) {
    f->silent = 1;
    flow_abort(f, "refused");
    return;
  }
  f->mode = M_H2;
  if (c->ctx == NULL || c->key == NULL || c->tag == NULL || c->hdrs == NULL) {
    flow_fail(f, c->ctx == NULL ? FAIL_TLS : FAIL_LOCAL);
    flow_abort(f, c->ctx == NULL ? "hbone: no certificate" : "hbone: bad plan");
    return;
  }
  f->hdrs = c->hdrs;
  f->hdrs_len = c->hdrs_len;
  c->hdrs = NULL;
  tconn *tc = pool_get(e, f->l, c->ctx, c->key, c->tag, c->ip ? c->ip : "", c->port, why, sizeof why);
  if (tc == NULL) {
    char msg[300];
    snprintf(msg, sizeof msg, "hbone: %s", why);
    flow_fail(f, FAIL_CONNECT);
    flow_abort(f, msg);
    return;
  }
  if (!flow_watch_app(f)) {
    flow_abort(f, "epoll");
    return;
  }
  /* A client usually wrote its first bytes while JS decided: try the socket at once, so they go
   * in the stream's first flush with its HEADERS (one TLS record, one segment, one wake-up of the
   * peer) instead of a flush of their own after the next epoll round. An empty socket costs one
   * read (EAGAIN), and epoll's edge then brings the bytes as usual. */
  f->app_r = 1;
  tconn_enqueue(tc, f);
}

static listener *find_listener(engine *e, uint32_t id);

/* engineOpen: a socket JS holds the other end of becomes the app side of a new HBONE flow. */
static void open_flow(engine *e, jcmd *c) {
  listener *l = find_listener(e, c->id);
  flow *f = l != NULL ? flow_new_id(e, l, M_H2, c->fd, c->fid) : NULL;
  if (f == NULL) {
    const char *why = l == NULL ? "hbone: the source is closed" : "out of memory";
    if (c->link) link_publish(c->link, LINK_FAILED, FAIL_LOCAL, 0, why);
    flow_reset_fd(c->fd);
    c->fd = -1;
    jmsg *m = eng_msg(J_EVENT);
    if (m != NULL) {
      m->kind = EVT_CLOSED;
      m->id = c->fid;
      m->p1 = FAIL_LOCAL;
      m->s[0] = strdup(why);
      eng_post(e, m);
    }
    return;
  }
  c->fd = -1;
  f->link = c->link;
  c->link = NULL;
  outbound_plan(e, f, c);
}

/* Same address family, address and port. */
static bool same_endpoint(const ambit_addr *a, const ambit_addr *b) {
  if (a->u.sa.sa_family != b->u.sa.sa_family) return false;
  if (a->u.sa.sa_family == AF_INET)
    return a->u.v4.sin_port == b->u.v4.sin_port && a->u.v4.sin_addr.s_addr == b->u.v4.sin_addr.s_addr;
  if (a->u.sa.sa_family == AF_INET6)
    return a->u.v6.sin6_port == b->u.v6.sin6_port && memcmp(&a->u.v6.sin6_addr, &b->u.v6.sin6_addr, sizeof a->u.v6.sin6_addr) == 0;
  return false;
}

/*
 * A connection that reached the capture listener without a redirect has no original destination.
 * Where conntrack tracks the namespace (any nat or ct rule loaded there), SO_ORIGINAL_DST answers
 * with the connection's own destination, the listener itself: that is "no redirect" too.
 */
static bool redirected_dst(int fd, int family, ambit_addr *dst, ambit_fail *fl) {
  if (ambit_orig_dst(fd, family, dst, fl) != 0) return false;
  ambit_addr local;
  local.len = sizeof local.u;
  if (getsockname(fd, &local.u.sa, &local.len) != 0) return false;
  return !same_endpoint(dst, &local);
}

static void accept_outbound(engine *e, listener *l, int fd, const ambit_addr *peer) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  eng_sockopts(e, fd);
  ambit_addr dst;
  ambit_fail fl = {0};
  jmsg *m = NULL;
  flow *f = NULL;
  if (!redirected_dst(fd, peer->u.sa.sa_family, &dst, &fl) || (m = eng_msg(J_OUTBOUND)) == NULL ||
      (f = flow_new(e, l, 0, fd)) == NULL) {
    free(m);
    flow_reset_fd(fd);
    return;
  }
  f->silent = 1; /* JS accounts for what it refuses */
  char dip[64], pip[64];
  int dport, pport;
  ambit_addr_text(&dst.u.sa, dip, sizeof dip, &dport);
  ambit_addr_text(&peer->u.sa, pip, sizeof pip, &pport);
  m->lid = l->id;
  m->id = f->id;
  m->s[0] = strdup(dip);
  m->p1 = dport;
  m->s[1] = strdup(pip);
  m->p2 = pport;
  eng_post(e, m);
}

static void accept_hbone(engine *e, listener *l, int fd, const ambit_addr *peer) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  eng_sockopts(e, fd);
  eng_user_timeout(e, fd);
  /* Past the connection cap: refused (a hostile peer cannot pile them up). */
  tconn *tc = __atomic_load_n(&e->ntconns, __ATOMIC_RELAXED) < MAX_TCONNS ? tconn_accepted(e, l, fd) : NULL;
  jmsg *m = tc ? eng_msg(J_CONTEXT) : NULL;
  if (m == NULL) {
    if (tc) tconn_kill(tc, "out of memory");
    else flow_reset_fd(fd);
    return;
  }
  ambit_addr local;
  socklen_t llen = sizeof local.u;
  ambit_addr_text(&peer->u.sa, tc->rip, sizeof tc->rip, &tc->rport);
  if (getsockname(fd, &local.u.sa, &llen) == 0) ambit_addr_text(&local.u.sa, tc->lip, sizeof tc->lip, &tc->lport);
  m->lid = l->id;
  m->id = tc->id;
  eng_post(e, m);
}

/* Why accept failed, in words for the log line (which limit was hit). */
static const char *starve_text(int err) {
  switch (err) {
    case EMFILE: return "the process's open-file limit (RLIMIT_NOFILE)";
    case ENFILE: return "the system-wide open-file limit (fs.file-max)";
    default: return "kernel memory for sockets";
  }
}

/*
 * Out of fds or memory: accept would fail again at once (the pending connection stays queued and
 * the level-triggered listener stays ready), so the listener leaves the epoll set for a delay that
 * doubles on each failure (5 ms .. 1 s). Queued connections wait in the backlog meanwhile and are
 * accepted once fds free up. The first failure of a run is a warn line; the counters say which
 * limit, and `starved` (stats) lets the agent report not-ready.
 */
static void listener_starve(engine *e, listener *l, int err, bool reserve) {
  switch (err) {
    case EMFILE: eng_count(&e->ctr.accept_emfile); break;
    case ENFILE: eng_count(&e->ctr.accept_enfile); break;
    case ENOBUFS: eng_count(&e->ctr.accept_enobufs); break;
    default: eng_count(&e->ctr.accept_enomem); break;
  }
  l->backoff_ms = l->backoff_ms == 0 ? 5 : (l->backoff_ms >= 500 ? 1000 : l->backoff_ms * 2);
  if (!l->starved) {
    l->starved = true;
    __atomic_add_fetch(&e->nstarved, 1, __ATOMIC_RELAXED);
    if (reserve) {
      eng_log(e, LOG_WARN,
              "listener %u: fewer than %u fds left under the process's open-file limit (RLIMIT_NOFILE %llu), kept for "
              "the agent itself; accepting again once fds are free (back-off 5 ms doubling to 1 s)",
              l->id, e->fd_reserve, (unsigned long long)e->nofile);
    } else {
      eng_log(e, LOG_WARN, "listener %u: accept failed with %s: out of %s; accepting again after a back-off (5 ms doubling to 1 s)",
              l->id, ambit_errno_name(err), starve_text(err));
    }
  }
  if (!l->paused && epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->fd, NULL) == 0) l->paused = true;
  l->resume_at = e->now + l->backoff_ms;
}

/* accept works again (a connection, or an empty queue) */
static void listener_fed(engine *e, listener *l) {
  if (!l->starved) return;
  l->starved = false;
  l->backoff_ms = 0;
  __atomic_sub_fetch(&e->nstarved, 1, __ATOMIC_RELAXED);
  eng_log(e, LOG_INFO, "listener %u: accepting again", l->id);
}

/*
 * The fd reserve: the engine stops accepting while fewer than fd_reserve fds are left under the
 * soft RLIMIT_NOFILE, so the agent's own sockets (readiness, admin, metrics, CNI, control plane)
 * still open when pods' connections use up the rest. fds are handed out lowest first, so an fd
 * numbered n means n fds below it are in use: the number of a new fd is the test.
 */
static bool fd_in_reserve(engine *e, int fd) {
  return e->fd_reserve > 0 && (uint64_t)fd + e->fd_reserve >= e->nofile;
}

/* While the reserve was reached: is there room again? (the lowest free fd, found by a dup) */
static bool fds_free(engine *e) {
  int probe = fcntl(e->wakefd, F_DUPFD_CLOEXEC, 0);
  if (probe < 0) return false;
  close(probe);
  if (fd_in_reserve(e, probe)) return false;
  e->fd_tight = false;
  return true;
}

static void listener_event(listener *l) {
  engine *e = l->e;
  /* the limit as it is now (the agent raises it at start; an operator may change it) */
  struct rlimit rl;
  if (e->fd_reserve > 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    e->nofile = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX / 2 : (uint64_t)rl.rlim_cur;
  }
  for (int i = 0; i < 64 && !l->closed; i++) {
    if (e->fd_tight && !fds_free(e)) {
      listener_starve(e, l, EMFILE, true);
      return;
    }
    ambit_addr peer;
    socklen_t plen = sizeof peer.u;
    int fd = accept4(l->fd, &peer.u.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) listener_starve(e, l, err, false);
      else if (err == EAGAIN) listener_fed(e, l);
      return;
    }
    peer.len = plen;
    if (fd_in_reserve(e, fd)) {
      /* this one is carried (it is accepted); the next waits until fds are free */
      e->fd_tight = true;
      listener_starve(e, l, EMFILE, true);
      if (l->kind == L_OUTBOUND) accept_outbound(e, l, fd, &peer);
      else accept_hbone(e, l, fd, &peer);
      return;
    }
    listener_fed(e, l);
    if (l->kind == L_OUTBOUND) accept_outbound(e, l, fd, &peer);
    else accept_hbone(e, l, fd, &peer);
  }
}

/* Listeners whose back-off is over go back into the epoll set and try at once. */
static void listeners_resume(engine *e, uint64_t now) {
  for (listener *l = e->listeners; l != NULL; l = l->next) {
    if (!l->paused || l->closed || now < l->resume_at) continue;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->fd, &ev) != 0) {
      l->resume_at = now + 1000;
      continue;
    }
    l->paused = false;
    listener_event(l);
  }
}

/* The earliest back-off end, or UINT64_MAX. */
static uint64_t listeners_next(engine *e) {
  uint64_t at = UINT64_MAX;
  if (__atomic_load_n(&e->nstarved, __ATOMIC_RELAXED) == 0) return at;
  for (listener *l = e->listeners; l != NULL; l = l->next) {
    if (l->paused && !l->closed && l->resume_at < at) at = l->resume_at;
  }
  return at;
}

/* ---- commands from JS ---- */

static listener *find_listener(engine *e, uint32_t id) {
  for (listener *l = e->lmap[id & (LISTENER_BUCKETS - 1)]; l != NULL; l = l->hnext) {
    if (l->id == id && !l->closed) return l;
  }
  return NULL;
}

/*
 * Stop accepting. `handed`: the socket lives on in a new agent (handover), so nothing this engine
 * already accepted is refused: server sessions get a shutdown notice (GOAWAY with the highest
 * stream id: the peer opens no new streams here, and every stream it already sent is served),
 * handshakes in progress finish. Otherwise sessions get a GOAWAY naming the last stream seen.
 */
static void close_listener(engine *e, listener *l, bool handed) {
  l->closed = true;
  if (l->starved) {
    l->starved = false;
    __atomic_sub_fetch(&e->nstarved, 1, __ATOMIC_RELAXED);
  }
  l->handed = handed;
  if (l->fd >= 0) close(l->fd);
  l->fd = -1;
  __atomic_sub_fetch(&e->nlisteners, 1, __ATOMIC_RELAXED);
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (tc->dead || tc->l != l) continue;
    if (tc->client) {
      /* handed: flows accepted before the handover may still be waiting for their decision and
       * then want a pooled connection; idle ones close after the pool's idle time, or with us */
      if (!handed) tconn_retire(tc);
    } else if (handed) {
      if (tc->h2 != NULL) {
        nghttp2_submit_shutdown_notice(tc->h2);
        eng_dirty(tc);
      }
    } else if (tc->h2 != NULL) {
      tc->goaway = 1;
      nghttp2_submit_goaway(tc->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(tc->h2), NGHTTP2_NO_ERROR,
                            NULL, 0);
      eng_dirty(tc);
    } else {
      tconn_kill(tc, "listener closed");
    }
  }
  listener_unref(l);
}

static void destroy_all(engine *e) {
  for (flow *f = e->flows; f != NULL; f = f->next) {
    if (!f->dead) {
      f->silent = 1;
      flow_fail(f, FAIL_LOCAL);
      flow_abort(f, "engine destroyed");
    }
  }
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (!tc->dead) tconn_kill(tc, "engine destroyed");
  }
  for (listener *l = e->listeners; l != NULL; l = l->next) {
    if (!l->closed) close_listener(e, l, false);
  }
  e->stop = true;
}

static void run_command(engine *e, jcmd *c) {
  switch (c->type) {
    case C_PLAN: {
      flow *f = fmap_get(e, c->id);
      if (f != NULL) outbound_plan(e, f, c);
      break;
    }
    case C_INBOUND: {
      flow *f = fmap_get(e, c->id);
      if (f != NULL) h2_inbound_decision(f, c);
      if (c->fd >= 0) {
        /* an adopted socket for a stream that went meanwhile: JS still hears of its end, once */
        jmsg *m = eng_msg(J_EVENT);
        if (m != NULL) {
          m->kind = EVT_CLOSED;
          m->id = c->id;
          m->p1 = FAIL_LOCAL;
          m->s[0] = strdup("hbone: the stream was gone before it was taken");
          eng_post(e, m);
        }
      }
      break;
    }
    case C_VERIFIED: {
      tconn *tc = tconn_by_id(e, c->id);
      if (tc != NULL) tconn_verified(tc, c->peer);
      break;
    }
    case C_CONTEXT: {
      tconn *tc = tconn_by_id(e, c->id);
      if (tc != NULL) tconn_context(tc, c->ctx);
      break;
    }
    case C_LISTEN: {
      listener *l = c->l;
      c->l = NULL;
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
      l->next = e->listeners;
      e->listeners = l;
      listener **b = &e->lmap[l->id & (LISTENER_BUCKETS - 1)];
      l->hnext = *b;
      *b = l;
      if (l->kind != L_SOURCE && epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->fd, &ev) != 0) {
        eng_log(e, LOG_ERROR, "listener %u: epoll_ctl: %s", l->id, ambit_errno_name(errno));
        close_listener(e, l, false);
      }
      break;
    }
    case C_UNLISTEN: {
      listener *l = find_listener(e, c->id);
      if (l != NULL) close_listener(e, l, c->t == 1);
      break;
    }
    case C_CLOSE_FLOW: {
      flow *f = fmap_get(e, c->id);
      if (f != NULL) {
        flow_fail(f, FAIL_LOCAL);
        flow_abort(f, c->reason ? c->reason : "closed");
      }
      break;
    }
    case C_CLOSE_FLOWS: {
      for (flow *f = e->flows; f != NULL; f = f->next) {
        if (!f->dead && (c->id == 0 || f->l->id == c->id)) {
          flow_fail(f, FAIL_LOCAL);
          flow_abort(f, c->reason ? c->reason : "closed");
        }
      }
      for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
        if (!tc->dead && (c->id == 0 || tc->l->id == c->id)) tconn_kill(tc, c->reason ? c->reason : "closed");
      }
      break;
    }
    case C_FLUSH: {
      /* urgent (not news): it takes every waiting message with it, in order */
      jmsg *m = eng_msg(J_EVENT);
      if (m != NULL) {
        m->kind = EVT_FLUSHED;
        m->id = c->id;
        eng_post(e, m);
      }
      break;
    }
    case C_DESTROY:
      destroy_all(e);
      break;
    case C_OPEN:
      open_flow(e, c);
      break;
    case C_SOCKET:
      if (c->t == DIAL_FLOW) {
        flow *f = fmap_get(e, c->id);
        if (f != NULL) flow_socket(f, &c->fd, c->status);
      } else {
        tconn *tc = tconn_by_id(e, c->id);
        if (tc != NULL) tconn_socket(tc, &c->fd, c->status);
      }
      break;
  }
}

static void run_commands(engine *e) {
  uint64_t n;
  while (read(e->wakefd, &n, sizeof n) > 0) {
  }
  pthread_mutex_lock(&e->mu);
  jcmd *c = e->in_head;
  e->in_head = e->in_tail = NULL;
  pthread_mutex_unlock(&e->mu);
  while (c != NULL) {
    jcmd *next = c->next;
    run_command(e, c);
    eng_cmd_free(c);
    c = next;
  }
}

/* ---- the loop ---- */

static void dispatch(engine *e, evsrc *src, uint32_t ev) {
  switch (src->kind) {
    case 0:
      run_commands(e);
      break;
    case EV_LISTENER:
      listener_event((listener *)src);
      break;
    case EV_TCONN:
      tconn_event((tconn *)src, ev);
      break;
    case EV_APP:
      flow_app_event((flow *)((char *)src - offsetof(flow, app_ev)), ev);
      break;
    case EV_UP:
      flow_up_event((flow *)((char *)src - offsetof(flow, up_ev)), ev);
      break;
  }
}

/*
 * Deadlines, checked every tick_ms: flows through the wheel (dials, the idle and half-closed
 * limits, lazily from the time of the last byte moved, so moving bytes never touches a timer);
 * each connection's handshake, idle and keepalive deadlines (connections are few: at most
 * MAX_TCONNS, a handful per peer node).
 */
static void tick(engine *e, uint64_t now) {
  wheel_expire(e, now);
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (!tc->dead) tconn_tick(tc, now);
  }
}

/* Sessions whose read slice ran out: one more slice each, after this round's events. */
static void serve_more(engine *e) {
  tconn *list = e->more;
  e->more = NULL;
  while (list != NULL) {
    tconn *tc = list;
    list = tc->mnext;
    tc->mnext = NULL;
    tc->more = 0;
    if (!tc->dead) tconn_more(tc);
  }
}

void *engine_main(void *arg) {
  engine *e = arg;
  /* so profiles and `top -H` tell it from Node's threads (15 characters at most) */
  pthread_setname_np(pthread_self(), "ambit-engine");
  struct epoll_event evs[64];
  struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_src};
  epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &wev);
  e->now = eng_now(e);
  e->next_tick = e->now + e->tick_ms;
  e->wheel_next = e->now / e->tick_ms;
  while (!e->stop) {
    uint64_t now = eng_now(e);
    uint64_t wake_at = e->next_tick;
    uint64_t resume = listeners_next(e);
    if (resume < wake_at) wake_at = resume;
    if (news_due(e) < wake_at) wake_at = news_due(e);
    int timeout = e->more != NULL || now >= wake_at ? 0 : (int)(wake_at - now);
    int n = epoll_wait(e->epfd, evs, 64, timeout);
    e->now = now = eng_now(e);
    batch_open(e);
    for (int i = 0; i < n && !e->stop; i++) dispatch(e, evs[i].data.ptr, evs[i].events);
    if (e->more != NULL && !e->stop) serve_more(e);
    if (resume <= now && !e->stop) listeners_resume(e, now);
    if (now >= e->next_tick && !e->stop) {
      tick(e, now);
      e->next_tick = now + e->tick_ms;
    }
    batch_close(e);
  }
  /* destroy: everything was aborted silently; free it all */
  batch_open(e);
  batch_close(e);
  return NULL;
}
