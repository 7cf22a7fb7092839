/* Process calls Node does not expose: the open-file limit (setrlimit), the parent-death signal (prctl). */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

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

/*
 * setParentDeathSignal(sig) -> ppid: prctl(PR_SET_PDEATHSIG, sig), then getppid(). The kernel
 * sends `sig` to this process when the thread that forked it exits (0 clears it). The ppid read
 * after the prctl tells whether the parent was already gone before it took effect (the caller
 * compares it with the pid it expects: a different one, e.g. 1 or a subreaper, means orphaned).
 */
napi_value ambit_set_parent_death_signal(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int64_t sig;
  if (!ambit_args(env, info, "setParentDeathSignal", argv, 1, "sig")) return NULL;
  if (!ambit_arg_int(env, argv[0], "setParentDeathSignal", "sig", 0, NSIG - 1, &sig)) return NULL;
  if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0) != 0) {
    ambit_throw_errno(env, "prctl", errno, "PR_SET_PDEATHSIG");
    return NULL;
  }
  AMBIT_NAPI(napi_create_int32(env, (int32_t)getppid(), &out));
  return out;
}
