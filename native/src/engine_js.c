/*
 * The engine's JavaScript side: the Node-API functions, and the uv_async handler that turns the
 * engine thread's messages into the callbacks and their answers into commands.
 *
 * Callbacks (JS thread, synchronous; each answer goes back to the engine thread):
 *   outbound(listenerId, flowId, dstIp, dstPort, peerIp, peerPort) -> plan | null
 *       plan: {t: 1, ip, port}                         plain passthrough
 *             {t: 2, ctx, key, tag, ip, port, authority, headers}   HBONE ("n\0v\0n\0v")
 *   inbound(listenerId, flowId, peerId, authority, forwarded, rip, rport, lip, lport)
 *       -> {ip, port, spoof?} to dial the app, or an HTTP status to refuse with
 *   verify(chain: Buffer[], roots, tag) -> the peer's SPIFFE id (throw to refuse)
 *   context(listenerId) -> the listener's current TLS context, or null (refuse)
 *   event(kind, flowId, fromApp, toApp, error?, fail)    kind 1 established, 2 closed;
 *       fail: why a closed flow failed (FAIL_* of engine.h, 0 none), so JS maps codes, not text
 *   log?(level, message)    the engine's log lines (1 debug, 2 info, 3 warn, 4 error); optional
 */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* A line to the agent's logger (the optional log callback); nothing goes to stderr from C. */
static void log_line(engine *e, int level, const char *text) {
  napi_value fn, recv, argv[2], result, exc;
  if (e->cb_log == NULL || e->destroyed || napi_get_reference_value(e->env, e->cb_log, &fn) != napi_ok) return;
  napi_get_undefined(e->env, &recv);
  napi_create_int32(e->env, level, &argv[0]);
  napi_create_string_utf8(e->env, text, NAPI_AUTO_LENGTH, &argv[1]);
  if (napi_call_function(e->env, recv, fn, 2, argv, &result) != napi_ok) napi_get_and_clear_last_exception(e->env, &exc);
}

static void report_exception(engine *e, const char *where) {
  napi_value exc, str;
  char msg[512] = "unknown error";
  size_t n;
  if (napi_get_and_clear_last_exception(e->env, &exc) == napi_ok && napi_coerce_to_string(e->env, exc, &str) == napi_ok) {
    napi_get_value_string_utf8(e->env, str, msg, sizeof msg, &n);
  }
  char line[600];
  snprintf(line, sizeof line, "%s callback threw: %s", where, msg);
  log_line(e, LOG_ERROR, line);
}

static bool call(engine *e, napi_ref ref, const char *where, size_t argc, napi_value *argv, napi_value *result) {
  napi_value fn, recv;
  if (e->destroyed || napi_get_reference_value(e->env, ref, &fn) != napi_ok) return false;
  napi_get_undefined(e->env, &recv);
  if (napi_call_function(e->env, recv, fn, argc, argv, result) != napi_ok) {
    report_exception(e, where);
    return false;
  }
  return true;
}

static napi_value str(napi_env env, const char *s) {
  napi_value v;
  if (s == NULL) napi_get_undefined(env, &v);
  else napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

/* A string property, malloc'ed (NULL when absent or not a string, or longer than cap); its byte
 * length in *out_len (it may hold NULs: the CONNECT headers do). */
static char *prop_strn(napi_env env, napi_value obj, const char *name, size_t cap, size_t *out_len) {
  napi_value v;
  napi_valuetype t = napi_undefined;
  size_t len = 0;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return NULL;
  napi_typeof(env, v, &t);
  if (t != napi_string || napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len > cap) return NULL;
  char *s = malloc(len + 1);
  if (s && napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    return NULL;
  }
  if (out_len) *out_len = len;
  return s;
}

static char *prop_str(napi_env env, napi_value obj, const char *name, size_t cap) {
  return prop_strn(env, obj, name, cap, NULL);
}

static int32_t prop_int(napi_env env, napi_value obj, const char *name) {
  napi_value v;
  int32_t out = 0;
  if (napi_get_named_property(env, obj, name, &v) == napi_ok) napi_get_value_int32(env, v, &out);
  return out;
}

static jcmd *cmd(uint8_t type, uint32_t id) {
  jcmd *c = calloc(1, sizeof *c);
  if (c) {
    c->type = type;
    c->id = id;
    c->fd = -1;
  }
  return c;
}

/*
 * What JS holds of the engine's objects: externals, each type-tagged at creation, so a value of
 * another kind (a TLS context passed as an engine, any other addon's external) is refused before
 * its pointer is read. The engine itself is reached through a handle that outlives it: destroy
 * clears handle->e, and the handle is freed only by its finalizer, once JS cannot name it; so a
 * destroyed engine's handle can never lead to freed memory.
 */
static const napi_type_tag TAG_ENGINE = {0x616d626974656e67ULL, 0x696e652068616e64ULL};
static const napi_type_tag TAG_TLS = {0x616d626974746c73ULL, 0x20636f6e74657874ULL};
static const napi_type_tag TAG_LINK = {0x616d6269746c696eULL, 0x6b20666c6f77206cULL};

typedef struct {
  engine *e; /* NULL once destroyed */
} ehandle;

/* The pointer of an external of ours of the given kind, or NULL (no throw). */
static void *tagged(napi_env env, napi_value v, const napi_type_tag *tag) {
  napi_valuetype t = napi_undefined;
  bool ok = false;
  void *p = NULL;
  if (v == NULL || napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  if (napi_check_object_type_tag(env, v, tag, &ok) != napi_ok || !ok) return NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* A flow link from a JS value (an external made by engineLink), or NULL. */
static flowlink *link_of(napi_env env, napi_value v) {
  return tagged(env, v, &TAG_LINK);
}

/* A plan object into a C_PLAN command (t 0 = refuse). */
static void read_plan(napi_env env, napi_value plan, jcmd *c) {
  napi_valuetype t = napi_undefined;
  napi_typeof(env, plan, &t);
  if (t != napi_object) return;
  c->t = prop_int(env, plan, "t");
  c->port = prop_int(env, plan, "port");
  c->ip = prop_str(env, plan, "ip", 63);
  if (c->t != PLAN_HBONE) return;
  napi_value v;
  tlsctx *ctx = NULL;
  if (napi_get_named_property(env, plan, "ctx", &v) == napi_ok && (ctx = tagged(env, v, &TAG_TLS)) != NULL) {
    tlsctx_ref(ctx);
    c->ctx = ctx;
  }
  c->key = prop_str(env, plan, "key", 65535);
  c->tag = prop_str(env, plan, "tag", 65535);
  size_t hlen = 0;
  char *authority = prop_str(env, plan, "authority", 255);
  char *headers = prop_strn(env, plan, "headers", 8191, &hlen);
  if (authority != NULL && authority[0] != 0 && headers != NULL) {
    /* ":authority\0<authority>\0<headers>\0" */
    size_t alen = strlen(authority);
    c->hdrs = malloc(11 + alen + 1 + hlen + 1);
    if (c->hdrs) {
      memcpy(c->hdrs, ":authority", 11);
      memcpy(c->hdrs + 11, authority, alen + 1);
      memcpy(c->hdrs + 12 + alen, headers, hlen + 1);
      c->hdrs_len = (uint32_t)(12 + alen + hlen + (hlen > 0 ? 1 : 0));
    }
  }
  free(authority);
  free(headers);
}

/* One message: call JS, and return the command answering it (NULL for events). */
static jcmd *handle(engine *e, jmsg *m) {
  napi_env env = e->env;
  napi_value result;
  switch (m->type) {
    case J_OUTBOUND: {
      napi_value argv[6];
      napi_create_uint32(env, m->lid, &argv[0]);
      napi_create_uint32(env, m->id, &argv[1]);
      argv[2] = str(env, m->s[0]);
      napi_create_int32(env, m->p1, &argv[3]);
      argv[4] = str(env, m->s[1]);
      napi_create_int32(env, m->p2, &argv[5]);
      jcmd *c = cmd(C_PLAN, m->id);
      if (c != NULL && call(e, e->cb_outbound, "outbound", 6, argv, &result)) read_plan(env, result, c);
      return c;
    }
    case J_INBOUND: {
      napi_value argv[9];
      napi_create_uint32(env, m->lid, &argv[0]);
      napi_create_uint32(env, m->id, &argv[1]);
      argv[2] = str(env, m->s[0]);
      argv[3] = str(env, m->s[1]);
      argv[4] = str(env, m->s[2]);
      argv[5] = str(env, m->s[3]);
      napi_create_int32(env, m->p1, &argv[6]);
      argv[7] = str(env, m->s[4]);
      napi_create_int32(env, m->p2, &argv[8]);
      jcmd *c = cmd(C_INBOUND, m->id);
      if (c == NULL) return NULL;
      c->status = 500;
      if (!call(e, e->cb_inbound, "inbound", 9, argv, &result)) return c;
      napi_valuetype t = napi_undefined;
      napi_typeof(env, result, &t);
      if (t == napi_number) {
        napi_get_value_int32(env, result, &c->status);
        if (c->status < 400 || c->status > 599) c->status = 500;
      } else if (t == napi_object) {
        napi_value v;
        napi_valuetype ft = napi_undefined;
        if (napi_get_named_property(env, result, "fd", &v) == napi_ok) napi_typeof(env, v, &ft);
        if (ft == napi_number) {
          /* {fd, link}: a connected socket JS holds the other end of; the engine owns fd from here */
          int32_t fd = -1;
          napi_get_value_int32(env, v, &fd);
          flowlink *k = napi_get_named_property(env, result, "link", &v) == napi_ok ? link_of(env, v) : NULL;
          if (fd >= 0 && k != NULL) {
            __atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
            c->link = k;
            c->fd = fd;
            c->status = 0;
          } else if (fd >= 0) {
            close(fd);
          }
          return c;
        }
        c->ip = prop_str(env, result, "ip", 63);
        c->port = prop_int(env, result, "port");
        c->spoof = prop_str(env, result, "spoof", 63);
        c->status = c->ip != NULL ? 0 : 500;
      }
      return c;
    }
    case J_VERIFY: {
      napi_value argv[3], arr;
      napi_create_array_with_length(env, (size_t)m->nder, &arr);
      for (int i = 0; i < m->nder; i++) {
        napi_value buf;
        void *data;
        if (napi_create_buffer_copy(env, (size_t)m->der_len[i], m->der[i], &data, &buf) == napi_ok) napi_set_element(env, arr, (uint32_t)i, buf);
      }
      argv[0] = arr;
      argv[1] = str(env, m->ctx ? m->ctx->roots : "");
      argv[2] = str(env, m->s[0] ? m->s[0] : "");
      jcmd *c = cmd(C_VERIFIED, m->id);
      if (c != NULL && call(e, e->cb_verify, "verify", 3, argv, &result)) {
        napi_valuetype t = napi_undefined;
        napi_typeof(env, result, &t);
        size_t n = 0;
        if (t == napi_string && napi_get_value_string_utf8(env, result, NULL, 0, &n) == napi_ok && n > 0 && n < 2048) {
          c->peer = malloc(n + 1);
          if (c->peer) napi_get_value_string_utf8(env, result, c->peer, n + 1, &n);
        }
      }
      return c;
    }
    case J_CONTEXT: {
      napi_value argv[1];
      napi_create_uint32(env, m->lid, &argv[0]);
      jcmd *c = cmd(C_CONTEXT, m->id);
      if (c != NULL && call(e, e->cb_context, "context", 1, argv, &result)) {
        napi_valuetype t = napi_undefined;
        tlsctx *ctx = NULL;
        napi_typeof(env, result, &t);
        if (t == napi_external && (ctx = tagged(env, result, &TAG_TLS)) != NULL) {
          tlsctx_ref(ctx);
          c->ctx = ctx;
        }
      }
      return c;
    }
    case J_EVENT: {
      napi_value argv[6];
      napi_create_int32(env, m->kind, &argv[0]);
      napi_create_uint32(env, m->id, &argv[1]);
      argv[2] = num(env, m->n1);
      argv[3] = num(env, m->n2);
      argv[4] = str(env, m->s[0]);
      napi_create_uint32(env, (uint32_t)m->p1, &argv[5]);
      call(e, e->cb_event, "event", 6, argv, &result);
      return NULL;
    }
    case J_LOG:
      log_line(e, m->kind, m->s[0] ? m->s[0] : "");
      return NULL;
  }
  return NULL;
}

static void wake(engine *e) {
  uint64_t one = 1;
  ssize_t rc = write(e->wakefd, &one, sizeof one);
  (void)rc; /* EAGAIN: already awake-pending */
}

/* Hand commands to the engine thread and wake it. */
static void send_cmds(engine *e, jcmd *head, jcmd *tail) {
  if (head == NULL) return;
  pthread_mutex_lock(&e->mu);
  if (e->in_tail) e->in_tail->next = head;
  else e->in_head = head;
  e->in_tail = tail;
  pthread_mutex_unlock(&e->mu);
  wake(e);
}

static void send_cmd(engine *e, jcmd *c) {
  if (c) send_cmds(e, c, c);
}

void eng_send_cmd(engine *e, jcmd *c) { send_cmd(e, c); }

/* The families a listener's pod dials in: its own (an IPv6 listener is dual-stack: both). */
static int listener_families(int fd) {
  ambit_addr a;
  socklen_t len = sizeof a.u;
  if (fd >= 0 && getsockname(fd, &a.u.sa, &len) == 0 && a.u.sa.sa_family == AF_INET6) return 3;
  return 1;
}

static void on_async(uv_async_t *h) {
  engine *e = h->data;
  pthread_mutex_lock(&e->mu);
  jmsg *m = e->out_head;
  e->out_head = e->out_tail = NULL;
  pthread_mutex_unlock(&e->mu);
  if (m == NULL) return;
  napi_env env = e->env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_value resource;
  napi_open_handle_scope(env, &hs);
  napi_create_object(env, &resource);
  bool scoped = napi_open_callback_scope(env, resource, e->actx, &cs) == napi_ok;
  jcmd *head = NULL, *tail = NULL;
  while (m != NULL) {
    jmsg *next = m->next;
    if (!e->destroyed) {
      napi_handle_scope mhs;
      napi_open_handle_scope(env, &mhs);
      jcmd *c = handle(e, m);
      napi_close_handle_scope(env, mhs);
      if (c != NULL) {
        if (tail) tail->next = c;
        else head = c;
        tail = c;
      }
    }
    eng_msg_free(m);
    m = next;
  }
  if (!e->destroyed) {
    send_cmds(e, head, tail);
  } else {
    while (head) {
      jcmd *next = head->next;
      eng_cmd_free(head);
      head = next;
    }
  }
  if (scoped) napi_close_callback_scope(env, cs);
  napi_close_handle_scope(env, hs);
}

/* ---- Node-API ---- */

static engine *arg_engine(napi_env env, napi_value v, const char *fn) {
  ehandle *h = tagged(env, v, &TAG_ENGINE);
  if (h == NULL) {
    ambit_type_error(env, fn, "engine", "must be an engine (engineCreate)");
    return NULL;
  }
  if (h->e == NULL || h->e->destroyed) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: the engine was destroyed", fn);
    napi_throw_error(env, "AMBIT_ENGINE_CLOSED", msg);
    return NULL;
  }
  return h->e;
}

/* The engine handle's finalizer: JS can no longer name it. A live engine is not stopped here
 * (its owner destroys it); only the handle goes. */
static void handle_finalize(napi_env env, void *data, void *hint) { free(data); }

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

/* A required integer option (opts.<name>), min..max. */
static bool req_int(napi_env env, napi_value obj, const char *fn, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_value v;
  bool present;
  char field[64];
  snprintf(field, sizeof field, "opts.%s", name);
  if (!ambit_get_prop(env, obj, name, &v, &present)) return false;
  if (!present) return ambit_type_error(env, fn, field, "is required (src/hbone/settings.ts HBONE_SETTINGS)");
  return ambit_arg_int(env, v, fn, field, min, max, out);
}

/* An optional callback: absent (NULL ref) or a function. */
static bool get_opt_fn(napi_env env, napi_value obj, const char *name, napi_ref *out) {
  napi_value v;
  napi_valuetype t = napi_undefined;
  *out = NULL;
  if (napi_get_named_property(env, obj, name, &v) == napi_ok) napi_typeof(env, v, &t);
  if (t == napi_undefined || t == napi_null) return true;
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
  /* the HBONE settings: all required (the table is src/hbone/settings.ts; no second copy here) */
  int64_t connect_ms, handshake_ms, idle_ms, per_conn, max_streams, window, conn_window, max_frame;
  if (!req_int(env, argv[1], fn, "connectTimeoutMs", 1, 600000, &connect_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "handshakeTimeoutMs", 1, 600000, &handshake_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "idleMs", 1, 86400000, &idle_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "streamsPerConnection", 1, 1 << 30, &per_conn)) return NULL;
  if (!req_int(env, argv[1], fn, "maxConcurrentStreams", 1, 1 << 20, &max_streams)) return NULL;
  if (!req_int(env, argv[1], fn, "streamWindow", 65535, (1u << 31) - 1, &window)) return NULL;
  if (!req_int(env, argv[1], fn, "connectionWindow", 65535, (1u << 31) - 1, &conn_window)) return NULL;
  if (!req_int(env, argv[1], fn, "maxFrameSize", 16384, (1 << 24) - 1, &max_frame)) return NULL;
  /* dead peers, idle and abusive ones, the fd reserve (same table) */
  int64_t ping_ms, ping_timeout_ms, ka_idle_ms, ka_intvl_ms, ka_cnt, user_timeout_ms, flow_idle_ms, half_closed_ms, budget, fd_reserve;
  if (!req_int(env, argv[1], fn, "pingIntervalMs", 0, 86400000, &ping_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "pingTimeoutMs", 1, 600000, &ping_timeout_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "tcpKeepaliveIdleMs", 0, 86400000, &ka_idle_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "tcpKeepaliveIntervalMs", 1000, 3600000, &ka_intvl_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "tcpKeepaliveProbes", 1, 127, &ka_cnt)) return NULL;
  if (!req_int(env, argv[1], fn, "tcpUserTimeoutMs", 0, 86400000, &user_timeout_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "flowIdleMs", 0, 7 * 86400000LL, &flow_idle_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "halfClosedMs", 0, 86400000, &half_closed_ms)) return NULL;
  if (!req_int(env, argv[1], fn, "abuseBudget", 1, 1000000, &budget)) return NULL;
  if (!req_int(env, argv[1], fn, "fdReserve", 0, 1 << 20, &fd_reserve)) return NULL;
  engine *e = calloc(1, sizeof *e);
  if (e == NULL) {
    napi_throw_error(env, "AMBIT_BUG", "engineCreate: out of memory");
    return NULL;
  }
  e->env = env;
  e->epfd = e->wakefd = -1;
  if (!get_fn(env, argv[0], "outbound", &e->cb_outbound) || !get_fn(env, argv[0], "inbound", &e->cb_inbound) ||
      !get_fn(env, argv[0], "verify", &e->cb_verify) || !get_fn(env, argv[0], "context", &e->cb_context) ||
      !get_fn(env, argv[0], "event", &e->cb_event) || !get_opt_fn(env, argv[0], "log", &e->cb_log)) {
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
  e->max_frame = (uint32_t)max_frame;
  e->ping_ms = (uint32_t)ping_ms;
  e->ping_timeout_ms = (uint32_t)ping_timeout_ms;
  /* the kernel counts keepalive in whole seconds */
  e->ka_idle_s = (uint32_t)((ka_idle_ms + 999) / 1000);
  e->ka_intvl_s = (uint32_t)((ka_intvl_ms + 999) / 1000);
  e->ka_cnt = (uint32_t)ka_cnt;
  e->user_timeout_ms = (uint32_t)user_timeout_ms;
  e->flow_idle_ms = (uint32_t)flow_idle_ms;
  e->half_closed_ms = (uint32_t)half_closed_ms;
  e->abuse_budget = (uint32_t)budget;
  e->fd_reserve = (uint32_t)fd_reserve;
  /* keepalive and flow limits are checked at a quarter of the shortest (10 ms .. 1 s); the connect
   * and handshake deadlines keep the 1 s tick (they are minimums, not promises of speed) */
  uint32_t tick = 1000;
  uint32_t spans[] = {e->ping_ms, e->ping_timeout_ms, e->flow_idle_ms, e->half_closed_ms};
  for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++) {
    if (spans[i] > 0 && spans[i] / 4 < tick) tick = spans[i] / 4;
  }
  e->tick_ms = tick < 10 ? 10 : tick;
  napi_value name;
  napi_create_string_utf8(env, "ambit.engine", NAPI_AUTO_LENGTH, &name);
  uv_loop_t *loop = NULL;
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int err = errno;
  if (e->epfd < 0 || e->wakefd < 0 || napi_get_uv_event_loop(env, &loop) != napi_ok || !h2_init(e) ||
      napi_async_init(env, NULL, name, &e->actx) != napi_ok || pthread_mutex_init(&e->mu, NULL) != 0 ||
      uv_async_init(loop, &e->async, on_async) != 0) {
    ambit_throw_errno(env, "engineCreate", err ? err : ENOMEM, NULL);
    return NULL; /* leaks the partial engine: only on a machine out of fds or memory */
  }
  e->async.data = e;
  /* The engine does not keep the process alive by itself: its owner (the agent) does. */
  uv_unref((uv_handle_t *)&e->async);
  int rc = ambit_thread_start(engine_main, e, 0, false, &e->thread);
  if (rc != 0) {
    ambit_throw_errno(env, "pthread_create", rc, "engine thread");
    return NULL;
  }
  napi_value ext;
  ehandle *h = calloc(1, sizeof *h);
  if (h == NULL || napi_create_external(env, h, handle_finalize, NULL, &ext) != napi_ok ||
      napi_type_tag_object(env, ext, &TAG_ENGINE) != napi_ok) {
    free(h); /* the engine runs on unreachable: only when out of memory at its creation */
    napi_throw_error(env, "AMBIT_BUG", "engineCreate: cannot make the engine's handle");
    return NULL;
  }
  h->e = e;
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
  AMBIT_NAPI(napi_type_tag_object(env, ext, &TAG_TLS));
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
  jcmd *c = cmd(C_LISTEN, 0);
  int fl = fcntl(fd, F_GETFL);
  if (l == NULL || c == NULL || nsfd < 0 || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    int err = errno ? errno : ENOMEM;
    if (nsfd >= 0) close(nsfd);
    free(l);
    free(c);
    free(tag);
    ambit_throw_errno(env, "fcntl", err, "listener");
    return NULL;
  }
  /* the pod's socket pool, ready before its first connection (the engine thread makes no thread) */
  ambit_fail pf = {0};
  l->pool = ambit_pool_pin(nsfd, listener_families(fd), &pf);
  if (l->pool == NULL) {
    close(nsfd);
    free(l);
    free(c);
    free(tag);
    ambit_throw_fail(env, &pf);
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
  if (++e->next_lid == 0) ++e->next_lid;
  l->id = e->next_lid;
  c->l = l;
  __atomic_add_fetch(&e->nlisteners, 1, __ATOMIC_RELAXED);
  /* an engine with listeners keeps the loop alive (its events are what the program waits for) */
  if (e->js_listeners++ == 0) uv_ref((uv_handle_t *)&e->async);
  send_cmd(e, c);
  napi_value id;
  AMBIT_NAPI(napi_create_uint32(env, l->id, &id));
  return id;
}

/* engineSource(engine, netns, {mark}) -> id: a netns and a mark to open HBONE flows from (engineOpen);
 * no socket. Closed with engineUnlisten like a listener. */
static napi_value js_source(napi_env env, napi_callback_info info) {
  static const char *fn = "engineSource";
  napi_value argv[3];
  if (!ambit_args(env, info, fn, argv, 3, "engine, netns, opts")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL) return NULL;
  int nsfd;
  bool owned;
  int64_t mark;
  if (!ambit_opt_int(env, argv[2], fn, "mark", 0, UINT32_MAX, 0, &mark)) return NULL;
  if (!ambit_arg_netns(env, argv[1], fn, &nsfd, &owned)) return NULL;
  if (!owned) nsfd = fcntl(nsfd, F_DUPFD_CLOEXEC, 3);
  listener *l = calloc(1, sizeof *l);
  jcmd *c = cmd(C_LISTEN, 0);
  if (l == NULL || c == NULL || nsfd < 0) {
    int err = errno ? errno : ENOMEM;
    if (nsfd >= 0) close(nsfd);
    free(l);
    free(c);
    ambit_throw_errno(env, "fcntl", err, "source");
    return NULL;
  }
  ambit_fail pf = {0};
  l->pool = ambit_pool_pin(nsfd, 1, &pf);
  if (l->pool == NULL) {
    close(nsfd);
    free(l);
    free(c);
    ambit_throw_fail(env, &pf);
    return NULL;
  }
  l->ev.kind = EV_LISTENER;
  l->e = e;
  l->fd = -1;
  l->nsfd = nsfd;
  l->kind = L_SOURCE;
  l->mark = (uint32_t)mark;
  l->refs = 1;
  if (++e->next_lid == 0) ++e->next_lid;
  l->id = e->next_lid;
  c->l = l;
  __atomic_add_fetch(&e->nlisteners, 1, __ATOMIC_RELAXED);
  if (e->js_listeners++ == 0) uv_ref((uv_handle_t *)&e->async);
  send_cmd(e, c);
  napi_value id;
  AMBIT_NAPI(napi_create_uint32(env, l->id, &id));
  return id;
}

static void link_finalize(napi_env env, void *data, void *hint) { link_unref(data); }

typedef struct {
  const char *name;
  int value;
} code_entry;

static napi_value code_group(napi_env env, const code_entry *c, size_t n) {
  napi_value obj, v;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  for (size_t i = 0; i < n; i++) {
    napi_create_int32(env, c[i].value, &v);
    napi_set_named_property(env, obj, c[i].name, v);
  }
  return obj;
}

/* engineCodes() -> {listen, plan, event, link, fail, log}: engine.h's codes shared with TS, by name. */
static napi_value js_codes(napi_env env, napi_callback_info info) {
#define N(a) (sizeof(a) / sizeof((a)[0]))
  static const code_entry listen[] = {{"outbound", L_OUTBOUND}, {"hbone", L_HBONE}};
  static const code_entry plan[] = {{"plain", PLAN_PLAIN}, {"hbone", PLAN_HBONE}};
  static const code_entry event[] = {{"established", EVT_ESTABLISHED}, {"closed", EVT_CLOSED}, {"flushed", EVT_FLUSHED}};
  static const code_entry link[] = {{"OPEN", LINK_OPEN}, {"PEER_EOF", LINK_PEER_EOF}, {"DONE", LINK_DONE}, {"FAILED", LINK_FAILED}};
  static const code_entry fail[] = {{"CONNECT", FAIL_CONNECT}, {"TLS", FAIL_TLS},   {"STATUS", FAIL_STATUS}, {"REFUSED", FAIL_REFUSED},
                                    {"LOST", FAIL_LOST},       {"RESET", FAIL_RESET}, {"LOCAL", FAIL_LOCAL}};
  static const code_entry log[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
  struct {
    const char *name;
    const code_entry *c;
    size_t n;
  } groups[] = {{"listen", listen, N(listen)}, {"plan", plan, N(plan)}, {"event", event, N(event)},
                {"link", link, N(link)},       {"fail", fail, N(fail)}, {"log", log, N(log)}};
#undef N
  napi_value out, g;
  AMBIT_NAPI(napi_create_object(env, &out));
  for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
    g = code_group(env, groups[i].c, groups[i].n);
    if (g == NULL) return NULL;
    AMBIT_NAPI(napi_set_named_property(env, out, groups[i].name, g));
  }
  return out;
}

/* engineLink() -> link: the shared record of one adopted flow (see flowlink in engine.h). */
static napi_value js_link(napi_env env, napi_callback_info info) {
  flowlink *k = calloc(1, sizeof *k);
  if (k == NULL) {
    napi_throw_error(env, "AMBIT_BUG", "engineLink: out of memory");
    return NULL;
  }
  k->refs = 1;
  napi_value ext;
  if (napi_create_external(env, k, link_finalize, NULL, &ext) != napi_ok) {
    free(k);
    return NULL;
  }
  AMBIT_NAPI(napi_type_tag_object(env, ext, &TAG_LINK));
  return ext;
}

/* engineLinkState(link) -> {state, fail, status, established, reason?} */
static napi_value js_link_state(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!ambit_args(env, info, "engineLinkState", argv, 1, "link")) return NULL;
  flowlink *k = link_of(env, argv[0]);
  if (k == NULL) {
    ambit_type_error(env, "engineLinkState", "link", "must be a link");
    return NULL;
  }
  uint8_t state = __atomic_load_n(&k->state, __ATOMIC_ACQUIRE);
  napi_value out, v;
  AMBIT_NAPI(napi_create_object(env, &out));
  napi_create_uint32(env, state, &v);
  napi_set_named_property(env, out, "state", v);
  napi_get_boolean(env, __atomic_load_n(&k->established, __ATOMIC_ACQUIRE) != 0, &v);
  napi_set_named_property(env, out, "established", v);
  if (state == LINK_FAILED) {
    napi_create_uint32(env, k->fail, &v);
    napi_set_named_property(env, out, "fail", v);
    napi_create_uint32(env, k->status, &v);
    napi_set_named_property(env, out, "status", v);
    napi_set_named_property(env, out, "reason", str(env, k->reason));
  }
  return out;
}

/* engineOpen(engine, sourceId, fd, plan, link) -> flowId: fd (one end of a connected socket pair)
 * becomes the app side of a new flow carried as the HBONE plan says, as if captured and answered
 * with that plan. A valid fd is the engine's even when this throws (it is closed then). */
static napi_value js_open(napi_env env, napi_callback_info info) {
  static const char *fn = "engineOpen";
  napi_value argv[5];
  if (!ambit_args(env, info, fn, argv, 5, "engine, sourceId, fd, plan, link")) return NULL;
  int64_t lid;
  int fd;
  if (!ambit_arg_fd(env, argv[2], fn, "fd", &fd)) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  flowlink *k = e != NULL && ambit_arg_int(env, argv[1], fn, "sourceId", 1, UINT32_MAX, &lid) ? link_of(env, argv[4]) : NULL;
  if (e == NULL || k == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    close(fd);
    if (pending) return NULL;
    ambit_type_error(env, fn, "link", "must be a link (engineLink)");
    return NULL;
  }
  jcmd *c = cmd(C_OPEN, (uint32_t)lid);
  if (c == NULL) {
    close(fd);
    napi_throw_error(env, "AMBIT_BUG", "engineOpen: out of memory");
    return NULL;
  }
  read_plan(env, argv[3], c);
  if (c->t != PLAN_HBONE || c->ctx == NULL || c->key == NULL || c->tag == NULL || c->hdrs == NULL || c->ip == NULL) {
    close(fd);
    eng_cmd_free(c);
    ambit_type_error(env, fn, "plan", "must be an HBONE plan {t: 2, ctx, key, tag, ip, port, authority, headers}");
    return NULL;
  }
  c->fd = fd;
  c->fid = eng_next_id(e);
  c->link = k;
  __atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
  uint32_t fid = c->fid;
  send_cmd(e, c);
  napi_value id;
  AMBIT_NAPI(napi_create_uint32(env, fid, &id));
  return id;
}

/*
 * engineUnlisten(engine, id, handed?): stop accepting; HBONE sessions get GOAWAY (open streams go
 * on). handed = 1: the socket was handed to a new agent; sessions get a shutdown notice and every
 * stream and handshake already here is still served (see close_listener).
 */
static napi_value js_unlisten(napi_env env, napi_callback_info info) {
  static const char *fn = "engineUnlisten";
  napi_value argv[3];
  int64_t id, handed = 0;
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (!ambit_args(env, info, fn, argv, 2, "engine, id")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL || !ambit_arg_int(env, argv[1], fn, "id", 0, UINT32_MAX, &id)) return NULL;
  if (argc >= 3 && !ambit_arg_int(env, argv[2], fn, "handed", 0, 1, &handed)) return NULL;
  if (e->js_listeners > 0 && --e->js_listeners == 0) uv_unref((uv_handle_t *)&e->async);
  jcmd *c = cmd(C_UNLISTEN, (uint32_t)id);
  if (c) c->t = (int32_t)handed;
  send_cmd(e, c);
  return NULL;
}

static napi_value close_cmd(napi_env env, napi_callback_info info, const char *fn, uint8_t type, int64_t min) {
  napi_value argv[3];
  int64_t id;
  char reason[200];
  if (!ambit_args(env, info, fn, argv, 3, "engine, id, reason")) return NULL;
  engine *e = arg_engine(env, argv[0], fn);
  if (e == NULL || !ambit_arg_int(env, argv[1], fn, "id", min, UINT32_MAX, &id)) return NULL;
  if (!ambit_arg_string(env, argv[2], fn, "reason", reason, sizeof reason)) return NULL;
  jcmd *c = cmd(type, (uint32_t)id);
  if (c) c->reason = strdup(reason);
  send_cmd(e, c);
  return NULL;
}

/* engineCloseFlows(engine, listenerId | 0, reason): reset flows (a listener's, or all); async. */
static napi_value js_close_flows(napi_env env, napi_callback_info info) {
  return close_cmd(env, info, "engineCloseFlows", C_CLOSE_FLOWS, 0);
}

/* engineFlush(engine, id): the waiting news goes to JS now, followed by event(EVT_FLUSHED, id). */
static napi_value js_flush(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t id;
  if (!ambit_args(env, info, "engineFlush", argv, 2, "engine, id")) return NULL;
  engine *e = arg_engine(env, argv[0], "engineFlush");
  if (e == NULL || !ambit_arg_int(env, argv[1], "engineFlush", "id", 1, UINT32_MAX, &id)) return NULL;
  jcmd *c = cmd(C_FLUSH, (uint32_t)id);
  if (c == NULL) {
    /* no answer would come: say so rather than leave the caller waiting */
    napi_throw_error(env, "AMBIT_BUG", "engineFlush: out of memory");
    return NULL;
  }
  send_cmd(e, c);
  return NULL;
}

/* engineCloseFlow(engine, flowId, reason): reset one flow; async (its close event follows). */
static napi_value js_close_flow(napi_env env, napi_callback_info info) {
  return close_cmd(env, info, "engineCloseFlow", C_CLOSE_FLOW, 1);
}

/* engineStats(engine) -> {flows, tunnels, listeners} */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!ambit_args(env, info, "engineStats", argv, 1, "engine")) return NULL;
  engine *e = arg_engine(env, argv[0], "engineStats");
  if (e == NULL) return NULL;
  napi_value out, v;
  AMBIT_NAPI(napi_create_object(env, &out));
  napi_create_uint32(env, __atomic_load_n(&e->nflows, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, out, "flows", v);
  napi_create_uint32(env, __atomic_load_n(&e->ntconns, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, out, "tunnels", v);
  napi_create_uint32(env, __atomic_load_n(&e->nlisteners, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, out, "listeners", v);
  struct {
    const char *name;
    uint32_t *p;
  } counters[] = {
      {"starved", &e->nstarved},
      {"acceptEmfile", &e->ctr.accept_emfile},
      {"acceptEnfile", &e->ctr.accept_enfile},
      {"acceptEnobufs", &e->ctr.accept_enobufs},
      {"acceptEnomem", &e->ctr.accept_enomem},
      {"deadPeers", &e->ctr.dead_peers},
      {"abusiveSessions", &e->ctr.abusive},
      {"idleClosed", &e->ctr.idle_closed},
      {"halfClosed", &e->ctr.half_closed},
      {"dialsCancelled", &e->ctr.dials_cancelled},
      {"poolWaits", &e->ctr.pool_waits},
  };
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
    napi_create_uint32(env, __atomic_load_n(counters[i].p, __ATOMIC_RELAXED), &v);
    napi_set_named_property(env, out, counters[i].name, v);
  }
  return out;
}

static void on_async_closed(uv_handle_t *h) {
  engine *e = h->data;
  close(e->epfd);
  close(e->wakefd);
  h2_fini(e);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

/* engineDestroy(engine): cut everything, silently (no events), stop the thread, free the engine. */
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!ambit_args(env, info, "engineDestroy", argv, 1, "engine")) return NULL;
  ehandle *h = tagged(env, argv[0], &TAG_ENGINE);
  if (h == NULL) {
    ambit_type_error(env, "engineDestroy", "engine", "must be an engine (engineCreate)");
    return NULL;
  }
  engine *e = h->e;
  if (e == NULL || e->destroyed) return NULL; /* destroy twice: nothing more to do */
  h->e = NULL; /* from here the handle names no engine: every call through it throws AMBIT_ENGINE_CLOSED */
  e->destroyed = true;
  send_cmd(e, cmd(C_DESTROY, 0));
  pthread_join(e->thread, NULL);
  /* no pool helper hands this engine a socket any more (those already handed are in in_head) */
  ambit_pool_forget(e);
  /* what neither side will read any more */
  for (jmsg *m = e->out_head, *next; m != NULL; m = next) {
    next = m->next;
    eng_msg_free(m);
  }
  for (jcmd *c = e->in_head, *next; c != NULL; c = next) {
    next = c->next;
    if (c->l) {
      ambit_pool_unpin(c->l->pool);
      close(c->l->fd);
      close(c->l->nsfd);
      free(c->l->tag);
      free(c->l);
    }
    eng_cmd_free(c);
  }
  e->out_head = e->out_tail = NULL;
  e->in_head = e->in_tail = NULL;
  napi_delete_reference(env, e->cb_outbound);
  napi_delete_reference(env, e->cb_inbound);
  napi_delete_reference(env, e->cb_verify);
  napi_delete_reference(env, e->cb_context);
  napi_delete_reference(env, e->cb_event);
  if (e->cb_log) napi_delete_reference(env, e->cb_log);
  napi_async_destroy(env, e->actx);
  uv_close((uv_handle_t *)&e->async, on_async_closed);
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
      {"engineSource", NULL, js_source, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineLink", NULL, js_link, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineLinkState", NULL, js_link_state, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineOpen", NULL, js_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineDestroy", NULL, js_destroy, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineCodes", NULL, js_codes, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineFlush", NULL, js_flush, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props) == napi_ok;
}
