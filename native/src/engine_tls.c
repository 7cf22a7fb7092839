/*
 * TLS contexts for the engine: TLS 1.3 only, ALPN h2 only, no session tickets, a client
 * certificate required, the chain verified by OpenSSL against the mesh roots. The SPIFFE rules
 * (one URI SAN, trust domain, expected identity) are applied afterwards by the verify callback
 * in TypeScript, on the DER chain this file hands over.
 */
#include "engine.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char ALPN_H2[] = {2, 'h', '2'};

void tls_error_text(char *buf, size_t cap, const char *what) {
  unsigned long code = ERR_get_error();
  char detail[200] = "no detail";
  if (code != 0) ERR_error_string_n(code, detail, sizeof detail);
  ERR_clear_error();
  snprintf(buf, cap, "%s: %s", what, detail);
}

static int select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                     unsigned int inlen, void *arg) {
  for (unsigned int i = 0; i < inlen;) {
    unsigned int n = in[i];
    if (i + 1 + n > inlen) break;
    if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

tlsctx *tlsctx_create(const char *chain, const char *key, const char *roots, char *why, size_t cap) {
  tlsctx *c = calloc(1, sizeof *c);
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  BIO *bio = NULL;
  X509 *x = NULL;
  EVP_PKEY *pk = NULL;
  int nroots = 0;
  if (c == NULL || ctx == NULL) {
    snprintf(why, cap, "out of memory");
    goto fail;
  }
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  /* RELEASE_BUFFERS: an idle session gives its ~34 kB of record buffers back (pooled sessions
   * mostly sit idle between bursts; per-connection memory is a target). */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  SSL_CTX_set_verify_depth(ctx, 8);
  SSL_CTX_set_alpn_select_cb(ctx, select_h2, NULL);
  if (SSL_CTX_set_alpn_protos(ctx, ALPN_H2, sizeof ALPN_H2) != 0) {
    tls_error_text(why, cap, "alpn");
    goto fail;
  }

  bio = BIO_new_mem_buf(chain, -1);
  x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  if (x == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
    tls_error_text(why, cap, "certificate chain");
    goto fail;
  }
  X509_free(x);
  x = NULL;
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
      tls_error_text(why, cap, "certificate chain");
      goto fail;
    }
    x = NULL;
  }
  ERR_clear_error(); /* the loop ends on a "no start line" error */
  BIO_free(bio);

  bio = BIO_new_mem_buf(key, -1);
  pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  if (pk == NULL || SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    tls_error_text(why, cap, "private key");
    goto fail;
  }
  EVP_PKEY_free(pk);
  pk = NULL;
  BIO_free(bio);

  bio = BIO_new_mem_buf(roots, -1);
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, x) == 1) nroots++;
    X509_free(x);
    x = NULL;
  }
  ERR_clear_error();
  BIO_free(bio);
  bio = NULL;
  if (nroots == 0) {
    snprintf(why, cap, "roots: no certificate in the trust bundle");
    goto fail;
  }
  c->roots = strdup(roots);
  if (c->roots == NULL) {
    snprintf(why, cap, "out of memory");
    goto fail;
  }
  c->ctx = ctx;
  c->refs = 1;
  return c;

fail:
  if (x) X509_free(x);
  if (pk) EVP_PKEY_free(pk);
  if (bio) BIO_free(bio);
  if (ctx) SSL_CTX_free(ctx);
  free(c);
  return NULL;
}

void tlsctx_ref(tlsctx *c) { __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED); }

/* References live on both threads (JS contexts, engine connections, messages): atomic. */
void tlsctx_unref(tlsctx *c) {
  if (c == NULL || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  SSL_CTX_free(c->ctx);
  free(c->roots);
  free(c);
}

static bool push_der(jmsg *m, X509 *x) {
  unsigned char *der = NULL;
  int len = i2d_X509(x, &der);
  if (len <= 0) return false;
  uint8_t *copy = malloc((size_t)len);
  if (copy == NULL) {
    OPENSSL_free(der);
    return false;
  }
  memcpy(copy, der, (size_t)len);
  OPENSSL_free(der);
  m->der[m->nder] = copy;
  m->der_len[m->nder] = len;
  m->nder++;
  return true;
}

/* The peer's chain as DER copies, leaf first (what verifyPeerChain takes). At most 8. */
bool tls_peer_chain(SSL *ssl, jmsg *m) {
  X509 *leaf = SSL_get1_peer_certificate(ssl);
  if (leaf == NULL) return false;
  m->der = calloc(8, sizeof *m->der);
  m->der_len = calloc(8, sizeof *m->der_len);
  bool ok = m->der != NULL && m->der_len != NULL && push_der(m, leaf);
  /* The client side's list starts with the leaf, the server side's does not. */
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
  for (int i = 0; ok && chain != NULL && i < sk_X509_num(chain) && m->nder < 8; i++) {
    X509 *c = sk_X509_value(chain, i);
    if (X509_cmp(c, leaf) == 0) continue;
    ok = push_der(m, c);
  }
  X509_free(leaf);
  return ok;
}
