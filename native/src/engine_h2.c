/*
 * HTTP/2 on the engine's HBONE connections: the nghttp2 session of a tconn (engine_tconn.c carries
 * its TLS and socket), CONNECT streams as flows. Server side: requests are checked and handed to JS
 * for a decision; client side: streams are opened on pooled connections (engine_pool.c), queued
 * until the handshake is done, and retried once when refused.
 *
 * Flow control is end to end: bytes from the peer are acknowledged (nghttp2_session_consume)
 * only once the app socket took them, so a slow app slows its stream and nothing else.
 */
#include "engine.h"

#include <sys/epoll.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADER_PAIRS 128
#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_FIELD 256

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
    tc->idle_since = tc->e->now;
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
      eng_timer(f);
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
  if (flow_dial(f, c->ip ? c->ip : "", c->port, c->spoof, why, sizeof why) != 0) h2_server_connected(f, false, why);
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
    flow_fail(f, FAIL_CONNECT);
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
  eng_event(f->e, EVT_ESTABLISHED, f);
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
      eng_event(f->e, EVT_ESTABLISHED, f);
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
    eng_timer(f);
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
  eng_timer(f);
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

/* ---- the session starts, streams open ---- */

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
  tc->idle_since = e->now;
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
    tc->idle_since = tc->e->now;
  }
}

void h2_resume(flow *f) {
  tconn *tc = f->tc;
  if (!f->deferred || tc == NULL || tc->h2 == NULL || f->sid <= 0) return;
  f->deferred = 0;
  nghttp2_session_resume_data(tc->h2, f->sid);
  eng_dirty(tc);
}

/* Parse what was gathered; false once the connection is gone. */
bool h2_feed(tconn *tc, size_t n) {
  ssize_t rv = nghttp2_session_mem_recv(tc->h2, (const uint8_t *)tc->e->tlsbuf, n);
  if (rv >= 0) return !tc->dead;
  char why[128];
  snprintf(why, sizeof why, "http2: %s", nghttp2_strerror((int)rv));
  /* tell the peer why before going (GOAWAY is queued by nghttp2 for protocol errors) */
  tconn_flush(tc);
  if (!tc->lingering) tconn_kill(tc, why);
  return false;
}

