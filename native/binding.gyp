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
        "src/fdpass.c"
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
