/*
 * The engine's HBONE client pool: pooled client connections by (plan key, TLS context, source
 * listener), found in constant time; a new connection is dialed from the source pod's netns,
 * through its socket pool (a miss: the socket arrives later, tconn_socket). The connections
 * themselves (TLS, HTTP/2) are engine_h2.c's.
 */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The client pool is a hash table: (key, context, source listener) -> its connections, so finding
 * one costs a hash of the key and a look at the few connections that share it, however many
 * connections the engine holds. FNV-1a over the key, mixed with the two pointers.
 */
static uint32_t pool_hash(const char *key, const tlsctx *ctx, const listener *l) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 16777619u;
  uintptr_t mix = (uintptr_t)ctx ^ ((uintptr_t)l << 7) ^ ((uintptr_t)l >> 3);
  h ^= (uint32_t)(mix ^ (uint64_t)mix >> 32);
  h ^= h >> 16;
  h *= 0x45d9f3bu;
  h ^= h >> 16;
  return h;
}

static void pool_add(tconn *tc, uint32_t h) {
  tconn **b = &tc->e->kmap[h & (TCONN_BUCKETS - 1)];
  tc->khash = h;
  tc->knext = *b;
  *b = tc;
  tc->in_pool = 1;
}

void pool_del(tconn *tc) {
  if (!tc->in_pool) return;
  for (tconn **pp = &tc->e->kmap[tc->khash & (TCONN_BUCKETS - 1)]; *pp != NULL; pp = &(*pp)->knext) {
    if (*pp == tc) {
      *pp = tc->knext;
      break;
    }
  }
  tc->knext = NULL;
  tc->in_pool = 0;
}

/* A pooled client connection for the key, or a new one dialed from the source pod's netns. */
tconn *pool_get(engine *e, listener *l, tlsctx *ctx, const char *key, const char *tag, const char *ip, int port,
                char *why, size_t cap) {
  uint32_t h = pool_hash(key, ctx, l);
  for (tconn *tc = e->kmap[h & (TCONN_BUCKETS - 1)]; tc != NULL; tc = tc->knext) {
    if (tc->khash != h || tc->dead || tc->goaway || tc->ctx != ctx || tc->l != l) continue;
    if (tc->started + tc->queued >= e->streams_per_conn) continue;
    if (strcmp(tc->key, key) != 0) continue;
    if (tc->ready && tc->h2 && nghttp2_session_get_remote_settings(tc->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) <= tc->active) continue;
    return tc;
  }
  dialaddr d;
  if (!eng_dial_addr(ip, port, NULL, &d, why, cap)) return NULL;
  /* the connection exists before its socket: its id names it if the pool has to make one */
  tconn *tc = tconn_new(e, l, -1, ctx, true);
  if (tc == NULL) {
    snprintf(why, cap, "out of memory");
    return NULL;
  }
  tc->tcp_connecting = 1;
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
  pool_add(tc, h);
  bool connecting;
  int fd = eng_dial(l, &d, DIAL_TCONN, tc->id, &connecting, why, cap);
  if (fd == DIAL_PENDING) {
    tc->pend = malloc(sizeof *tc->pend);
    if (tc->pend != NULL) {
      *tc->pend = d;
      return tc;
    }
    snprintf(why, cap, "out of memory");
    fd = -1;
  }
  if (fd < 0 || !tconn_watch(tc, fd, connecting, why, cap)) {
    tconn_kill(tc, NULL);
    return NULL;
  }
  return tc;
}

void tconn_socket(tconn *tc, int *fd, int err) {
  if (tc->dead || tc->pend == NULL) return;
  dialaddr *d = tc->pend;
  tc->pend = NULL;
  char why[200];
  bool connecting = false;
  int s = -1;
  if (*fd < 0) {
    snprintf(why, sizeof why, "socket: %s", ambit_errno_name(err ? err : EIO));
  } else {
    s = eng_dial_fd(tc->l, *fd, d, &connecting, why, sizeof why);
    *fd = -1;
  }
  free(d);
  if (s < 0 || !tconn_watch(tc, s, connecting, why, sizeof why)) tconn_kill(tc, why);
}
