// TCP_QUICKACK for the broker connection: Node's net.Socket offers setNoDelay but no way to ask the kernel
// for an immediate ACK, which is what a broker with Nagle's algorithm on (mosquitto's default) waits for
// before it sends the next PUBACK. Linux falls back to delayed ACKs on its own after each exchange, so the
// gateway asks again after each read (src/upstream/quick-ack.ts). libc only; elsewhere than Linux it does
// nothing.
#include <node_api.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define CHECK(call)                                                                                   \
  do {                                                                                                \
    if ((call) != napi_ok) return NULL;                                                               \
  } while (0)

// quickAck(fd): 0 when the ACK owed (if any) went out, otherwise the errno (EBADF, ENOTSOCK,
// ENOPROTOOPT for a socket that is not TCP), or -1 where the platform has no TCP_QUICKACK.
static napi_value js_quick_ack(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd = -1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "tcp_quickack: quickAck(fd) takes a file descriptor");
    return NULL;
  }
  int32_t outcome = -1;
#ifdef TCP_QUICKACK
  int on = 1;
  outcome = setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on) == 0 ? 0 : errno;
#endif
  napi_value result;
  CHECK(napi_create_int32(env, outcome, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"quickAck", NULL, js_quick_ack, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
