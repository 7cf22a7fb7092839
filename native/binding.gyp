{
  "targets": [
    {
      "target_name": "ambit_native",
      "sources": [
        "src/addon.c",
        "src/common.c",
        "src/netns.c",
        "src/sockopt.c",
        "src/connect.c",
        "src/fdpass.c",
        "src/limits.c",
        "src/versions.c",
        "src/engine.c",
        "src/engine_js.c",
        "src/engine_flow.c",
        "src/engine_h2.c",
        "src/engine_tconn.c",
        "src/engine_pool.c",
        "src/engine_tls.c"
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"],
      "libraries": ["-lpthread"]
    }
  ]
}
