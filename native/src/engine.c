/*
 * The engine's Node-API surface and its event loop glue: one epoll set per engine, polled by a
 * uv_poll on the Node loop, a one-second uv_timer for deadlines and idle tunnels, and the
 * listeners (15001 outbound capture, 15008 HBONE) whose accepted sockets become flows.
 *
 * JS callbacks (all synchronous, on the JS thread):
 *   outbound(listenerId, flowId, dstIp, dstPort, peerIp, peerPort) -> plan | null
 *       plan: {t: 1, ip, port}                         plain passthrough
 *             {t: 2, ctx, key, tag, ip, port, authority, headers}   HBONE ("n\0v\0n\0v")
 *   inbound(listenerId, flowId, peerId, authority, forwarded, rip, rport, lip, lport)
 *       -> {ip, port, spoof?} to dial the app, or an HTTP status to refuse with
 *   verify(chain: Buffer[], roots, tag) -> the peer's SPIFFE id (throw to refuse)
 *   context(listenerId) -> the listener's current TLS context, or null (refuse)
 *   event(kind, flowId, fromApp, toApp, error?)    kind 1 established, 2 closed
 */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* TLS connections (HBONE sessions) one engine holds at most. */
#define MAX_TCONNS 8192

uint64_t eng_now(engine *e) { return uv_now(e->loop); }

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

static void report_exception(engine *e, const char *where) {
  napi_value exc, str;
  char msg[512] = "unknown error";
  size_t n;
  if (napi_get_and_clear_last_exception(e->env, &exc) == napi_ok &&
      napi_coerce_to_string(e->env, exc, &str) == napi_ok) {
    napi_get_value_string_utf8(e->env, str, msg, sizeof msg, &n);
  }
  fprintf(stderr, "ambit engine: %s callback threw: %s\n", where, msg);
}

bool eng_call(engine *e, napi_ref ref, size_t argc, napi_value *argv, napi_value *result) {
  napi_value fn, recv;
  if (e->destroyed) return false; /* destroy() from an earlier callback deleted the references */
  if (napi_get_reference_value(e->env, ref, &fn) != napi_ok) return false;
  napi_get_undefined(e->env, &recv);
  if (napi_call_function(e->env, recv, fn, argc, argv, result) != napi_ok) {
    report_exception(e, "engine");
    return false;
  }
  return true;
}

void eng_event(engine *e, int kind, flow *f) {
  if (e->destroyed) return;
  eng_scope(e);
  napi_env env = e->env;
  napi_handle_scope hs;
  napi_open_handle_scope(env, &hs);
  napi_value argv[5], result;
  napi_create_int32(env, kind, &argv[0]);
  napi_create_uint32(env, f->id, &argv[1]);
  napi_create_double(env, (double)f->from_app_n, &argv[2]);
  napi_create_double(env, (double)f->to_app_n, &argv[3]);
  if (f->err) napi_create_string_utf8(env, f->err, NAPI_AUTO_LENGTH, &argv[4]);
  else napi_get_undefined(env, &argv[4]);
  eng_call(e, e->cb_event, 5, argv, &result);
  napi_close_handle_scope(env, hs);
}

/* The loop stays alive while the engine has anything open. */
void eng_ref_update(engine *e) {
  if (e->destroyed) return;
  bool want = e->listeners != NULL || e->nflows > 0 || e->ntconns > 0;
  if (want == e->reffed) return;
  e->reffed = want;
  if (want) uv_ref((uv_handle_t *)&e->poll);
  else uv_unref((uv_handle_t *)&e->poll);
}

static void listener_free(listener *l) {
  engine *e = l->e;
  for (listener **pp = &e->listeners; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      break;
    }
  }
  if (l->fd >= 0) close(l->fd);
  if (l->nsfd >= 0) close(l->nsfd);
  free(l->tag);
  free(l);
  eng_ref_update(e);
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
    flow_free(f);
  }
  while (e->dead_tconns) {
    tconn *tc = e->dead_tconns;
    e->dead_tconns = tc->gnext;
    if (tc->prev) tc->prev->next = tc->next;
    else e->tconns = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
    tconn_free(tc);
  }
  /* listeners last: the flows and tconns above held references to them */
  for (listener *l = e->listeners, *next; l != NULL; l = next) {
    next = l->next;
    if (l->refs <= 0) listener_free(l);
  }
}

/*
 * A batch of work (one epoll round, a tick, an API call). Freeing waits for its end. A batch from
 * the loop opens a callback scope (so microtasks JS queued run at its end) only once it is about
 * to call JS: the steady data path never does, and never pays for one. Every JS-calling site
 * calls eng_scope first, before its own handle scope, so scopes nest properly.
 */
typedef struct {
  bool from_js;
  bool nested; /* a JS callback called back in (closeFlow, destroy...): the outer batch finishes */
} batch;

void eng_scope(engine *e) {
  if (!e->in_batch || e->scope_open) return;
  napi_value resource;
  napi_open_handle_scope(e->env, &e->bhs);
  napi_create_object(e->env, &resource);
  e->scope_cs = napi_open_callback_scope(e->env, resource, e->actx, &e->bcs) == napi_ok;
  e->scope_open = true;
}

static void batch_open(engine *e, batch *b, bool from_js) {
  b->from_js = from_js;
  /* Nested: no flush (nghttp2 may be inside mem_recv), no reap (the frames below the callback
   * still hold what died), no scope change (the outer batch opened and closes it). */
  b->nested = e->in_batch;
  if (b->nested) return;
  e->in_batch = true;
  e->scope_open = from_js; /* inside a JS call already: no scope needed */
}

static void batch_close(engine *e, batch *b) {
  if (b->nested) return;
  eng_flush_dirty(e);
  e->in_batch = false;
  eng_reap(e);
  if (e->scope_open && !b->from_js) {
    if (e->scope_cs) napi_close_callback_scope(e->env, e->bcs);
    napi_close_handle_scope(e->env, e->bhs);
  }
  e->scope_open = false;
}

/* ---- accepting ---- */

static const char *plan_str(napi_env env, napi_value obj, const char *name, char *buf, size_t cap) {
  napi_value v;
  size_t n = 0;
  buf[0] = 0;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return buf;
  if (napi_get_value_string_utf8(env, v, buf, cap, &n) != napi_ok) buf[0] = 0;
  return buf;
}

static int32_t plan_int(napi_env env, napi_value obj, const char *name) {
  napi_value v;
  int32_t out = 0;
  if (napi_get_named_property(env, obj, name, &v) == napi_ok) napi_get_value_int32(env, v, &out);
  return out;
}

/* Carry out JS's plan for a captured connection. */
static void outbound_plan(engine *e, flow *f, napi_value plan) {
  napi_env env = e->env;
  char ip[64], why[256];
  int32_t t = plan_int(env, plan, "t");
  int32_t port = plan_int(env, plan, "port");
  plan_str(env, plan, "ip", ip, sizeof ip);
  f->silent = 0;
  if (t == 1) {
    f->mode = M_PLAIN;
    int fd;
    if (!flow_watch_app(f)) {
      flow_abort(f, "epoll");
      return;
    }
    if (flow_dial(f, ip, port, NULL, &fd, why, sizeof why) != 0) flow_abort(f, why);
    return;
  }
  if (t != 2) {
    f->silent = 1;
    flow_abort(f, "refused");
    return;
  }
  f->mode = M_H2;
  napi_value v;
  tlsctx *ctx = NULL;
  if (napi_get_named_property(env, plan, "ctx", &v) != napi_ok || napi_get_value_external(env, v, (void **)&ctx) != napi_ok ||
      ctx == NULL) {
    flow_abort(f, "hbone: no certificate");
    return;
  }
  /* key, tag and headers can be long; ask for their length first */
  char *key = NULL, *tag = NULL, *hdrs = NULL;
  size_t klen = 0, tlen = 0, hlen = 0, alen = 0;
  char authority[300];
  napi_value jkey, jtag, jhdrs;
  bool ok = napi_get_named_property(env, plan, "key", &jkey) == napi_ok &&
            napi_get_value_string_utf8(env, jkey, NULL, 0, &klen) == napi_ok &&
            napi_get_named_property(env, plan, "tag", &jtag) == napi_ok &&
            napi_get_value_string_utf8(env, jtag, NULL, 0, &tlen) == napi_ok &&
            napi_get_named_property(env, plan, "headers", &jhdrs) == napi_ok &&
            napi_get_value_string_utf8(env, jhdrs, NULL, 0, &hlen) == napi_ok && klen < 65536 && tlen < 65536 &&
            hlen < 8192;
  plan_str(env, plan, "authority", authority, sizeof authority);
  alen = strlen(authority);
  if (ok) {
    key = malloc(klen + 1);
    tag = malloc(tlen + 1);
    /* ":authority\0<authority>\0<headers>\0" */
    hdrs = malloc(11 + alen + 1 + hlen + 1);
    ok = key && tag && hdrs && napi_get_value_string_utf8(env, jkey, key, klen + 1, &klen) == napi_ok &&
         napi_get_value_string_utf8(env, jtag, tag, tlen + 1, &tlen) == napi_ok;
  }
  if (ok) {
    memcpy(hdrs, ":authority", 11);
    memcpy(hdrs + 11, authority, alen + 1);
    size_t got = 0;
    napi_get_value_string_utf8(env, jhdrs, hdrs + 12 + alen, hlen + 1, &got);
    f->hdrs = hdrs;
    f->hdrs_len = (uint32_t)(12 + alen + got + (got > 0 ? 1 : 0));
    hdrs = NULL;
  }
  if (!ok || alen == 0) {
    free(key);
    free(tag);
    free(hdrs);
    flow_abort(f, "hbone: bad plan");
    return;
  }
  tconn *tc = pool_get(e, f->l, ctx, key, tag, ip, port, why, sizeof why);
  free(key);
  free(tag);
  if (tc == NULL) {
    char msg[300];
    snprintf(msg, sizeof msg, "hbone: %s", why);
    flow_abort(f, msg);
    return;
  }
  if (!flow_watch_app(f)) {
    flow_abort(f, "epoll");
    return;
  }
  tconn_enqueue(tc, f);
}

static void accept_outbound(engine *e, listener *l, int fd, const ambit_addr *peer) {
  napi_env env = e->env;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ambit_addr dst;
  ambit_fail fl = {0};
  if (ambit_orig_dst(fd, peer->u.sa.sa_family, &dst, &fl) != 0) {
    flow_reset_fd(fd);
    return;
  }
  flow *f = flow_new(e, l, 0, fd);
  if (f == NULL) {
    flow_reset_fd(fd);
    return;
  }
  eng_scope(e);
  f->silent = 1;
  char dip[64], pip[64];
  int dport, pport;
  ambit_addr_text(&dst.u.sa, dip, sizeof dip, &dport);
  ambit_addr_text(&peer->u.sa, pip, sizeof pip, &pport);
  napi_handle_scope hs;
  napi_open_handle_scope(env, &hs);
  napi_value argv[6], plan;
  napi_create_uint32(env, l->id, &argv[0]);
  napi_create_uint32(env, f->id, &argv[1]);
  napi_create_string_utf8(env, dip, NAPI_AUTO_LENGTH, &argv[2]);
  napi_create_int32(env, dport, &argv[3]);
  napi_create_string_utf8(env, pip, NAPI_AUTO_LENGTH, &argv[4]);
  napi_create_int32(env, pport, &argv[5]);
  napi_valuetype t = napi_undefined;
  if (eng_call(e, e->cb_outbound, 6, argv, &plan)) napi_typeof(env, plan, &t);
  if (f->dead) t = napi_undefined; /* closeFlow or destroy from the callback */
  if (t == napi_object) outbound_plan(e, f, plan);
  else flow_abort(f, "refused");
  napi_close_handle_scope(env, hs);
}

static void accept_hbone(engine *e, listener *l, int fd, const ambit_addr *peer) {
  napi_env env = e->env;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  eng_scope(e);
  napi_handle_scope hs;
  napi_open_handle_scope(env, &hs);
  napi_value argv[1], result;
  napi_create_uint32(env, l->id, &argv[0]);
  tlsctx *ctx = NULL;
  napi_valuetype t = napi_undefined;
  if (eng_call(e, e->cb_context, 1, argv, &result)) napi_typeof(env, result, &t);
  if (t == napi_external) napi_get_value_external(env, result, (void **)&ctx);
  napi_close_handle_scope(env, hs);
  if (l->closed) ctx = NULL; /* unlisten or destroy from the callback */
  /* No certificate: fail closed. Past the connection cap: refused (a hostile peer cannot pile them up). */
  tconn *tc = ctx != NULL && e->ntconns < MAX_TCONNS ? tconn_new(e, l, fd, ctx, false) : NULL;
  if (tc == NULL) {
    flow_reset_fd(fd);
    return;
  }
  ambit_addr local;
  socklen_t llen = sizeof local.u;
  ambit_addr_text(&peer->u.sa, tc->rip, sizeof tc->rip, &tc->rport);
  if (getsockname(fd, &local.u.sa, &llen) == 0) ambit_addr_text(&local.u.sa, tc->lip, sizeof tc->lip, &tc->lport);
  eng_ref_update(e);
}

static void listener_event(listener *l) {
  engine *e = l->e;
  l->refs++; /* a callback may unlisten or destroy: keep it until the loop is done */
  for (int i = 0; i < 64 && !l->closed; i++) {
    ambit_addr peer;
    socklen_t plen = sizeof peer.u;
    int fd = accept4(l->fd, &peer.u.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return; /* EAGAIN, or out of fds: the level trigger brings us back */
    }
    peer.len = plen;
    if (l->kind == L_OUTBOUND) accept_outbound(e, l, fd, &peer);
    else accept_hbone(e, l, fd, &peer);
  }
  listener_unref(l);
}

static void dispatch(engine *e, evsrc *src, uint32_t ev) {
  switch (src->kind) {
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

static void on_poll(uv_poll_t *h, int status, int events) {
  engine *e = h->data;
  if (e->destroyed) return;
  struct epoll_event evs[64];
  batch b;
  batch_open(e, &b, false);
  for (int round = 0; round < 8; round++) {
    int n = epoll_wait(e->epfd, evs, 64, 0);
    if (n <= 0) break;
    /* a callback may destroy the engine mid-batch (listeners are freed at once) */
    for (int i = 0; i < n && !e->destroyed; i++) dispatch(e, evs[i].data.ptr, evs[i].events);
    if (e->destroyed) break;
    eng_flush_dirty(e);
    if (n < 64) break;
  }
  batch_close(e, &b);
}

static void on_tick(uv_timer_t *t) {
  engine *e = t->data;
  if (e->destroyed) return;
  uint64_t now = eng_now(e);
  batch b;
  batch_open(e, &b, false);
  for (flow *f = e->flows; f != NULL; f = f->next) {
    if (f->dead || !f->dialing || now < f->deadline) continue;
    f->dialing = 0;
    if (f->server) h2_server_connected(f, false, "connect: ETIMEDOUT");
    else flow_abort(f, "connect: ETIMEDOUT");
  }
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (tc->dead) continue;
    if (tc->handshaking && now >= tc->deadline) {
      tconn_kill(tc, tc->tcp_connecting ? "connect: ETIMEDOUT" : "tls handshake timed out");
    } else if (tc->client && tc->ready && tc->active == 0 && tc->queued == 0 && now - tc->idle_since >= e->idle_ms) {
      tconn_retire(tc);
    } else if (!tc->client && tc->ready && tc->active == 0 && now - tc->idle_since >= 2ull * e->idle_ms) {
      /* a session nobody uses: twice the clients' idle time, so a client normally leaves first */
      tconn_retire(tc);
    }
  }
  batch_close(e, &b);
}

/* ---- Node-API ---- */

static engine *arg_engine(napi_env env, napi_value v, const char *fn) {
  engine *e = NULL;
  if (napi_get_value_external(env, v, (void **)&e) != napi_ok || e == NULL) {
    ambit_type_error(env, fn, "engine", "must be an engine");
    return NULL;
  }
  if (e->destroyed) {
    napi_throw_error(env, "AMBIT_ENGINE_CLOSED", "engine: already destroyed");
    return NULL;
  }
  return e;
}

static bool get_fn(napi_env env, napi_value obj, const char *name, napi_ref *out) {
  napi_value v;
  napi_valuetype t = napi_undefined;
  if (napi_get_named_property(env, obj, name, &v) == napi_ok) napi_typeof(env, v, &t);
  if (t != napi_function) {
    ambit_type_error(env, "engineCreate", name, "must be a function");
    return false;
  }
  return napi_create_reference(env, v, 1, out) == napi_ok;
}

/* engineCreate(callbacks, opts) */
static napi_value js_create(napi_env env, napi_callback_info info) {
  static const char *fn = "engineCreate";
  napi_value argv[2];
  if (!ambit_args(env, info, fn, argv, 2, "callbacks, opts")) return NULL;
  int64_t connect_ms, handshake_ms, idle_ms, per_conn, max_streams, window, conn_window;
  if (!ambit_opt_int(env, argv[1], fn, "connectTimeoutMs", 1, 600000, 10000, &connect_ms)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "handshakeTimeoutMs", 1, 600000, 10000, &handshake_ms)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "idleMs", 1, 86400000, 60000, &idle_ms)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "streamsPerConnection", 1, 1 << 30, 100, &per_conn)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "maxConcurrentStreams", 1, 1 << 20, 200, &max_streams)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "streamWindow", 65535, (1u << 31) - 1, 4 << 20, &window)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "connectionWindow", 65535, (1u << 31) - 1, 16 << 20, &conn_window)) return NULL;
  engine *e = calloc(1, sizeof *e);
  if (e == NULL) {
    napi_throw_error(env, "AMBIT_BUG", "engineCreate: out of memory");
    return NULL;
  }
  e->env = env;
  e->epfd = -1;
  if (!get_fn(env, argv[0], "outbound", &e->cb_outbound) || !get_fn(env, argv[0], "inbound", &e->cb_inbound) ||
      !get_fn(env, argv[0], "verify", &e->cb_verify) || !get_fn(env, argv[0], "context", &e->cb_context) ||
      !get_fn(env, argv[0], "event", &e->cb_event)) {
    free(e); /* a few references leak with the throw; engineCreate is called once per agent */
    return NULL;
  }
  e->connect_ms = (uint32_t)connect_ms;
  e->handshake_ms = (uint32_t)handshake_ms;
  e->idle_ms = (uint32_t)idle_ms;
  e->streams_per_conn = (uint32_t)per_conn;
  e->max_streams = (uint32_t)max_streams;
  e->window = (uint32_t)window;
  e->conn_window = (uint32_t)conn_window;
  napi_value name;
  napi_create_string_utf8(env, "ambit.engine", NAPI_AUTO_LENGTH, &name);
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0 || napi_get_uv_event_loop(env, &e->loop) != napi_ok || !h2_init(e) ||
      napi_async_init(env, NULL, name, &e->actx) != napi_ok) {
    ambit_throw_errno(env, "epoll_create1", errno ? errno : ENOMEM, NULL);
    return NULL;
  }
  uv_poll_init(e->loop, &e->poll, e->epfd);
  uv_timer_init(e->loop, &e->timer);
  e->poll.data = e;
  e->timer.data = e;
  e->open_handles = 2;
  uv_poll_start(&e->poll, UV_READABLE, on_poll);
  uv_timer_start(&e->timer, on_tick, 1000, 1000);
  uv_unref((uv_handle_t *)&e->timer);
  uv_unref((uv_handle_t *)&e->poll);
  napi_value ext;
  AMBIT_NAPI(napi_create_external(env, e, NULL, NULL, &ext));
  return ext;
}

static void tls_finalize(napi_env env, void *data, void *hint) { tlsctx_unref(data); }

static char *arg_alloc_string(napi_env env, napi_value v, const char *fn, const char *field) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len > (1 << 20)) {
    ambit_type_error(env, fn, field, "must be a string of at most 1 MiB");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL || napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    napi_throw_error(env, "AMBIT_BUG", "out of memory");
    return NULL;
  }
  return s;
}

/* engineTls(chainPem, keyPem, rootsPem) -> context */
static napi_value js_tls(napi_env env, napi_callback_info info) {
  static const char *fn = "engineTls";
  napi_value argv[3];
  if (!ambit_args(env, info, fn, argv, 3, "chainPem, keyPem, rootsPem")) return NULL;
  char *chain = arg_alloc_string(env, argv[0], fn, "chainPem");
  char *key = chain ? arg_alloc_string(env, argv[1], fn, "keyPem") : NULL;
  char *roots = key ? arg_alloc_string(env, argv[2], fn, "rootsPem") : NULL;
  if (roots == NULL) {
    free(chain);
    free(key);
    return NULL;
  }
  char why[300];
  tlsctx *c = tlsctx_create(chain, key, roots, why, sizeof why);
  OPENSSL_cleanse(key, strlen(key));
  free(chain);
  free(key);
  free(roots);
  if (c == NULL) {
    char msg[340];
    snprintf(msg, sizeof msg, "engineTls: %s", why);
    napi_throw_error(env, "AMBIT_CERT_INVALID", msg);
    return NULL;
  }
  napi_value ext;
  if (napi_create_external(env, c, tls_finalize, NULL, &ext) != napi_ok) {
    tlsctx_unref(c);
    return NULL;
  }
  return ext;
}

/* engineListen(engine, fd, netns, {kind: 1 outbound | 2 hbone, mark, tag?}) -> listener id */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  static const char *fn = "engineListen";
  napi_value argv[4];
  if (!ambit_args(env, info, fn, argv, 4, "engine, fd, netns, opts")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL) return NULL;
  int fd, nsfd;
  bool owned;
  int64_t kind, mark;
  if (!ambit_arg_fd(env, argv[1], fn, "fd", &fd)) return NULL;
  if (!ambit_opt_int(env, argv[3], fn, "kind", 1, 2, 0, &kind)) return NULL;
  if (!ambit_opt_int(env, argv[3], fn, "mark", 0, UINT32_MAX, 0, &mark)) return NULL;
  napi_value jtag;
  bool has_tag;
  char *tag = NULL;
  if (!ambit_get_prop(env, argv[3], "tag", &jtag, &has_tag)) return NULL;
  if (has_tag && (tag = arg_alloc_string(env, jtag, fn, "opts.tag")) == NULL) return NULL;
  if (kind == 0) {
    free(tag);
    ambit_type_error(env, fn, "opts.kind", "is required");
    return NULL;
  }
  if (!ambit_arg_netns(env, argv[2], fn, &nsfd, &owned)) {
    free(tag);
    return NULL;
  }
  if (!owned) nsfd = fcntl(nsfd, F_DUPFD_CLOEXEC, 3);
  listener *l = calloc(1, sizeof *l);
  int fl = fcntl(fd, F_GETFL);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
  if (l == NULL || nsfd < 0 || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
      epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    int err = errno ? errno : ENOMEM;
    if (nsfd >= 0) close(nsfd);
    free(l);
    free(tag);
    ambit_throw_errno(env, "epoll_ctl", err, "listener");
    return NULL;
  }
  l->ev.kind = EV_LISTENER;
  l->e = e;
  l->fd = fd;
  l->nsfd = nsfd;
  l->kind = (uint8_t)kind;
  l->mark = (uint32_t)mark;
  l->tag = tag;
  l->refs = 1;
  if (++e->next_id == 0) ++e->next_id;
  l->id = e->next_id;
  l->next = e->listeners;
  e->listeners = l;
  eng_ref_update(e);
  napi_value id;
  AMBIT_NAPI(napi_create_uint32(env, l->id, &id));
  return id;
}

static listener *find_listener(engine *e, uint32_t id) {
  for (listener *l = e->listeners; l != NULL; l = l->next) {
    if (l->id == id && !l->closed) return l;
  }
  return NULL;
}

/* engineUnlisten(engine, id): stop accepting; HBONE sessions get GOAWAY (open streams go on). */
static napi_value js_unlisten(napi_env env, napi_callback_info info) {
  static const char *fn = "engineUnlisten";
  napi_value argv[2];
  int64_t id;
  if (!ambit_args(env, info, fn, argv, 2, "engine, id")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL || !ambit_arg_int(env, argv[1], fn, "id", 0, UINT32_MAX, &id)) return NULL;
  listener *l = find_listener(e, (uint32_t)id);
  if (l == NULL) return NULL;
  l->closed = true;
  close(l->fd);
  l->fd = -1;
  batch b;
  batch_open(e, &b, true);
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (tc->dead || tc->l != l) continue;
    if (tc->client) {
      tconn_retire(tc);
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
  batch_close(e, &b);
  return NULL;
}

/* engineCloseFlows(engine, listenerId | 0, reason): cut flows (a listener's, or all). */
static napi_value js_close_flows(napi_env env, napi_callback_info info) {
  static const char *fn = "engineCloseFlows";
  napi_value argv[3];
  int64_t id;
  char reason[200];
  if (!ambit_args(env, info, fn, argv, 3, "engine, listenerId, reason")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL || !ambit_arg_int(env, argv[1], fn, "listenerId", 0, UINT32_MAX, &id)) return NULL;
  if (!ambit_arg_string(env, argv[2], fn, "reason", reason, sizeof reason)) return NULL;
  uint32_t n = 0;
  batch b;
  batch_open(e, &b, true);
  for (flow *f = e->flows; f != NULL; f = f->next) {
    if (f->dead || (id != 0 && f->l->id != (uint32_t)id)) continue;
    flow_abort(f, reason);
    n++;
  }
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (!tc->dead && (id == 0 || tc->l->id == (uint32_t)id)) tconn_kill(tc, reason);
  }
  batch_close(e, &b);
  napi_value out;
  AMBIT_NAPI(napi_create_uint32(env, n, &out));
  return out;
}

/* engineCloseFlow(engine, flowId, reason) -> whether it was open */
static napi_value js_close_flow(napi_env env, napi_callback_info info) {
  static const char *fn = "engineCloseFlow";
  napi_value argv[3];
  int64_t id;
  char reason[200];
  if (!ambit_args(env, info, fn, argv, 3, "engine, flowId, reason")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL || !ambit_arg_int(env, argv[1], fn, "flowId", 1, UINT32_MAX, &id)) return NULL;
  if (!ambit_arg_string(env, argv[2], fn, "reason", reason, sizeof reason)) return NULL;
  bool found = false;
  batch b;
  batch_open(e, &b, true);
  for (flow *f = e->flows; f != NULL; f = f->next) {
    if (f->dead || f->id != (uint32_t)id) continue;
    flow_abort(f, reason);
    found = true;
    break;
  }
  batch_close(e, &b);
  napi_value out;
  AMBIT_NAPI(napi_get_boolean(env, found, &out));
  return out;
}

/* engineStats(engine) -> {flows, tunnels, listeners} */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!ambit_args(env, info, "engineStats", argv, 1, "engine")) return NULL;
  engine *e = arg_engine(env, argv[0], "engineStats");
  if (e == NULL) return NULL;
  uint32_t nl = 0;
  for (listener *l = e->listeners; l != NULL; l = l->next) nl += l->closed ? 0 : 1;
  napi_value out, v;
  AMBIT_NAPI(napi_create_object(env, &out));
  napi_create_uint32(env, e->nflows, &v);
  napi_set_named_property(env, out, "flows", v);
  napi_create_uint32(env, e->ntconns, &v);
  napi_set_named_property(env, out, "tunnels", v);
  napi_create_uint32(env, nl, &v);
  napi_set_named_property(env, out, "listeners", v);
  return out;
}

static void on_handle_closed(uv_handle_t *h) {
  engine *e = h->data;
  if (--e->open_handles > 0) return;
  close(e->epfd);
  h2_fini(e);
  free(e);
}

/* engineDestroy(engine): cut everything, silently (no events), and free the engine. */
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!ambit_args(env, info, "engineDestroy", argv, 1, "engine")) return NULL;
  engine *e = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&e) != napi_ok || e == NULL || e->destroyed) return NULL;
  batch b;
  batch_open(e, &b, true);
  for (flow *f = e->flows; f != NULL; f = f->next) {
    if (!f->dead) {
      f->silent = 1;
      flow_abort(f, "engine destroyed");
    }
  }
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (!tc->dead) tconn_kill(tc, "engine destroyed");
  }
  for (listener *l = e->listeners, *next; l != NULL; l = next) {
    next = l->next;
    if (l->closed) continue;
    l->closed = true;
    close(l->fd);
    l->fd = -1;
    listener_unref(l);
  }
  batch_close(e, &b);
  e->destroyed = true;
  napi_delete_reference(env, e->cb_outbound);
  napi_delete_reference(env, e->cb_inbound);
  napi_delete_reference(env, e->cb_verify);
  napi_delete_reference(env, e->cb_context);
  napi_delete_reference(env, e->cb_event);
  napi_async_destroy(env, e->actx);
  uv_poll_stop(&e->poll);
  uv_timer_stop(&e->timer);
  uv_close((uv_handle_t *)&e->poll, on_handle_closed);
  uv_close((uv_handle_t *)&e->timer, on_handle_closed);
  return NULL;
}

bool ambit_engine_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"engineCreate", NULL, js_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineTls", NULL, js_tls, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineListen", NULL, js_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineUnlisten", NULL, js_unlisten, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineCloseFlows", NULL, js_close_flows, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineCloseFlow", NULL, js_close_flow, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineStats", NULL, js_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineDestroy", NULL, js_destroy, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props) == napi_ok;
}
