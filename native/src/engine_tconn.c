/*
 * The TLS connection under an HBONE session (a tconn): its life (made, handed its TLS context,
 * retired, killed, freed), the handshake and the peer's chain sent to JS for the SPIFFE check,
 * and the socket I/O: TLS runs over a BIO pair, records move to and from the socket in one
 * syscall per batch, decrypted bytes go to the session (engine_h2.c) a slice at a time. Also the
 * connection's deadlines (handshake, idle, keepalive PING) and the linger of a session closed for
 * abuse.
 */
#include "engine.h"

#include <sys/epoll.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define OUT_BATCH (64 * 1024)
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
/* How long a session closed for abuse keeps reading (and dropping) what its peer still sends. */
#define LINGER_MS 2000

static void tconn_handshake(tconn *tc);
static void tconn_linger(tconn *tc);

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
  /* fd -1: a client whose socket the pool still owes (tconn_socket) */
  if (fd >= 0 && epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    free(tc);
    return NULL;
  }
  l->refs++;
  tc->id = eng_next_id(e);
  eng_tmap_add(e, tc);
  tc->next = e->tconns;
  if (e->tconns) e->tconns->prev = tc;
  e->tconns = tc;
  __atomic_add_fetch(&e->ntconns, 1, __ATOMIC_RELAXED);
  return tc;
}

/* A client's dialed socket: a tunnel to another host; watched from here. False (fd closed) on failure. */
bool tconn_watch(tconn *tc, int fd, bool connecting, char *why, size_t cap) {
  engine *e = tc->e;
  eng_user_timeout(e, fd);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &tc->ev};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    snprintf(why, cap, "epoll: %s", ambit_errno_name(errno));
    close(fd);
    return false;
  }
  tc->fd = fd;
  tc->tcp_connecting = connecting;
  return true;
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
  pool_del(tc);
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
  /* An accepted connection that dies before it is ready has no flow, so no access line tells of
   * it: say it here. Our side's failures (no certificate, a handshake that outlived its deadline
   * on a busy engine) are warnings; a peer that fails verification or hangs up is info. */
  if (!tc->client && !tc->ready && reason != NULL) {
    bool ours = strcmp(reason, "no certificate") == 0 || strcmp(reason, "tls handshake timed out") == 0;
    eng_log(e, ours ? LOG_WARN : LOG_INFO, "listener %u: hbone connection closed before it was ready: %s",
            tc->l ? tc->l->id : 0, reason);
  }
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
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, tc->fd, NULL); /* as for flows: no event may name it after the free */
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
  free(tc->pend);
  free(tc);
}

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
void tconn_read(tconn *tc) {
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
  /* Idle since when: never "in the future" of this tick's clock. (It once was: set from a fresh
   * clock read while the tick ran on the loop's older one, the difference wrapped around, and a
   * session whose last stream had just ended was retired at once: GOAWAY, then closed.) */
  uint64_t idle = now > tc->idle_since ? now - tc->idle_since : 0;
  if (tc->client && tc->active == 0 && tc->queued == 0 && idle >= e->idle_ms) {
    tconn_retire(tc);
    return;
  }
  if (!tc->client && tc->active == 0 && idle >= 2ull * e->idle_ms) {
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
