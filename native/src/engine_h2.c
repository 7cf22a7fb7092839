/*
 * HBONE connections of the engine: TLS over a non-blocking socket, one nghttp2 session on top,
 * CONNECT streams as flows. Client connections are pooled by the key JS computes (source
 * identity, certificate, expected identities, destination, source pod) and carry at most
 * `streams_per_conn` streams in their life; server connections come from a pod's 15008 listener.
 *
 * Flow control is end to end: bytes from the peer are acknowledged (nghttp2_session_consume)
 * only once the app socket took them, so a slow app slows its stream and nothing else.
 */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define OUT_BATCH (64 * 1024)
#define MAX_HEADER_PAIRS 128
#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_FIELD 256
/*
 * TLS runs over a BIO pair, not the socket: records are sealed into (and opened from) the pair's
 * buffers and move to and from the socket in one syscall per batch, rather than one per 16 kB
 * record as a socket BIO would do.
 */
#define NET_BIO_BYTES (96 * 1024)
/*
 * Plaintext one session may have parsed in one turn before the others are served: a peer that
 * floods (frames, headers, data) gets the engine for at most this much parsing at a time, and the
 * rest of its input waits for the next round (e->more).
 */
#define READ_SLICE (256 * 1024)

/* SSL over a fresh BIO pair for tc, with a reference on ctx. */
static bool tconn_tls(tconn *tc, tlsctx *ctx, bool client) {
  BIO *inner = NULL;
  tc->ssl = SSL_new(ctx->ctx);
  if (tc->ssl == NULL || BIO_new_bio_pair(&inner, NET_BIO_BYTES, &tc->net, NET_BIO_BYTES) != 1) {
    if (tc->ssl) SSL_free(tc->ssl);
    tc->ssl = NULL;
    tc->net = NULL;
    return false;
  }
  SSL_set_bio(tc->ssl, inner, inner);
  if (client) SSL_set_connect_state(tc->ssl);
  else SSL_set_accept_state(tc->ssl);
  tc->ctx = ctx;
  tlsctx_ref(ctx);
  return true;
}

/* A tconn on fd, watched by the engine; no TLS yet. */
static tconn *tconn_alloc(engine *e, listener *l, int fd, bool client) {
  tconn *tc = calloc(1, sizeof *tc);
  if (tc == NULL) return NULL;
  tc->ev.kind = EV_TCONN;
  tc->e = e;
  tc->l = l;
  tc->fd = fd;
  tc->client = client;
  tc->deadline = eng_now(e) + e->handshake_ms;
  tc->last_rx = e->now;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &tc->ev};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    free(tc);
    return NULL;
  }
  l->refs++;
  tc->id = eng_next_id(e);
  tc->next = e->tconns;
  if (e->tconns) e->tconns->prev = tc;
  e->tconns = tc;
  __atomic_add_fetch(&e->ntconns, 1, __ATOMIC_RELAXED);
  return tc;
}

tconn *tconn_new(engine *e, listener *l, int fd, tlsctx *ctx, bool client) {
  tconn *tc = tconn_alloc(e, l, fd, client);
  if (tc == NULL) return NULL;
  tc->handshaking = 1;
  if (!tconn_tls(tc, ctx, client)) {
    tc->fd = -1; /* the caller still owns the socket */
    tconn_kill(tc, "out of memory");
    return NULL;
  }
  return tc;
}

tconn *tconn_accepted(engine *e, listener *l, int fd) {
  tconn *tc = tconn_alloc(e, l, fd, false);
  if (tc != NULL) tc->await_ctx = 1;
  return tc;
}

static void tconn_handshake(tconn *tc);
static void tconn_linger(tconn *tc);
static void tconn_read(tconn *tc);

/* The listener's TLS context arrived (NULL: no certificate, fail closed); start the handshake. */
void tconn_context(tconn *tc, tlsctx *ctx) {
  if (!tc->await_ctx) return;
  tc->await_ctx = 0;
  if (ctx == NULL) {
    tconn_kill(tc, "no certificate");
    return;
  }
  if (!tconn_tls(tc, ctx, false)) {
    tconn_kill(tc, "out of memory");
    return;
  }
  tc->handshaking = 1;
  tconn_handshake(tc);
}

/* Stop using it for new streams, let the open ones finish, then close (GOAWAY). */
void tconn_retire(tconn *tc) {
  tc->goaway = 1;
  if (tc->active == 0 && tc->waiting == NULL) {
    if (tc->h2 != NULL) {
      nghttp2_session_terminate_session(tc->h2, NGHTTP2_NO_ERROR);
      tconn_flush(tc);
    }
    tconn_kill(tc, NULL);
  }
}

void tconn_kill(tconn *tc, const char *reason) {
  if (tc->dead) return;
  tc->dead = 1;
  engine *e = tc->e;
  if (tc->more) {
    for (tconn **pp = &e->more; *pp != NULL; pp = &(*pp)->mnext) {
      if (*pp == tc) {
        *pp = tc->mnext;
        break;
      }
    }
    tc->more = 0;
    tc->mnext = NULL;
  }
  if (tc->errors > e->abuse_budget && !tc->client) reason = "session closed: too many protocol errors";
  char why[256];
  snprintf(why, sizeof why, "hbone: %s", reason ? reason : "connection closed");
  /* what the flows learn: the TCP dial failed, TLS (handshake or identity) failed, or the
   * connection was lost under them */
  uint8_t kind = tc->tcp_connecting ? FAIL_CONNECT : !tc->ready ? FAIL_TLS : FAIL_LOST;
  while (tc->waiting) {
    flow *f = tc->waiting;
    tc->waiting = f->wnext;
    f->wnext = NULL;
    f->queued = 0;
    f->tc = NULL;
    flow_fail(f, kind);
    flow_abort(f, why);
  }
  tc->queued = 0;
  while (tc->flows) {
    flow *f = tc->flows;
    h2_detach(f);
    if (!f->established) flow_fail(f, kind);
    flow_abort(f, why);
  }
  if (tc->fd >= 0) {
    close(tc->fd);
    tc->fd = -1;
  }
  __atomic_sub_fetch(&e->ntconns, 1, __ATOMIC_RELAXED);
  e->ndead++;
  tc->gnext = e->dead_tconns;
  e->dead_tconns = tc;
}

/* Called by eng_reap (unlinked there), outside every nghttp2 callback. */
void tconn_free(tconn *tc) {
  listener_unref(tc->l);
  if (tc->h2) nghttp2_session_del(tc->h2);
  if (tc->ssl) SSL_free(tc->ssl);
  if (tc->net) BIO_free(tc->net);
  if (tc->ctx) tlsctx_unref(tc->ctx);
  free(tc->out.p);
  free(tc->key);
  free(tc->tag);
  free(tc->peer);
  free(tc);
}

void tconn_attach(tconn *tc, flow *f) {
  f->tc = tc;
  f->tprev = NULL;
  f->tnext = tc->flows;
  if (tc->flows) tc->flows->tprev = f;
  tc->flows = f;
  tc->active++;
}

/* The flow leaves its stream and its connection (the stream may live on in nghttp2 until reset). */
void h2_detach(flow *f) {
  tconn *tc = f->tc;
  if (tc == NULL) return;
  if (f->sid > 0 && tc->h2 != NULL && !tc->dead) {
    /* Bytes held for the app are acknowledged only as the app takes them, which needs the
     * stream; it is going, so give them back to the connection window now (else it shrinks). */
    uint32_t held = f->to_app.len - f->to_app.off;
    if (held > 0) {
      nghttp2_session_consume(tc->h2, f->sid, held);
      eng_dirty(tc);
    }
    nghttp2_session_set_stream_user_data(tc->h2, f->sid, NULL);
  }
  if (f->tprev) f->tprev->tnext = f->tnext;
  else if (tc->flows == f) tc->flows = f->tnext;
  if (f->tnext) f->tnext->tprev = f->tprev;
  f->tprev = f->tnext = NULL;
  f->tc = NULL;
  f->sid = -1;
  tc->active--;
  if (tc->active == 0) {
    tc->idle_since = eng_now(tc->e);
    if (tc->client && tc->goaway && tc->waiting == NULL && !tc->dead) {
      eng_dirty(tc);
    }
  }
}

/* ---- nghttp2 callbacks ---- */

static flow *stream_flow(nghttp2_session *s, int32_t sid) {
  return sid > 0 ? nghttp2_session_get_stream_user_data(s, sid) : NULL;
}

static ssize_t data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  flow *f = stream_flow(s, sid);
  if (f == NULL || f->dead) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  bool early = !f->server && !f->established;
  if (early) {
    /* Before the answer every byte sent is also kept (up to EARLY_MAX), so a refused stream can
     * be replayed on a fresh connection; a retried stream sends those first. */
    ebuf *b = &f->early;
    if (f->early_sent < b->len) {
      size_t n = b->len - f->early_sent < length ? b->len - f->early_sent : length;
      memcpy(buf, b->p + f->early_sent, n);
      f->early_sent += (uint32_t)n;
      return (ssize_t)n;
    }
    if (f->app_eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    if (b->len >= EARLY_MAX) {
      f->deferred = 1; /* the rest waits for the answer */
      return NGHTTP2_ERR_DEFERRED;
    }
    if (length > EARLY_MAX - b->len) length = EARLY_MAX - b->len;
  }
  if (!f->app_r) {
    f->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  for (;;) {
    ssize_t n = read(f->app_fd, buf, length);
    if (n > 0) {
      f->from_app_n += (uint64_t)n;
      if (early) {
        if (!flow_buf_append(&f->early, (const char *)buf, (size_t)n)) {
          flow_set_err(f, "out of memory");
          return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        f->early_sent = f->early.len;
      }
      f->last_active = f->e->now;
      /* A short read emptied the socket: the next bytes bring a new edge, so skip the EAGAIN read.
       * Not once the peer closed: its FIN may have come with the data, and no edge follows. */
      if ((size_t)n < length && !f->app_hup) f->app_r = 0;
      return n;
    }
    if (n == 0) {
      f->app_eof = 1;
      f->app_r = 0;
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      f->app_r = 0;
      f->deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
    char why[96];
    snprintf(why, sizeof why, "read from app: %s", ambit_errno_name(errno));
    flow_set_err(f, why);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
}

/* DATA frames as large as the peer allows (nghttp2 would cut them at 16 kB otherwise). */
static ssize_t data_length(nghttp2_session *s, uint8_t type, int32_t sid, int32_t conn_window, int32_t stream_window,
                           uint32_t max_frame, void *user) {
  ssize_t n = ((tconn *)user)->e->max_frame;
  if ((ssize_t)max_frame < n) n = (ssize_t)max_frame;
  if (conn_window < n) n = conn_window;
  if (stream_window < n) n = stream_window;
  return n > 0 ? n : 1;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *fr, void *user) {
  tconn *tc = user;
  if (tc->dead) return NGHTTP2_ERR_CALLBACK_FAILURE; /* killed by a callback earlier in this read */
  if (tc->client || fr->hd.type != NGHTTP2_HEADERS || fr->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  flow *f = flow_new(tc->e, tc->l, M_H2, -1);
  if (f == NULL) {
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, fr->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  f->server = 1;
  f->sid = fr->hd.stream_id;
  f->silent = 1; /* until JS hears of it */
  tconn_attach(tc, f);
  nghttp2_session_set_stream_user_data(s, f->sid, f);
  return 0;
}

static char *dup_field(const uint8_t *v, size_t n) {
  if (n > MAX_FIELD) n = MAX_FIELD;
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, v, n);
    p[n] = 0;
  }
  return p;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user) {
  tconn *tc = user;
  flow *f = stream_flow(s, fr->hd.stream_id);
  if (f == NULL) return 0;
  if (tc->client) {
    if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3) {
      f->status = (uint16_t)((value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0'));
    }
    return 0;
  }
  if (fr->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  f->hdr_pairs++;
  f->hdr_bytes += (uint32_t)(namelen + valuelen + 32);
  if (f->hdr_pairs > MAX_HEADER_PAIRS || f->hdr_bytes > MAX_HEADER_BYTES) {
    if (!f->too_big && tconn_abuse(tc, "request headers over the limit")) return NGHTTP2_ERR_CALLBACK_FAILURE;
    f->too_big = 1;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
    f->saw_method = 1;
    f->is_connect = valuelen == 7 && memcmp(value, "CONNECT", 7) == 0;
  } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0 && f->authority == NULL) {
    f->authority = dup_field(value, valuelen);
  } else if (namelen == 9 && memcmp(name, "forwarded", 9) == 0 && f->forwarded == NULL) {
    f->forwarded = dup_field(value, valuelen);
  }
  return 0;
}

static void respond(tconn *tc, int32_t sid, int status) {
  char code[4];
  snprintf(code, sizeof code, "%03d", status);
  nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE}};
  nghttp2_submit_response(tc->h2, sid, nv, 1, NULL);
  eng_dirty(tc);
}

/* A complete CONNECT request on the server: JS decides (h2_inbound_decision carries it out). */
static bool server_request(tconn *tc, flow *f, bool end_stream) {
  engine *e = tc->e;
  if (!f->is_connect) {
    respond(tc, f->sid, f->saw_method ? 405 : 400);
    return !tconn_abuse(tc, f->saw_method ? "a request other than CONNECT" : "a request without :method");
  }
  if ((tc->l->closed && !tc->l->handed) || tc->goaway) {
    respond(tc, f->sid, 503);
    return true;
  }
  jmsg *m = eng_msg(J_INBOUND);
  if (m == NULL) {
    respond(tc, f->sid, 503);
    return true;
  }
  if (end_stream) f->peer_eof = 1;
  m->lid = tc->l->id;
  m->id = f->id;
  m->s[0] = strdup(tc->peer);
  m->s[1] = f->authority ? f->authority : strdup("");
  m->s[2] = f->forwarded;
  m->s[3] = strdup(tc->rip);
  m->p1 = tc->rport;
  m->s[4] = strdup(tc->lip);
  m->p2 = tc->lport;
  f->authority = f->forwarded = NULL;
  eng_post(e, m);
  return true;
}

/* JS's answer to a CONNECT: a status to refuse with, or the app to dial. */
void h2_inbound_decision(flow *f, jcmd *c) {
  tconn *tc = f->tc;
  if (tc == NULL || tc->dead || f->sid <= 0 || f->established || f->dialing || !f->silent) return;
  if (c->status != 0) {
    int status = c->status < 400 || c->status > 599 ? 500 : c->status;
    respond(tc, f->sid, status);
    return;
  }
  f->silent = 0;
  if (c->fd >= 0) {
    /* JS holds the other end of this socket: it is the app, already connected */
    f->app_fd = c->fd;
    c->fd = -1;
    f->link = c->link;
    c->link = NULL;
    if (!flow_watch_app(f)) {
      h2_server_connected(f, false, "epoll");
      return;
    }
    h2_server_connected(f, true, NULL);
    return;
  }
  char why[200];
  int fd = -1;
  if (flow_dial(f, c->ip ? c->ip : "", c->port, c->spoof, &fd, why, sizeof why) != 0) {
    h2_server_connected(f, false, why);
    return;
  }
  f->app_fd = fd;
}

/* The inbound flow's app connection is up (or failed): answer the CONNECT. */
void h2_server_connected(flow *f, bool ok, const char *why) {
  tconn *tc = f->tc;
  if (tc == NULL || f->sid <= 0) {
    flow_abort(f, why ? why : "stream gone");
    return;
  }
  if (!ok) {
    char msg[256];
    snprintf(msg, sizeof msg, "upstream connect failed: %s", why);
    flow_set_err(f, msg);
    int32_t sid = f->sid;
    respond(tc, sid, 503);
    h2_detach(f);
    flow_abort(f, msg);
    return;
  }
  nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE}};
  nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = data_read};
  if (nghttp2_submit_response(tc->h2, f->sid, nv, 1, &prd) != 0) {
    flow_abort(f, "hbone: cannot answer");
    return;
  }
  f->established = 1;
  f->last_active = tc->e->now;
  eng_event(f->e, 1, f);
  eng_dirty(tc);
  flow_flush_to_app(f);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *user) {
  tconn *tc = user;
  if (tc->dead) return NGHTTP2_ERR_CALLBACK_FAILURE;
  if (fr->hd.type == NGHTTP2_GOAWAY) {
    tc->goaway = 1;
    return 0;
  }
  flow *f = stream_flow(s, fr->hd.stream_id);
  if (f == NULL) return 0;
  bool end = (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (fr->hd.type == NGHTTP2_HEADERS) {
    if (!tc->client && fr->headers.cat == NGHTTP2_HCAT_REQUEST) {
      return server_request(tc, f, end) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (tc->client && fr->headers.cat == NGHTTP2_HCAT_RESPONSE) {
      if (f->status != 200) {
        char why[64];
        snprintf(why, sizeof why, "hbone: CONNECT answered %u", f->status);
        flow_set_err(f, why);
        flow_fail(f, FAIL_STATUS);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->sid, NGHTTP2_CANCEL);
        h2_detach(f);
        flow_abort(f, why);
        eng_dirty(tc);
        return 0;
      }
      f->established = 1;
      f->last_active = tc->e->now;
      eng_event(f->e, 1, f);
      /* answered: nothing will be replayed */
      flow_buf_reset(&f->early);
      f->early_sent = 0;
      free(f->hdrs);
      f->hdrs = NULL;
      h2_resume(f);
    }
  }
  if (end && (fr->hd.type == NGHTTP2_DATA || fr->hd.type == NGHTTP2_HEADERS)) {
    f->peer_eof = 1;
    flow_flush_to_app(f);
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                         void *user) {
  flow *f = stream_flow(s, sid);
  if (f == NULL || f->dead) {
    nghttp2_session_consume(s, sid, len);
    return 0;
  }
  size_t done = 0;
  if (f->to_app.len == 0 && f->app_w && !f->dialing && f->app_fd >= 0 && (f->established || !f->server)) {
    for (;;) {
      ssize_t n = write(f->app_fd, data, len);
      if (n >= 0) {
        done = (size_t)n;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        f->app_w = 0;
        break;
      }
      char why[96];
      snprintf(why, sizeof why, "write to app: %s", ambit_errno_name(errno));
      flow_set_err(f, why);
      nghttp2_session_consume(s, sid, len);
      nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
      h2_detach(f);
      flow_abort(f, why);
      return 0;
    }
    if (done > 0) {
      f->to_app_n += done;
      nghttp2_session_consume(s, sid, done);
    }
    f->last_active = f->e->now;
  }
  if (done < len && !flow_buf_append(&f->to_app, (const char *)data + done, len - done)) {
    nghttp2_session_consume(s, sid, len - done);
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
    h2_detach(f);
    flow_abort(f, "out of memory");
  }
  return 0;
}

/*
 * A client stream refused before it was answered (RST_STREAM REFUSED_STREAM, or above the
 * last-stream-id of a GOAWAY): the server guarantees it processed nothing, so it is opened once
 * more on a fresh pooled connection, with the bytes already sent replayed. False when it cannot
 * be (already retried, nothing to resend the CONNECT with).
 */
static bool h2_retry(tconn *tc, flow *f) {
  if (f->retried || f->hdrs == NULL || f->dead) return false;
  engine *e = tc->e;
  tc->goaway = 1; /* no new streams on the connection that refused one */
  h2_detach(f);
  f->retried = 1;
  f->early_sent = 0;
  f->deferred = 0;
  char why[200];
  tconn *nt = pool_get(e, f->l, tc->ctx, tc->key, tc->tag, tc->rip, tc->rport, why, sizeof why);
  if (nt == NULL) {
    char msg[256];
    snprintf(msg, sizeof msg, "hbone: retry after a refused stream: %s", why);
    flow_fail(f, FAIL_CONNECT);
    flow_abort(f, msg);
    return true;
  }
  tconn_enqueue(nt, f);
  return true;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user) {
  flow *f = stream_flow(s, sid);
  if (f == NULL) return 0;
  tconn *tc = user;
  if (tc->client && code == NGHTTP2_REFUSED_STREAM && !f->established && h2_retry(tc, f)) return 0;
  h2_detach(f);
  if (code != NGHTTP2_NO_ERROR || !f->established) {
    if (!f->established) flow_fail(f, code == NGHTTP2_REFUSED_STREAM ? FAIL_REFUSED : FAIL_LOST);
    char why[96];
    if (f->too_big) snprintf(why, sizeof why, "hbone: request headers over the limit");
    else if (code != NGHTTP2_NO_ERROR) snprintf(why, sizeof why, "hbone: stream reset (%s)", nghttp2_http2_strerror(code));
    else snprintf(why, sizeof why, "hbone: stream closed before it was established");
    flow_abort(f, why);
    return 0;
  }
  f->peer_eof = 1;
  flow_flush_to_app(f);
  flow_maybe_finish(f);
  return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *fr, int err, void *user) {
  tconn *tc = user;
  if (tc->client || tc->dead) return 0;
  char what[96];
  snprintf(what, sizeof what, "an invalid frame (%s)", nghttp2_strerror(err));
  return tconn_abuse(tc, what) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/*
 * The abuse budget of a server session: streams reset for over-limit headers, invalid frames,
 * requests other than CONNECT. Each costs the engine parsing (a header block can be 64 KiB of
 * HPACK) and the peer nothing, so past `abuse_budget` of them the session ends: GOAWAY
 * (ENHANCE_YOUR_CALM) and close. True when the caller must stop parsing (return a fatal error).
 */
bool tconn_abuse(tconn *tc, const char *what) {
  engine *e = tc->e;
  if (tc->client || tc->h2 == NULL) return false;
  if (++tc->errors <= e->abuse_budget) return false;
  if (tc->errors == e->abuse_budget + 1) {
    eng_count(&e->ctr.abusive);
    eng_log(e, LOG_WARN, "hbone session from %s (%s): %u protocol errors, the last %s; closed with GOAWAY", tc->rip,
            tc->peer ? tc->peer : "?", tc->errors, what);
    nghttp2_session_terminate_session(tc->h2, NGHTTP2_ENHANCE_YOUR_CALM);
  }
  return true;
}

bool h2_init(engine *e) {
  nghttp2_session_callbacks *cbs[2];
  nghttp2_option *opts[2];
  for (int i = 0; i < 2; i++) {
    if (nghttp2_session_callbacks_new(&cbs[i]) != 0 || nghttp2_option_new(&opts[i]) != 0) return false;
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs[i], on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs[i], on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs[i], on_stream_close);
    nghttp2_session_callbacks_set_on_header_callback(cbs[i], on_header);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs[i], on_begin_headers);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs[i], on_invalid_frame);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs[i], data_length);
    nghttp2_option_set_no_auto_window_update(opts[i], 1);
    nghttp2_option_set_max_outbound_ack(opts[i], 1000);
    nghttp2_option_set_max_settings(opts[i], 32);
    /* no priority tree of closed streams: HBONE streams carry no priorities, and each would cost memory */
    nghttp2_option_set_no_closed_streams(opts[i], 1);
  }
  /* server: what a hostile client may do (rapid reset, CONTINUATION floods, header bombs) */
  nghttp2_option_set_stream_reset_rate_limit(opts[1], 100, 20);
  nghttp2_option_set_max_continuations(opts[1], 8);
  nghttp2_option_set_max_deflate_dynamic_table_size(opts[1], 4096);
  e->cbs_client = cbs[0];
  e->cbs_server = cbs[1];
  e->opt_client = opts[0];
  e->opt_server = opts[1];
  return true;
}

void h2_fini(engine *e) {
  if (e->cbs_client) nghttp2_session_callbacks_del(e->cbs_client);
  if (e->cbs_server) nghttp2_session_callbacks_del(e->cbs_server);
  if (e->opt_client) nghttp2_option_del(e->opt_client);
  if (e->opt_server) nghttp2_option_del(e->opt_server);
}

/* ---- the TLS connection ---- */

/* The handshake is done: the peer's chain goes to JS for the SPIFFE rules (tconn_verified). */
static void handshake_done(tconn *tc) {
  engine *e = tc->e;
  const unsigned char *alpn = NULL;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(tc->ssl, &alpn, &alpn_len);
  if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
    tconn_kill(tc, "tls: peer did not negotiate h2");
    return;
  }
  if (SSL_get_verify_result(tc->ssl) != X509_V_OK) {
    tconn_kill(tc, "tls: peer certificate not verified");
    return;
  }
  jmsg *m = eng_msg(J_VERIFY);
  if (m == NULL || !tls_peer_chain(tc->ssl, m)) {
    if (m) eng_msg_free(m);
    tconn_kill(tc, "tls: cannot read the peer chain");
    return;
  }
  m->id = tc->id;
  m->ctx = tc->ctx;
  tlsctx_ref(tc->ctx);
  m->s[0] = strdup(tc->client ? tc->tag : (tc->l->tag ? tc->l->tag : ""));
  tc->handshaking = 0;
  tc->verifying = 1;
  eng_post(e, m);
}

/* JS named the peer (NULL: refused): the HTTP/2 session starts. */
void tconn_verified(tconn *tc, const char *peer) {
  engine *e = tc->e;
  if (!tc->verifying) return;
  tc->verifying = 0;
  if (peer == NULL || peer[0] == 0) {
    tconn_kill(tc, "tls: peer identity refused");
    return;
  }
  tc->peer = strdup(peer);
  int rv = tc->client ? nghttp2_session_client_new2(&tc->h2, e->cbs_client, tc, e->opt_client)
                      : nghttp2_session_server_new2(&tc->h2, e->cbs_server, tc, e->opt_server);
  if (rv != 0 || tc->peer == NULL) {
    tconn_kill(tc, "out of memory");
    return;
  }
  nghttp2_settings_entry iv[4];
  size_t niv = 0;
  iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, e->window};
  iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_FRAME_SIZE, e->max_frame};
  if (tc->client) {
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
  } else {
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, e->max_streams};
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES};
  }
  nghttp2_submit_settings(tc->h2, NGHTTP2_FLAG_NONE, iv, niv);
  nghttp2_session_set_local_window_size(tc->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)e->conn_window);
  tc->ready = 1;
  tc->idle_since = eng_now(e);
  /* Streams queued while connecting, in arrival order (the list is newest first). */
  flow *rev = NULL;
  while (tc->waiting) {
    flow *f = tc->waiting;
    tc->waiting = f->wnext;
    f->wnext = rev;
    f->queued = 0;
    rev = f;
  }
  tc->queued = 0;
  while (rev) {
    flow *f = rev;
    rev = f->wnext;
    f->wnext = NULL;
    f->tc = NULL;
    if (!f->dead) h2_client_submit(tc, f);
  }
  /* what came with or after the handshake's end waited for this */
  tc->r = 1;
  tconn_read(tc);
  if (!tc->dead) tconn_flush(tc);
}

void h2_client_submit(tconn *tc, flow *f) {
  nghttp2_nv nv[16];
  size_t n = 0;
  nv[n++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE};
  const char *p = f->hdrs, *end = f->hdrs + f->hdrs_len;
  while (p != NULL && p < end && n < 16) {
    const char *name = p;
    size_t nl = strlen(name);
    const char *value = name + nl + 1;
    if (value >= end) break; /* a name without a value (or a trailing NUL): not past the buffer */
    size_t vl = strlen(value);
    nv[n++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nl, vl, NGHTTP2_NV_FLAG_NONE};
    p = value + vl + 1;
  }
  nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = data_read};
  int32_t sid = nghttp2_submit_request(tc->h2, NULL, nv, n, &prd, f);
  /* the headers are kept until the answer (a refused stream is sent again: h2_retry) */
  if (sid < 0) {
    flow_abort(f, "hbone: cannot open a stream");
    return;
  }
  tconn_attach(tc, f);
  f->sid = sid;
  tc->started++;
  if (tc->started >= tc->e->streams_per_conn) tc->goaway = 1;
  eng_dirty(tc);
}

/* Open the flow's stream now, or once the handshake is done. */
void tconn_enqueue(tconn *tc, flow *f) {
  if (tc->ready) {
    h2_client_submit(tc, f);
    return;
  }
  f->tc = tc;
  f->queued = 1;
  f->wnext = tc->waiting;
  tc->waiting = f;
  tc->queued++;
}

/* A queued flow leaves its connection's wait list (it was aborted before the handshake). */
void tconn_dequeue(flow *f) {
  tconn *tc = f->tc;
  if (!f->queued || tc == NULL) return;
  for (flow **pp = &tc->waiting; *pp != NULL; pp = &(*pp)->wnext) {
    if (*pp == f) {
      *pp = f->wnext;
      break;
    }
  }
  f->wnext = NULL;
  f->queued = 0;
  f->tc = NULL;
  tc->queued--;
  if (tc->queued == 0 && tc->active == 0 && tc->waiting == NULL && !tc->ready) {
    if (tc->tcp_connecting) {
      /* still in SYN-SENT and nobody waits for it: cancel the dial (the next client dials anew) */
      eng_count(&tc->e->ctr.dials_cancelled);
      tconn_kill(tc, "no client waits for this connection");
      return;
    }
    /* nobody waits for it any more; let it finish the handshake and go idle in the pool */
    tc->idle_since = eng_now(tc->e);
  }
}

void h2_resume(flow *f) {
  tconn *tc = f->tc;
  if (!f->deferred || tc == NULL || tc->h2 == NULL || f->sid <= 0) return;
  f->deferred = 0;
  nghttp2_session_resume_data(tc->h2, f->sid);
  eng_dirty(tc);
}

static bool out_append(tconn *tc, const uint8_t *d, size_t n) {
  return flow_buf_append(&tc->out, (const char *)d, n);
}

/* Sealed records from the BIO pair to the socket. False once the connection is gone. */
static bool net_out(tconn *tc) {
  for (;;) {
    char *p;
    int avail = BIO_nread0(tc->net, &p);
    if (avail <= 0) return true;
    if (!tc->w) return true;
    ssize_t n = write(tc->fd, p, (size_t)avail);
    if (n > 0) {
      BIO_nread(tc->net, &p, (int)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      tc->w = 0;
      return true;
    }
    char why[96];
    snprintf(why, sizeof why, "write: %s", ambit_errno_name(n < 0 ? errno : EIO));
    tconn_kill(tc, why);
    return false;
  }
}

/* Socket bytes into the BIO pair: 1 when some came, 0 when none (would block), -1 when gone. */
static int net_in(tconn *tc) {
  if (!tc->r) return 0;
  char *p;
  int room = BIO_nwrite0(tc->net, &p);
  if (room <= 0) return 0; /* full: SSL has to read first */
  for (;;) {
    ssize_t n = read(tc->fd, p, (size_t)room);
    if (n > 0) {
      BIO_nwrite(tc->net, &p, (int)n);
      if (n < room && !tc->hup) tc->r = 0; /* emptied it (see data_read) */
      tc->last_rx = tc->e->now;
      tc->ping_sent = 0; /* any bytes from the peer show it is alive */
      return 1;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      tc->r = 0;
      return 0;
    }
    if (n == 0) {
      /* Not killed here: records read before the FIN (in the BIO pair or decrypted but not yet
       * parsed) may end streams cleanly, and must reach nghttp2 first (the caller kills). */
      tc->eof = 1;
      tc->r = 0;
      return 0;
    }
    char why[96];
    snprintf(why, sizeof why, "read: %s", ambit_errno_name(errno));
    tconn_kill(tc, why);
    return -1;
  }
}

/* Encrypt and send what nghttp2 has, in batches of up to OUT_BATCH bytes per SSL_write. */
void tconn_flush(tconn *tc) {
  if (tc->dead || !tc->ready || tc->lingering) return;
  for (;;) {
    ebuf *b = &tc->out;
    if (b->len > b->off) {
      ERR_clear_error();
      int n = SSL_write(tc->ssl, b->p + b->off, (int)(b->len - b->off));
      if (n > 0) {
        b->off += (uint32_t)n;
        if (b->off == b->len) b->off = b->len = 0;
        continue;
      }
      int err = SSL_get_error(tc->ssl, n);
      if (err == SSL_ERROR_WANT_WRITE) {
        /* the pair is full: move it to the socket, and go on only if all of it left */
        if (!net_out(tc)) return;
        if (BIO_ctrl_pending(tc->net) > 0) return;
        continue;
      }
      if (err == SSL_ERROR_WANT_READ) return;
      char why[256];
      tls_error_text(why, sizeof why, "tls write");
      tconn_kill(tc, why);
      return;
    }
    while (b->len < OUT_BATCH) {
      const uint8_t *d;
      ssize_t k = nghttp2_session_mem_send(tc->h2, &d);
      if (k < 0) {
        tconn_kill(tc, nghttp2_strerror((int)k));
        return;
      }
      if (k == 0) break;
      if (b->len == 0 && k >= 16384) {
        /* a bulk DATA frame: sealed straight from nghttp2's buffer (valid until the next
         * mem_send), no copy; only a part the TLS layer could not take is kept */
        ERR_clear_error();
        int n = SSL_write(tc->ssl, d, (int)k);
        if (n == k) continue;
        if (n <= 0) {
          int err = SSL_get_error(tc->ssl, n);
          if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ) {
            char why[256];
            tls_error_text(why, sizeof why, "tls write");
            tconn_kill(tc, why);
            return;
          }
          n = 0;
        }
        if (!out_append(tc, d + n, (size_t)(k - n))) {
          tconn_kill(tc, "out of memory");
          return;
        }
        break;
      }
      if (!out_append(tc, d, (size_t)k)) {
        tconn_kill(tc, "out of memory");
        return;
      }
    }
    if (b->len == 0) break;
  }
  if (!net_out(tc)) return;
  if (tc->out.cap > 0 && tc->out.len == 0 && tc->active == 0) {
    free(tc->out.p);
    tc->out.p = NULL;
    tc->out.cap = 0;
  }
  if (!nghttp2_session_want_read(tc->h2) && !nghttp2_session_want_write(tc->h2)) {
    if (!tc->client && tc->errors > tc->e->abuse_budget) tconn_linger(tc); /* its GOAWAY is out */
    else tconn_kill(tc, "session finished");
    return;
  }
  if (tc->client && tc->goaway && tc->active == 0 && tc->waiting == NULL) {
    nghttp2_session_terminate_session(tc->h2, NGHTTP2_NO_ERROR);
    const uint8_t *d;
    ssize_t k;
    while ((k = nghttp2_session_mem_send(tc->h2, &d)) > 0) SSL_write(tc->ssl, d, (int)k);
    if (net_out(tc)) tconn_kill(tc, NULL);
  }
}

/* Parse what was gathered; false once the connection is gone. */
static bool h2_feed(tconn *tc, size_t n) {
  ssize_t rv = nghttp2_session_mem_recv(tc->h2, (const uint8_t *)tc->e->tlsbuf, n);
  if (rv >= 0) return !tc->dead;
  char why[128];
  snprintf(why, sizeof why, "http2: %s", nghttp2_strerror((int)rv));
  /* tell the peer why before going (GOAWAY is queued by nghttp2 for protocol errors) */
  tconn_flush(tc);
  if (!tc->lingering) tconn_kill(tc, why);
  return false;
}

/* How long a session closed for abuse keeps reading (and dropping) what its peer still sends. */
#define LINGER_MS 2000

/*
 * A session closed for abuse: its GOAWAY is out; now FIN, and read and drop whatever the peer
 * still sends until its FIN or LINGER_MS, and only then close. Closing at once with its bytes
 * unread would send an RST, and the peer's TCP stack may drop the GOAWAY on the floor with it,
 * so it would never learn why.
 */
static void tconn_linger(tconn *tc) {
  if (tc->lingering || tc->dead) return;
  engine *e = tc->e;
  tc->lingering = 1;
  char why[96];
  snprintf(why, sizeof why, "hbone: session closed: too many protocol errors");
  while (tc->flows) {
    flow *f = tc->flows;
    h2_detach(f);
    if (!f->established) flow_fail(f, FAIL_LOST);
    flow_abort(f, why);
  }
  shutdown(tc->fd, SHUT_WR);
  tc->deadline = e->now + LINGER_MS;
}

/* Lingering: drop what arrives, a slice at a time; close at EOF or on an error. */
static void linger_read(tconn *tc) {
  engine *e = tc->e;
  for (size_t got = 0; got < READ_SLICE;) {
    ssize_t n = read(tc->fd, e->rbuf, sizeof e->rbuf);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    tconn_kill(tc, NULL);
    return;
  }
  if (!tc->more) {
    tc->more = 1;
    tc->mnext = e->more;
    e->more = tc;
  }
}

/*
 * Decrypt records into one buffer until it is full or the socket is empty, then hand the lot to
 * nghttp2: a bulk transfer reaches the app in writes of up to TLS_READ_BATCH, not one per 16 kB
 * record. Small messages go on at once (the socket is empty after them).
 */
static void tconn_read(tconn *tc) {
  engine *e = tc->e;
  size_t fill = 0, fed = 0;
  while (!tc->dead) {
    if (fill == sizeof e->tlsbuf) {
      if (!h2_feed(tc, fill)) return;
      fed += fill;
      fill = 0;
      if (fed >= READ_SLICE) {
        /* this session had its turn: the rest of its input after the other events */
        if (!tc->more) {
          tc->more = 1;
          tc->mnext = e->more;
          e->more = tc;
        }
        return;
      }
    }
    ERR_clear_error();
    int n = SSL_read(tc->ssl, e->tlsbuf + fill, (int)(sizeof e->tlsbuf - fill));
    if (n > 0) {
      fill += (size_t)n;
      continue;
    }
    int err = SSL_get_error(tc->ssl, n);
    if (err == SSL_ERROR_WANT_READ) {
      if (net_in(tc) > 0) continue;
      break;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
      if (!net_out(tc) || BIO_ctrl_pending(tc->net) > 0) break;
      continue;
    }
    /* the peer went: what it sent before still counts */
    if (fill > 0 && !h2_feed(tc, fill)) return;
    fill = 0;
    char why[256];
    if (err == SSL_ERROR_ZERO_RETURN) {
      snprintf(why, sizeof why, "peer closed the connection");
      ERR_clear_error();
    } else {
      tls_error_text(why, sizeof why, "tls read");
    }
    tconn_kill(tc, why);
    return;
  }
  if (fill > 0 && !tc->dead && !h2_feed(tc, fill)) return;
  /* The FIN came after everything above: streams those bytes ended are closed by now, and only
   * the ones still open fail with it. What nghttp2 queued (a GOAWAY, say) goes out first. */
  if (tc->eof && !tc->dead) {
    tconn_flush(tc);
    tconn_kill(tc, "peer closed the connection");
  }
}

void tconn_more(tconn *tc) {
  if (tc->lingering) {
    linger_read(tc);
    return;
  }
  tconn_read(tc);
  if (!tc->dead) eng_dirty(tc);
}

/* Deadlines of one connection; from the engine's tick. */
void tconn_tick(tconn *tc, uint64_t now) {
  engine *e = tc->e;
  if (tc->lingering) {
    if (now >= tc->deadline) tconn_kill(tc, NULL);
    return;
  }
  if (tc->handshaking || tc->await_ctx || tc->verifying) {
    if (now >= tc->deadline) tconn_kill(tc, tc->tcp_connecting ? "connect: ETIMEDOUT" : "tls handshake timed out");
    return;
  }
  if (!tc->ready || tc->h2 == NULL) return;
  if (tc->client && tc->active == 0 && tc->queued == 0 && now - tc->idle_since >= e->idle_ms) {
    tconn_retire(tc);
    return;
  }
  if (!tc->client && tc->active == 0 && now - tc->idle_since >= 2ull * e->idle_ms) {
    /* a session nobody uses: twice the clients' idle time, so a client normally leaves first */
    tconn_retire(tc);
    return;
  }
  if (e->ping_ms == 0 || tc->dead) return;
  /* Keepalive: a PING once the peer was silent for ping_ms; any bytes from it clear the wait
   * (net_in). No answer within ping_timeout_ms: the peer (or the path to it) is gone. */
  if (tc->ping_sent != 0) {
    if (now - tc->ping_sent < e->ping_timeout_ms) return;
    eng_count(&e->ctr.dead_peers);
    char why[96];
    snprintf(why, sizeof why, "peer did not answer PING within %u ms", e->ping_timeout_ms);
    eng_log(e, LOG_INFO, "hbone connection %s %s port %d: %s", tc->client ? "to" : "from", tc->rip, tc->rport, why);
    tconn_kill(tc, why);
    return;
  }
  if (now - tc->last_rx >= e->ping_ms && nghttp2_submit_ping(tc->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
    tc->ping_sent = now;
    eng_dirty(tc);
  }
}

static void tconn_handshake(tconn *tc) {
  if (tc->tcp_connecting) {
    if (!tc->w) return;
    int soerr = ambit_socket_error(tc->fd);
    if (soerr != 0) {
      char why[96];
      snprintf(why, sizeof why, "connect: %s", ambit_errno_name(soerr));
      tconn_kill(tc, why);
      return;
    }
    tc->tcp_connecting = 0;
  }
  for (;;) {
    ERR_clear_error();
    int rc = SSL_do_handshake(tc->ssl);
    int err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(tc->ssl, rc);
    /* whatever the handshake wrote (hello, certificate, finished) goes out now */
    if (!net_out(tc)) return;
    if (err == SSL_ERROR_NONE) {
      handshake_done(tc);
      return;
    }
    if (err == SSL_ERROR_WANT_READ) {
      if (net_in(tc) > 0) continue;
      if (tc->eof && !tc->dead) tconn_kill(tc, "peer closed the connection during the TLS handshake");
      return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
      if (BIO_ctrl_pending(tc->net) > 0) return;
      continue;
    }
    char why[256];
    long vr = SSL_get_verify_result(tc->ssl);
    if (vr != X509_V_OK) {
      snprintf(why, sizeof why, "tls handshake: certificate verify failed: %s", X509_verify_cert_error_string(vr));
      ERR_clear_error();
    } else {
      tls_error_text(why, sizeof why, "tls handshake");
    }
    tconn_kill(tc, why);
    return;
  }
}

void tconn_event(tconn *tc, uint32_t ev) {
  if (tc->dead) return;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) tc->r = 1;
  if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) tc->hup = 1;
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) tc->w = 1;
  if (tc->await_ctx || tc->verifying) return; /* JS has the next word; the flags keep the news */
  if (tc->handshaking) {
    tconn_handshake(tc);
    return;
  }
  if (tc->lingering) {
    if (tc->r) linger_read(tc);
    return;
  }
  tconn_read(tc);
  if (!tc->dead) eng_dirty(tc);
}

/* A pooled client connection for the key, or a new one dialed from the source pod's netns. */
tconn *pool_get(engine *e, listener *l, tlsctx *ctx, const char *key, const char *tag, const char *ip, int port,
                char *why, size_t cap) {
  for (tconn *tc = e->tconns; tc != NULL; tc = tc->next) {
    if (!tc->client || tc->dead || tc->goaway || tc->ctx != ctx || tc->l != l) continue;
    if (tc->started + tc->queued >= e->streams_per_conn) continue;
    if (strcmp(tc->key, key) != 0) continue;
    if (tc->ready && tc->h2 && nghttp2_session_get_remote_settings(tc->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) <= tc->active) continue;
    return tc;
  }
  bool connecting;
  int fd = eng_dial(l, ip, port, NULL, &connecting, why, cap);
  if (fd < 0) return NULL;
  eng_user_timeout(e, fd);
  tconn *tc = tconn_new(e, l, fd, ctx, true);
  if (tc == NULL) {
    close(fd);
    snprintf(why, cap, "out of memory");
    return NULL;
  }
  tc->tcp_connecting = connecting;
  tc->deadline = eng_now(e) + e->connect_ms + e->handshake_ms;
  snprintf(tc->rip, sizeof tc->rip, "%s", ip);
  tc->rport = port;
  tc->key = strdup(key);
  tc->tag = strdup(tag);
  if (tc->key == NULL || tc->tag == NULL) {
    tconn_kill(tc, "out of memory");
    snprintf(why, cap, "out of memory");
    return NULL;
  }
  return tc;
}
