/*
 * Network namespaces: open and check a netns file, identify it, and create sockets inside it.
 *
 * A socket belongs to the netns it was created in for its whole life; bind/connect/listen can be
 * called from any namespace afterwards. So only socket() needs to run inside the pod's netns, and
 * we run it on a short-lived pthread that exits right after: neither the JS thread nor a libuv
 * pool thread ever changes namespace, so a failed switch back can never leak a foreign netns into
 * later file, DNS or socket work.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif
#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif

int ambit_netns_check_fd(int fd, ambit_fail *f) {
  int type = ioctl(fd, NS_GET_NSTYPE);
  if (type >= 0) {
    if (type == CLONE_NEWNET) return 0;
    char d[128];
    snprintf(d, sizeof d, "NS_GET_NSTYPE: fd %d is a namespace of another type (0x%x), not a network namespace", fd, type);
    ambit_fail_set(f, "ioctl", EINVAL, d);
    return EINVAL;
  }
  int err = errno;
  if (err == EBADF) {
    ambit_fail_set(f, "ioctl", err, "NS_GET_NSTYPE");
    return err;
  }
  /* Kernels before 4.11 lack NS_GET_NSTYPE: accept any nsfs (or old procfs) namespace file and let
   * setns(CLONE_NEWNET) reject other namespace types. */
  struct statfs sfs;
  if (fstatfs(fd, &sfs) != 0) {
    err = errno;
    ambit_fail_set(f, "fstatfs", err, NULL);
    return err;
  }
  if ((unsigned long)sfs.f_type == NSFS_MAGIC || (unsigned long)sfs.f_type == PROC_SUPER_MAGIC) {
    return 0;
  }
  ambit_fail_set(f, "ioctl", EINVAL, "NS_GET_NSTYPE: not a network namespace file");
  return EINVAL;
}

int ambit_netns_open(const char *path, int *out_fd, ambit_fail *f) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    ambit_fail_set(f, "open", err, path);
    return err;
  }
  int err = ambit_netns_check_fd(fd, f);
  if (err != 0) {
    /* Prefix the path; both parts are cut to fit the fixed-size detail. */
    char d[sizeof f->detail];
    memcpy(d, f->detail, sizeof d);
    snprintf(f->detail, sizeof f->detail, "%.64s: %.90s", path, d);
    close(fd);
    return err;
  }
  *out_fd = fd;
  return 0;
}

/* Throws the failure marked with `netns: true`, so JS can tell "bad namespace" from socket errors. */
static void throw_netns_fail(napi_env env, const ambit_fail *f) {
  napi_value e = ambit_fail_error(env, f), yes;
  if (e == NULL) {
    ambit_throw_fail(env, f);
    return;
  }
  if (napi_get_boolean(env, true, &yes) == napi_ok) napi_set_named_property(env, e, "netns", yes);
  napi_throw(env, e);
}

bool ambit_arg_netns(napi_env env, napi_value v, const char *fn, int *out_fd, bool *owned) {
  napi_valuetype t;
  ambit_fail f;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_string) {
    char path[4096];
    if (!ambit_arg_string(env, v, fn, "netns", path, sizeof path)) return false;
    if (ambit_netns_open(path, out_fd, &f) != 0) {
      throw_netns_fail(env, &f);
      return false;
    }
    *owned = true;
    return true;
  }
  if (t == napi_number) {
    int fd;
    if (!ambit_arg_fd(env, v, fn, "netns", &fd)) return false;
    if (ambit_netns_check_fd(fd, &f) != 0) {
      throw_netns_fail(env, &f);
      return false;
    }
    *out_fd = fd;
    *owned = false;
    return true;
  }
  return ambit_type_error(env, fn, "netns", "must be a netns path (string) or an open netns fd (number)");
}

typedef struct {
  int nsfd, family, type;
  int fd;
  ambit_fail fail;
} ns_socket_job;

static void *ns_socket_thread(void *arg) {
  ns_socket_job *job = arg;
  /* This thread exists only for the socket() below and ends right after; it never switches back. */
  if (setns(job->nsfd, CLONE_NEWNET) != 0) {
    ambit_fail_set(&job->fail, "setns", errno, NULL);
    return NULL;
  }
  job->fd = socket(job->family, job->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (job->fd < 0) ambit_fail_set(&job->fail, "socket", errno, NULL);
  return NULL;
}

int ambit_socket_in_netns(int nsfd, int family, int type, int *out_fd, ambit_fail *f) {
  ns_socket_job job = {.nsfd = nsfd, .family = family, .type = type, .fd = -1};
  job.fail.err = 0;
  pthread_t tid;
  int rc = ambit_thread_start(ns_socket_thread, &job, 64 * 1024, false, &tid);
  if (rc != 0) {
    ambit_fail_set(f, "pthread_create", rc, NULL);
    return rc;
  }
  pthread_join(tid, NULL);
  if (job.fail.err != 0) {
    *f = job.fail;
    return f->err;
  }
  *out_fd = job.fd;
  return 0;
}

napi_value ambit_open_netns(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[4096];
  if (!ambit_args(env, info, "openNetns", argv, 1, "path")) return NULL;
  if (!ambit_arg_string(env, argv[0], "openNetns", "path", path, sizeof path)) return NULL;
  int fd;
  ambit_fail f;
  if (ambit_netns_open(path, &fd, &f) != 0) {
    ambit_throw_fail(env, &f);
    return NULL;
  }
  napi_value out;
  AMBIT_NAPI(napi_create_int32(env, fd, &out));
  return out;
}

napi_value ambit_netns_id(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!ambit_args(env, info, "netnsId", argv, 1, "netns")) return NULL;
  int fd;
  bool owned;
  if (!ambit_arg_netns(env, argv[0], "netnsId", &fd, &owned)) return NULL;
  struct stat st;
  int rc = fstat(fd, &st);
  int err = errno;
  if (owned) close(fd);
  if (rc != 0) {
    ambit_throw_errno(env, "fstat", err, NULL);
    return NULL;
  }
  char id[48];
  snprintf(id, sizeof id, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
  napi_value out;
  AMBIT_NAPI(napi_create_string_utf8(env, id, NAPI_AUTO_LENGTH, &out));
  return out;
}

/* listenInNetns(netns, {address, port, mark?, reusePort?, backlog?, transparent?}) -> fd */
napi_value ambit_listen_in_netns(napi_env env, napi_callback_info info) {
  static const char *fn = "listenInNetns";
  napi_value argv[2];
  char ip[64];
  int64_t port, mark, backlog;
  bool reuse_port, transparent, has_mark;
  if (!ambit_args_with_opts(env, info, fn, argv)) return NULL;
  if (!ambit_opt_endpoint(env, argv[1], fn, ip, sizeof ip, 0, &port)) return NULL;
  if (!ambit_opt_int(env, argv[1], fn, "mark", 0, UINT32_MAX, -1, &mark)) return NULL;
  has_mark = mark >= 0;
  if (!ambit_opt_int(env, argv[1], fn, "backlog", 1, 65535, 511, &backlog)) return NULL;
  if (!ambit_opt_bool(env, argv[1], fn, "reusePort", false, &reuse_port)) return NULL;
  if (!ambit_opt_bool(env, argv[1], fn, "transparent", false, &transparent)) return NULL;
  ambit_addr addr;
  if (!ambit_parse_addr(env, fn, "opts.address", ip, (int)port, &addr)) return NULL;

  int nsfd, fd = -1;
  bool owned;
  if (!ambit_arg_netns(env, argv[0], fn, &nsfd, &owned)) return NULL;
  ambit_fail f = {0};
  int family = addr.u.sa.sa_family;
  int rc = ambit_socket_in_netns(nsfd, family, SOCK_STREAM, &fd, &f);
  if (owned) close(nsfd);
  if (rc != 0) {
    ambit_throw_fail(env, &f);
    return NULL;
  }
  int one = 1, zero = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    ambit_fail_set(&f, "setsockopt", errno, "SO_REUSEADDR");
    goto fail;
  }
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    ambit_fail_set(&f, "setsockopt", errno, "SO_REUSEPORT");
    goto fail;
  }
  if (has_mark && ambit_set_mark(fd, (uint32_t)mark, &f) != 0) goto fail;
  if (transparent && ambit_set_transparent(fd, family, &f) != 0) goto fail;
  /* An IPv6 listener on [::] also takes IPv4 (as v4-mapped), whatever the sysctl default says. */
  if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) != 0) {
    ambit_fail_set(&f, "setsockopt", errno, "IPV6_V6ONLY");
    goto fail;
  }
  if (bind(fd, &addr.u.sa, addr.len) != 0) {
    char d[96];
    snprintf(d, sizeof d, "%s port %d", ip, (int)port);
    ambit_fail_set(&f, "bind", errno, d);
    goto fail;
  }
  if (listen(fd, (int)backlog) != 0) {
    ambit_fail_set(&f, "listen", errno, NULL);
    goto fail;
  }
  napi_value out;
  AMBIT_NAPI(napi_create_int32(env, fd, &out));
  return out;
fail:
  close(fd);
  ambit_throw_fail(env, &f);
  return NULL;
}
