{
  "targets": [
    {
      "target_name": "coap2mqtt_dtls",
      "sources": ["native/dtls.c"],
      "defines": ["NAPI_VERSION=8", "OPENSSL_API_COMPAT=30000"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "conditions": [
        # Node builds that bundle OpenSSL export its symbols: linking -lssl -lcrypto there would load a
        # second OpenSSL into the process. Only a node linked against the system libssl (Debian's and
        # Raspberry Pi OS's nodejs) needs the libraries, and libssl-dev for the headers.
        ["node_shared_openssl=='true'", { "libraries": ["-lssl", "-lcrypto"] }]
      ]
    },
    {
      # sd_notify for the systemd unit (Type=notify, watchdog): libc only, no OpenSSL and no libsystemd,
      # so it loads on any box whether or not DTLS is used.
      "target_name": "sd_notify",
      "sources": ["native/sd_notify.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    },
    {
      # TCP_QUICKACK on the broker connection (src/upstream/quick-ack.ts): libc only, like sd_notify.
      "target_name": "tcp_quickack",
      "sources": ["native/tcp_quickack.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
