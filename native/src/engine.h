/*
 * The node agent's data path (engine*.c): the captured connections of enrolled pods and the
 * HBONE tunnels that carry them, driven from one epoll set polled by the Node event loop. The
 * protocols are not ours: TLS is the OpenSSL and HTTP/2 the nghttp2 that Node itself links and
 * exports. What is ours is the glue: sockets, buffers, flow control, the pool of tunnels, and
 * the calls into JavaScript, which keeps every decision (routing, identity, policy, telemetry).
 *
 * Everything runs on the JS thread, so callbacks into JS are plain synchronous calls. Objects
 * freed while an epoll batch may still name them are parked on a graveyard list and freed when
 * the batch ends.
 */
#ifndef AMBIT_ENGINE_H
#define AMBIT_ENGINE_H

#include "common.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <uv.h>

enum { EV_LISTENER = 1, EV_TCONN, EV_APP, EV_UP };

/* Plaintext gathered from several TLS records per nghttp2 parse (one app write per DATA run). */
#define TLS_READ_BATCH (128 * 1024)
/* Bytes a client stream sends before its CONNECT is answered (kept to replay them if the stream
 * is refused); the rest waits for the answer. */
#define EARLY_MAX (64 * 1024)
/*
 * Codes shared with TypeScript. This header is their one definition: the addon exports them as a
 * table (engineCodes(), engine_js.c), src/native/engine.ts's constants must equal it (checked when
 * an Engine is created, and by test/native/engine-codes.test.ts).
 */
enum { L_OUTBOUND = 1, L_HBONE, L_SOURCE }; /* L_SOURCE: no socket, only a netns and a mark (engineOpen) */
/* an outbound plan's t (0 or anything else: refused) */
enum { PLAN_PLAIN = 1, PLAN_HBONE = 2 };
/* event(kind, ...) */
/* EVT_FLUSHED: the answer to C_FLUSH (id: the caller's), posted behind every message before it */
enum { EVT_ESTABLISHED = 1, EVT_CLOSED = 2, EVT_FLUSHED = 3 };
enum { M_PLAIN = 1, M_H2 };

typedef struct engine engine;

/* Where a dial goes (eng_dial_addr): the target, and the spoofed source when `spoof`. */
typedef struct {
  ambit_addr to, from;
  bool spoof;
} dialaddr;
/* A dial waiting for its socket from the pool (a miss): eng_dial's answer; the socket comes as
 * C_SOCKET for a flow (DIAL_FLOW) or a pooled HBONE connection (DIAL_TCONN), by id. */
#define DIAL_PENDING (-2)
enum { DIAL_FLOW = 1, DIAL_TCONN };
typedef struct tconn tconn;
typedef struct flow flow;

/* What epoll's data.ptr points at: the first member of each polled object. */
typedef struct {
  uint8_t kind;
} evsrc;

/* Bytes waiting for a writer. Allocated only while something waits. */
typedef struct {
  char *p;
  uint32_t off, len, cap;
} ebuf;

/* A certificate, its key and the roots, as one SSL_CTX for both roles. Reference counted. */
typedef struct {
  SSL_CTX *ctx;
  char *roots;
  int refs;
} tlsctx;

/*
 * What JS learns of an adopted flow (a socket JS holds the other end of: engineOpen, or an inbound
 * answer {fd}) without waiting for the event queue. The engine writes it BEFORE it shuts or
 * closes its end, so when JS reads EOF it finds here whether the far side ended cleanly or the
 * flow failed, and why. Shared by both threads: refs, state, established are atomics; fail,
 * status and reason are written before state's release store and read after its acquire load.
 */
enum { LINK_OPEN = 0, LINK_PEER_EOF, LINK_DONE, LINK_FAILED };
/* Why a flow failed; the first four mean nothing reached the target, so a retry is safe. */
enum { FAIL_NONE = 0, FAIL_CONNECT, FAIL_TLS, FAIL_STATUS, FAIL_REFUSED, FAIL_LOST, FAIL_RESET, FAIL_LOCAL };
typedef struct {
  int refs;
  uint8_t state, fail, established;
  uint16_t status;
  char reason[200];
} flowlink;

typedef struct listener {
  evsrc ev;
  struct listener *next;
  struct listener *hnext; /* the engine's id table */
  engine *e;
  uint32_t id;
  uint8_t kind;
  bool closed;
  bool handed;    /* closed by a handover: another process accepts on the socket now; this one
                   * still serves the sessions and connections it accepted */
  int fd;
  int nsfd;       /* the pod netns, for the sockets the engine dials on the pod's behalf */
  ns_pool *pool;  /* its socket pool, pinned while the listener lives (the engine makes no thread) */
  uint32_t mark;
  char *tag;      /* hbone: handed to the verify callback with the client's chain */
  int refs;       /* the open listener itself, its flows and tconns */
  /* accept back-off: out of fds or memory, the listener leaves epoll until resume_at */
  bool paused;    /* not in the epoll set */
  bool starved;   /* the last accept failed for want of a resource (counted in e->nstarved) */
  uint32_t backoff_ms;
  uint64_t resume_at;
} listener;

struct flow {
  evsrc app_ev; /* the app-facing socket: captured client (outbound) or our socket to the app (inbound) */
  evsrc up_ev;  /* plain mode: the upstream socket */
  flow *prev, *next;   /* engine list */
  flow *tprev, *tnext; /* the tconn's list (h2 mode) */
  flow *wnext;         /* the tconn's wait list (client, before its handshake) */
  flow *gnext;         /* the engine's list of dead flows, freed by eng_reap */
  flow *hnext;         /* the engine's id table */
  flow *twprev, *twnext; /* the deadline wheel's slot (eng_timer) */
  int32_t tw_slot;     /* its slot; -1 none, -2 on the list being expired */
  uint64_t due;        /* loop ms the wheel checks it next */
  engine *e;
  listener *l;
  tconn *tc;
  uint32_t id;
  int32_t sid;        /* h2 stream; 0 before submit, -1 once the stream is gone */
  int app_fd, up_fd;
  uint8_t mode;
  unsigned app_r : 1, app_w : 1, up_r : 1, up_w : 1;
  unsigned app_hup : 1, up_hup : 1; /* the peer closed (read to the end, never stop at a short read) */
  unsigned app_eof : 1;    /* the app ended its side (we sent END_STREAM / shut upstream) */
  unsigned peer_eof : 1;   /* the far side ended (END_STREAM / upstream EOF) */
  unsigned app_shut : 1;   /* we shut the app socket's write side */
  unsigned up_shut : 1;    /* plain: we shut the upstream's write side */
  unsigned deferred : 1;   /* h2: the data provider waits for the app socket */
  unsigned dialing : 1;    /* our socket (upstream or app) is still connecting */
  unsigned established : 1;
  unsigned server : 1;
  unsigned silent : 1;     /* JS already accounted for it (refused): no close event */
  unsigned dead : 1;
  unsigned is_connect : 1, saw_method : 1, too_big : 1, queued : 1;
  unsigned retried : 1;    /* client: the stream was refused once and reopened */
  uint8_t fail;            /* FAIL_*, set where an error is known (flow_fail) */
  flowlink *link;          /* adopted socket: what JS reads at EOF */
  uint16_t status;         /* client: the CONNECT answer */
  uint16_t hdr_pairs;
  uint32_t hdr_bytes;
  ebuf to_app, to_up;
  ebuf early;              /* client: bytes sent before the CONNECT was answered, for a retry */
  uint32_t early_sent;     /* of them, given to the current stream */
  uint64_t from_app_n, to_app_n;
  uint64_t deadline;       /* dialing deadline, loop ms */
  uint64_t last_active;    /* loop ms of the last byte moved either way (idle and half-closed limits) */
  char *authority, *forwarded; /* server: request fields until the decision */
  char *hdrs;              /* client: extra CONNECT headers until submit ("name\0value\0"...) */
  dialaddr *pend;          /* dialing, the socket not there yet (a pool miss): where it goes */
  uint32_t hdrs_len;
  char *err;
};

struct tconn {
  evsrc ev;
  tconn *prev, *next;
  engine *e;
  listener *l;          /* server: where it was accepted; client: the source pod's listener */
  tlsctx *ctx;
  SSL *ssl;
  BIO *net;             /* the network half of the BIO pair under ssl */
  nghttp2_session *h2;
  int fd;
  unsigned client : 1, tcp_connecting : 1, handshaking : 1, ready : 1, goaway : 1, dead : 1;
  unsigned r : 1, w : 1, dirty : 1, hup : 1;
  unsigned eof : 1;     /* the socket reached EOF: killed once what came before it was parsed */
  unsigned more : 1;    /* on e->more: its slice ran out with input left */
  unsigned lingering : 1; /* closed for abuse: GOAWAY and FIN sent, input dropped until EOF */
  uint32_t started, active, queued;
  uint32_t errors;      /* server: protocol errors the peer caused (the abuse budget) */
  uint64_t last_rx;     /* loop ms of the last bytes from the peer */
  uint64_t ping_sent;   /* loop ms of the outstanding keepalive PING (0: none) */
  tconn *mnext;         /* e->more */
  uint64_t deadline, idle_since;
  char *key, *tag, *peer;
  flow *flows;          /* attached flows (tnext) */
  flow *waiting;        /* client flows waiting for the handshake (wnext) */
  tconn *dnext;         /* engine dirty list */
  tconn *gnext;         /* the engine's list of dead tconns, freed by eng_reap */
  tconn *hnext;         /* the engine's id table */
  tconn *knext;         /* client: the pool's key table (pool_get) */
  uint32_t khash;       /* client: hash of (key, ctx, listener); valid while in_pool */
  unsigned in_pool : 1; /* client: in the key table */
  uint32_t id;
  unsigned await_ctx : 1, verifying : 1;
  ebuf out;             /* HTTP/2 bytes not yet taken by SSL_write */
  char rip[48], lip[48];  /* client: rip, rport are the peer dialed */
  dialaddr *pend;       /* client: connecting, the socket not there yet (a pool miss) */
  int rport, lport;
};

/* Engine thread -> JS: what needs a decision, or news. */
enum { J_OUTBOUND = 1, J_INBOUND, J_VERIFY, J_CONTEXT, J_EVENT, J_LOG };
/* J_LOG levels (kind) */
enum { LOG_DEBUG = 1, LOG_INFO, LOG_WARN, LOG_ERROR };
typedef struct jmsg {
  struct jmsg *next;
  uint8_t type, kind;
  bool news;            /* may wait for company (eng_post) */
  uint32_t lid, id;     /* listener; flow (outbound, inbound, event) or tconn (verify, context) */
  int32_t p1, p2;       /* ports; event: p1 the closed flow's FAIL_* (0 none) */
  double n1, n2;        /* event: bytes from / to the app */
  char *s[5];           /* owned strings, by type (see engine.c) */
  tlsctx *ctx;          /* verify: a reference for its roots */
  uint8_t **der;        /* verify: the peer chain, leaf first */
  int *der_len, nder;
} jmsg;

/* JS -> engine thread: the answers, and the API calls. */
enum { C_PLAN = 1, C_INBOUND, C_VERIFIED, C_CONTEXT, C_LISTEN, C_UNLISTEN, C_CLOSE_FLOW, C_CLOSE_FLOWS, C_DESTROY, C_OPEN,
       C_SOCKET /* a pool helper: the socket a miss waited for (t: DIAL_*, fd, status: errno) */,
       C_FLUSH /* post the waiting news now, then EVT_FLUSHED with the command's id */ };
typedef struct jcmd {
  struct jcmd *next;
  uint8_t type;
  uint32_t id;          /* C_OPEN: the source listener */
  uint32_t fid;         /* C_OPEN: the new flow's id (allocated on the JS thread) */
  int fd;               /* an adopted socket (inbound answer, C_OPEN), owned; -1 when none */
  flowlink *link;       /* with fd: a reference */
  int32_t t, port, status;
  char *ip, *spoof, *key, *tag, *hdrs, *peer, *reason;
  uint32_t hdrs_len;
  tlsctx *ctx;          /* a reference, handed over */
  listener *l;
} jcmd;

#define FLOW_BUCKETS 16384
#define TCONN_BUCKETS 4096
#define LISTENER_BUCKETS 1024
/* The deadline wheel: slots of tick_ms; a deadline further than a turn waits its round in place. */
#define WHEEL_SLOTS 1024
/* How long news may wait for an urgent message, loop ms, and how many may wait. */
#define NEWS_MS 20
#define NEWS_MAX 256

/* Counters read by stats() on the JS thread (atomics). */
typedef struct {
  uint32_t accept_emfile, accept_enfile, accept_enobufs, accept_enomem;
  uint32_t dead_peers;      /* HBONE connections dropped: no answer to PING in time */
  uint32_t abusive;         /* HBONE sessions closed (GOAWAY) for protocol errors over the budget */
  uint32_t idle_closed;     /* flows closed at the idle limit */
  uint32_t half_closed;     /* flows closed at the half-closed limit */
  uint32_t dials_cancelled; /* pending dials dropped because their client went away */
  uint32_t pool_waits;      /* dials that found the netns socket pool empty and waited for its helper */
} eng_counters;

struct engine {
  /* --- JS thread --- */
  napi_env env;
  napi_ref cb_outbound, cb_inbound, cb_verify, cb_context, cb_event, cb_log;
  napi_async_context actx;
  uv_async_t async;
  bool destroyed;
  uint32_t next_lid;
  uint32_t js_listeners; /* listeners handed over and not unlistened: the async handle is ref'd */
  /* --- shared, under mu --- */
  pthread_mutex_t mu;
  jmsg *out_head, *out_tail;
  jcmd *in_head, *in_tail;
  int wakefd;
  /* read by stats() from the JS thread (atomics) */
  uint32_t nflows, ntconns, nlisteners;
  uint32_t nstarved;     /* listeners whose accept fails for want of fds or memory */
  eng_counters ctr;
  /* --- engine thread --- */
  pthread_t thread;
  int epfd;
  bool stop, in_batch;
  jmsg *pend_head, *pend_tail; /* messages of this batch, posted at its end */
  /* News nobody waits for (the events of flows JS holds no socket of: telemetry) may wait up to
   * NEWS_MS or NEWS_MAX messages for something urgent to go with: one JS wake-up carries many.
   * A decision request or an adopted flow's event posts the whole queue at once, in order. */
  bool pend_urgent;
  uint32_t pend_n;
  uint64_t pend_since;  /* loop ms of the oldest waiting message */
  listener *listeners;
  tconn *tconns;
  flow *flows;
  flow *fmap[FLOW_BUCKETS];
  tconn *tmap[TCONN_BUCKETS];   /* tconns by id (answers from JS) */
  tconn *kmap[TCONN_BUCKETS];   /* pooled client tconns by key hash (pool_get) */
  listener *lmap[LISTENER_BUCKETS];
  flow *wheel[WHEEL_SLOTS];     /* flows by next deadline (dial, idle, half-closed) */
  flow *wheel_tmp;              /* the slot being expired */
  uint64_t wheel_next;          /* the next wheel tick (now / tick_ms) to expire */
  tconn *dirty;
  uint32_t ndead;       /* dead flows, tconns and unreferenced listeners waiting for eng_reap */
  flow *dead_flows;
  tconn *dead_tconns;
  uint32_t next_id;     /* flow and tconn ids (atomic: engineOpen allocates on the JS thread) */
  uint64_t next_tick;
  uint64_t now;         /* loop ms, refreshed after every epoll_wait */
  tconn *more;          /* sessions whose read slice ran out with input left: served next round */
  /* settings */
  /* settings (src/hbone/settings.ts, all required by engineCreate: no defaults here) */
  uint32_t connect_ms, handshake_ms, idle_ms, streams_per_conn, max_streams, window, conn_window;
  uint32_t max_frame; /* SETTINGS_MAX_FRAME_SIZE we announce, and our DATA frames' cap when the peer allows */
  uint32_t ping_ms, ping_timeout_ms;         /* HTTP/2 keepalive; 0 disables */
  uint32_t ka_idle_s, ka_intvl_s, ka_cnt;    /* TCP keepalive; idle 0 disables */
  uint32_t user_timeout_ms;                  /* TCP_USER_TIMEOUT; 0 leaves the kernel's */
  uint32_t flow_idle_ms, half_closed_ms;     /* flow limits; 0 disables */
  uint32_t abuse_budget;                     /* protocol errors one session may cause */
  uint32_t fd_reserve;                       /* fds under RLIMIT_NOFILE accepts leave to the agent */
  uint64_t nofile;                           /* the soft RLIMIT_NOFILE (refreshed every tick) */
  bool fd_tight;                             /* an accept reached the reserve: probe before the next */
  uint32_t tick_ms;                          /* how often deadlines are checked */
  nghttp2_session_callbacks *cbs_client, *cbs_server;
  nghttp2_option *opt_client, *opt_server;
  char rbuf[65536];
  char tlsbuf[TLS_READ_BATCH]; /* decrypted records gathered before nghttp2 parses them */
};

/* engine.c (engine thread) */
uint64_t eng_now(engine *e);
/* TCP keepalive on a socket the engine owns (settings of e). */
void eng_sockopts(engine *e, int fd);
/* TCP_USER_TIMEOUT on a socket to another host (tunnels, passthrough upstreams). */
void eng_user_timeout(engine *e, int fd);
/* A line for the agent's logger (printf-style; posted with the batch). */
void eng_log(engine *e, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void eng_count(uint32_t *c);
void eng_dirty(tconn *tc);
void eng_flush_dirty(engine *e);
/* Queue a message for JS (sent at the end of the batch). */
void eng_post(engine *e, jmsg *m);
jmsg *eng_msg(uint8_t type);
/* 1: the flow is established (upstream connected / 200 seen); 2: it closed. */
void eng_event(engine *e, int kind, flow *f);
void eng_reap(engine *e);
void listener_unref(listener *l);
void *engine_main(void *arg);
/* Index a new flow by id (answers from JS name flows by id). */
void eng_fmap_add(engine *e, flow *f);
void eng_tmap_add(engine *e, tconn *tc);
/* (Re)schedule the flow's next deadline in the wheel after its state changed: a dial started,
 * it was established, one side ended. Bytes moving need no call: the wheel checks lazily. */
void eng_timer(flow *f);
void eng_timer_del(flow *f);
void eng_cmd_free(jcmd *c);
/* A fresh flow or tconn id (never 0); any thread. */
uint32_t eng_next_id(engine *e);
void link_unref(flowlink *k);
/* Publish an adopted flow's end (or its peer's clean half-close) before its socket says so. */
void link_publish(flowlink *k, uint8_t state, uint8_t fail, uint16_t status, const char *reason);
void eng_msg_free(jmsg *m);
/* Queue a command for the engine thread and wake it (any thread). */
void eng_send_cmd(engine *e, jcmd *c);

/* engine_flow.c */
flow *flow_new(engine *e, listener *l, uint8_t mode, int app_fd);
flow *flow_new_id(engine *e, listener *l, uint8_t mode, int app_fd, uint32_t id);
/* Record why the flow fails (the first reason wins). */
void flow_fail(flow *f, uint8_t kind);
bool flow_watch_app(flow *f);
void flow_abort(flow *f, const char *reason);
void flow_set_err(flow *f, const char *reason);
void flow_app_event(flow *f, uint32_t ev);
void flow_up_event(flow *f, uint32_t ev);
void flow_maybe_finish(flow *f);
void flow_flush_to_app(flow *f);
bool flow_buf_append(ebuf *b, const char *p, size_t n);
void flow_buf_reset(ebuf *b);
/* 0: dialing (or waiting for the socket: flow_socket follows); -1 with why. */
int flow_dial(flow *f, const char *ip, int port, const char *spoof, char *why, size_t cap);
void flow_socket(flow *f, int *fd, int err);
bool eng_dial_addr(const char *ip, int port, const char *spoof, dialaddr *d, char *why, size_t cap);
int eng_dial(listener *l, const dialaddr *d, uint8_t what, uint32_t id, bool *connecting, char *why, size_t cap);
int eng_dial_fd(listener *l, int fd, const dialaddr *d, bool *connecting, char *why, size_t cap);
void flow_free(flow *f);
void flow_reset_fd(int fd);

/* engine_tconn.c: the TLS connection under a session (life, handshake, socket I/O, deadlines) */
tconn *tconn_new(engine *e, listener *l, int fd, tlsctx *ctx, bool client);
/* Server side: the accepted socket waits for its listener's TLS context (asked of JS). */
tconn *tconn_accepted(engine *e, listener *l, int fd);
void tconn_context(tconn *tc, tlsctx *ctx);
void tconn_event(tconn *tc, uint32_t ev);
void tconn_kill(tconn *tc, const char *reason);
/* Encrypt and send what the session has queued. */
void tconn_flush(tconn *tc);
/* Decrypt what arrived and feed it to the session (h2_feed), a slice at a time. */
void tconn_read(tconn *tc);
void tconn_retire(tconn *tc);
void tconn_free(tconn *tc);
/* Deadlines of one connection (handshake, idle, keepalive PING); from the tick. */
void tconn_tick(tconn *tc, uint64_t now);
/* Continue a session whose read slice ran out. */
void tconn_more(tconn *tc);
/* A client's dialed socket, watched from here; false (fd closed, why) on failure. */
bool tconn_watch(tconn *tc, int fd, bool connecting, char *why, size_t cap);

/* engine_h2.c: the HTTP/2 session and its CONNECT streams */
bool h2_init(engine *e);
void h2_fini(engine *e);
/* JS named the peer (NULL: refused): the session starts, queued streams open. */
void tconn_verified(tconn *tc, const char *peer);
/* Parse n decrypted bytes of e->tlsbuf; false once the connection is gone. */
bool h2_feed(tconn *tc, size_t n);
void h2_inbound_decision(flow *f, jcmd *c);
/* Server: the peer caused a protocol error; over the budget the session ends with GOAWAY. */
bool tconn_abuse(tconn *tc, const char *what);

/* engine_pool.c: the client pool */
tconn *pool_get(engine *e, listener *l, tlsctx *ctx, const char *key, const char *tag, const char *ip, int port,
                char *why, size_t cap);
/* A connection leaves the pool (it died). */
void pool_del(tconn *tc);
void tconn_attach(tconn *tc, flow *f);
/* The socket a pooled connection's dial waited for (a pool miss), or the errno it failed with. */
void tconn_socket(tconn *tc, int *fd, int err);
void h2_client_submit(tconn *tc, flow *f);
void tconn_enqueue(tconn *tc, flow *f);
void tconn_dequeue(flow *f);
void h2_resume(flow *f);
void h2_server_connected(flow *f, bool ok, const char *why);
void h2_detach(flow *f);

/* engine_tls.c */
tlsctx *tlsctx_create(const char *chain, const char *key, const char *roots, char *why, size_t cap);
void tlsctx_unref(tlsctx *c);
/* The peer's chain (leaf first) as DER copies into m->der (verify message). */
bool tls_peer_chain(SSL *ssl, jmsg *m);
void tlsctx_ref(tlsctx *c);
void tls_error_text(char *buf, size_t cap, const char *what);

#endif
