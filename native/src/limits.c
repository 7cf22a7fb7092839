/* Process limits Node does not expose: the open-file limit (setrlimit). */
#include "common.h"

#include <errno.h>
#include <sys/resource.h>

static napi_value limit_obj(napi_env env, const struct rlimit *rl, rlim_t before) {
  napi_value out, v;
  AMBIT_NAPI(napi_create_object(env, &out));
  /* RLIM_INFINITY as -1: a double cannot hold it exactly */
  napi_create_double(env, rl->rlim_cur == RLIM_INFINITY ? -1 : (double)rl->rlim_cur, &v);
  napi_set_named_property(env, out, "soft", v);
  napi_create_double(env, rl->rlim_max == RLIM_INFINITY ? -1 : (double)rl->rlim_max, &v);
  napi_set_named_property(env, out, "hard", v);
  napi_create_double(env, before == RLIM_INFINITY ? -1 : (double)before, &v);
  napi_set_named_property(env, out, "before", v);
  return out;
}

/*
 * raiseFdLimit() -> {soft, hard, before}: the soft RLIMIT_NOFILE raised to the hard limit (what
 * an unprivileged process may do). Each pod's listeners and connections cost fds, and the soft
 * default (1024 on many systems) is far below what a node with a hundred pods needs.
 */
napi_value ambit_raise_fd_limit(napi_env env, napi_callback_info info) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    ambit_throw_errno(env, "getrlimit", errno, "RLIMIT_NOFILE");
    return NULL;
  }
  rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur != rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      ambit_throw_errno(env, "setrlimit", errno, "RLIMIT_NOFILE");
      return NULL;
    }
  }
  return limit_obj(env, &rl, before);
}
