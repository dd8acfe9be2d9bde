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
    }
  ]
}
