/* Module registration for ambit_native. Only src/native/index.ts loads this. */
#include "common.h"

static napi_value init(napi_env env, napi_value exports) {
  /* Node's own nghttp2 and OpenSSL: too old, and the load fails here with what is needed */
  if (!ambit_versions_ok(env)) return NULL;
  napi_property_descriptor props[] = {
      {"openNetns", NULL, ambit_open_netns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netnsId", NULL, ambit_netns_id, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listenInNetns", NULL, ambit_listen_in_netns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connectInNetns", NULL, ambit_connect_in_netns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"originalDst", NULL, ambit_original_dst, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setMark", NULL, ambit_set_mark_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setTransparent", NULL, ambit_set_transparent_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, ambit_close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"raiseFdLimit", NULL, ambit_raise_fd_limit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setParentDeathSignal", NULL, ambit_set_parent_death_signal, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvWithFds", NULL, ambit_recv_with_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendWithFds", NULL, ambit_send_with_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unixConnect", NULL, ambit_unix_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unixSocketPair", NULL, ambit_unix_socketpair, NULL, NULL, NULL, napi_enumerable, NULL},
      {"versions", NULL, ambit_versions, NULL, NULL, NULL, napi_enumerable, NULL},
      {"versionsCheck", NULL, ambit_versions_check_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  if (!ambit_engine_init(env, exports)) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
