/* Socket options the Node API does not expose: original destination, SO_MARK, transparency. */
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

int ambit_socket_family(int fd, ambit_fail *f) {
  int domain = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    ambit_fail_set(f, "getsockopt", errno, "SO_DOMAIN");
    return -1;
  }
  return domain;
}

int ambit_set_mark(int fd, uint32_t mark, ambit_fail *f) {
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    ambit_fail_set(f, "setsockopt", errno, "SO_MARK");
    return f->err;
  }
  return 0;
}

int ambit_set_transparent(int fd, int family, ambit_fail *f) {
  int one = 1;
  /* TRANSPARENT lets the socket bind (and accept for) non-local addresses; FREEBIND lets it bind
   * before the address exists. Both are needed to connect upstream with the client's source IP. */
  if (family == AF_INET) {
    if (setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof one) != 0) {
      ambit_fail_set(f, "setsockopt", errno, "IP_TRANSPARENT");
      return f->err;
    }
    if (setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one) != 0) {
      ambit_fail_set(f, "setsockopt", errno, "IP_FREEBIND");
      return f->err;
    }
    return 0;
  }
  if (family == AF_INET6) {
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof one) != 0) {
      ambit_fail_set(f, "setsockopt", errno, "IPV6_TRANSPARENT");
      return f->err;
    }
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one) != 0) {
      ambit_fail_set(f, "setsockopt", errno, "IPV6_FREEBIND");
      return f->err;
    }
    return 0;
  }
  ambit_fail_set(f, "setsockopt", EAFNOSUPPORT, "not an IPv4/IPv6 socket");
  return f->err;
}

/*
 * The accepted socket's peer as `peer: {address, port, family}` on the originalDst result. The
 * node agent needs both for every captured connection; asking here spares it Node's own
 * getpeername round (remoteAddress), which cost more than this whole call. Best effort: without
 * a peer (the client already gone) the field is absent and the caller asks Node as before.
 */
static napi_value with_peer(napi_env env, const ambit_addr *peer, napi_value obj) {
  if (obj == NULL || peer == NULL) return obj;
  napi_value jpeer = ambit_addr_to_js(env, &peer->u.sa);
  if (jpeer == NULL) return NULL;
  AMBIT_NAPI(napi_set_named_property(env, obj, "peer", jpeer));
  return obj;
}

/* originalDst(fd) -> {address, port, family, peer?: {address, port, family}} */
napi_value ambit_original_dst(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!ambit_args(env, info, "originalDst", argv, 1, "fd")) return NULL;
  if (!ambit_arg_fd(env, argv[0], "originalDst", "fd", &fd)) return NULL;
  /* The peer also tells the socket's family, which saves the SO_DOMAIN query; without one
   * (not connected, not a socket, not IP) the family is asked for and reported as before. */
  ambit_addr peer_buf;
  socklen_t plen = sizeof peer_buf.u;
  const ambit_addr *peer = NULL;
  if (getpeername(fd, &peer_buf.u.sa, &plen) == 0 && (peer_buf.u.sa.sa_family == AF_INET || peer_buf.u.sa.sa_family == AF_INET6)) {
    peer = &peer_buf;
  }
  ambit_fail f;
  int family = peer != NULL ? peer->u.sa.sa_family : ambit_socket_family(fd, &f);
  ambit_addr dst;
  if (family < 0 || ambit_orig_dst(fd, family, &dst, &f) != 0) {
    ambit_throw_fail(env, &f);
    return NULL;
  }
  return with_peer(env, peer, ambit_addr_to_js(env, &dst.u.sa));
}

int ambit_orig_dst(int fd, int family, ambit_addr *dst, ambit_fail *f) {
  memset(dst, 0, sizeof *dst);
  socklen_t len;
  if (family == AF_INET) {
    len = sizeof dst->u.v4;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst->u.v4, &len) != 0) {
      ambit_fail_set(f, "getsockopt", errno, "SO_ORIGINAL_DST");
      return -1;
    }
    dst->len = len;
    return 0;
  }
  if (family != AF_INET6) {
    ambit_fail_set(f, "getsockopt", EAFNOSUPPORT, "SO_ORIGINAL_DST: not an IPv4/IPv6 socket");
    return -1;
  }
  /* An IPv4 client accepted on a dual-stack [::] listener is tracked by IPv4 conntrack, which only
   * answers SOL_IP queries; the local address tells which table holds the entry. */
  ambit_addr local;
  socklen_t llen = sizeof local.u;
  if (getsockname(fd, &local.u.sa, &llen) != 0) {
    ambit_fail_set(f, "getsockname", errno, NULL);
    return -1;
  }
  if (local.u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&local.u.v6.sin6_addr)) {
    len = sizeof dst->u.v4;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst->u.v4, &len) != 0) {
      ambit_fail_set(f, "getsockopt", errno, "SO_ORIGINAL_DST (v4-mapped)");
      return -1;
    }
    dst->len = len;
    return 0;
  }
  len = sizeof dst->u.v6;
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst->u.v6, &len) != 0) {
    ambit_fail_set(f, "getsockopt", errno, "IP6T_SO_ORIGINAL_DST");
    return -1;
  }
  dst->len = len;
  return 0;
}

napi_value ambit_set_mark_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t mark;
  if (!ambit_args(env, info, "setMark", argv, 2, "fd, mark")) return NULL;
  if (!ambit_arg_fd(env, argv[0], "setMark", "fd", &fd)) return NULL;
  if (!ambit_arg_int(env, argv[1], "setMark", "mark", 0, UINT32_MAX, &mark)) return NULL;
  ambit_fail f;
  if (ambit_set_mark(fd, (uint32_t)mark, &f) != 0) {
    ambit_throw_fail(env, &f);
  }
  return NULL;
}

napi_value ambit_set_transparent_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!ambit_args(env, info, "setTransparent", argv, 1, "fd")) return NULL;
  if (!ambit_arg_fd(env, argv[0], "setTransparent", "fd", &fd)) return NULL;
  ambit_fail f;
  int family = ambit_socket_family(fd, &f);
  if (family < 0 || ambit_set_transparent(fd, family, &f) != 0) {
    ambit_throw_fail(env, &f);
  }
  return NULL;
}

napi_value ambit_close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!ambit_args(env, info, "closeFd", argv, 1, "fd")) return NULL;
  if (!ambit_arg_fd(env, argv[0], "closeFd", "fd", &fd)) return NULL;
  /* On Linux the fd is released even when close reports EINTR, so never retry. */
  if (close(fd) != 0 && errno != EINTR) {
    ambit_throw_errno(env, "close", errno, NULL);
  }
  return NULL;
}

int ambit_socket_error(int fd) {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) return errno;
  return soerr;
}
