// sd_notify(3) without libsystemd: one AF_UNIX datagram to $NOTIFY_SOCKET.
//
// Node's dgram module has no AF_UNIX datagram sockets, so this is the smallest native piece that can send
// one. It links nothing but libc (no OpenSSL), so it loads whether or not the DTLS binding does. The
// socket is opened and closed per message: the gateway sends a handful of messages a minute, and holding
// none open means nothing to leak across a fork or a reload.
#include <node_api.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHECK(call)                                                                                   \
  do {                                                                                                \
    if ((call) != napi_ok) return NULL;                                                               \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, const char *path, int error) {
  char message[256 + sizeof(((struct sockaddr_un *)0)->sun_path)];
  snprintf(message, sizeof message, "sd_notify: %s %s: %s", what, path, strerror(error));
  napi_throw_error(env, NULL, message);
  return NULL;
}

/** A string argument, malloc'ed and NUL-terminated; NULL (with a pending exception) if it is not one. */
static char *string_argument(napi_env env, napi_value value, const char *name, size_t *length) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_string) {
    char message[64];
    snprintf(message, sizeof message, "sd_notify: %s must be a string", name);
    napi_throw_type_error(env, NULL, message);
    return NULL;
  }
  if (napi_get_value_string_utf8(env, value, NULL, 0, length) != napi_ok) return NULL;
  char *text = malloc(*length + 1);
  if (text == NULL) {
    napi_throw_error(env, NULL, "sd_notify: out of memory");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, value, text, *length + 1, length) != napi_ok) {
    free(text);
    return NULL;
  }
  return text;
}

// notify(socketPath, message): a path, or "@name" for the abstract namespace (as systemd sets it for
// some services), exactly as sd_notify(3) reads $NOTIFY_SOCKET.
static napi_value js_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "sd_notify: notify(socketPath, message) takes two strings");
    return NULL;
  }
  size_t path_length = 0, message_length = 0;
  char *path = string_argument(env, argv[0], "socketPath", &path_length);
  if (path == NULL) return NULL;
  char *message = string_argument(env, argv[1], "message", &message_length);
  if (message == NULL) {
    free(path);
    return NULL;
  }

  struct sockaddr_un address;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  napi_value result = NULL;
  if (path_length == 0 || (path[0] != '/' && path[0] != '@')) {
    napi_throw_error(env, NULL, "sd_notify: the socket path must be absolute or start with @ (abstract namespace)");
    goto done;
  }
  if (path_length > sizeof address.sun_path || (path[0] == '/' && path_length == sizeof address.sun_path)) {
    throw_errno(env, "socket path too long:", path, ENAMETOOLONG);
    goto done;
  }
  memcpy(address.sun_path, path, path_length);
  // Abstract namespace: the name starts with a NUL byte and is not NUL-terminated; its length is exact.
  if (path[0] == '@') address.sun_path[0] = '\0';
  socklen_t address_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_length + (path[0] == '/' ? 1 : 0));

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, "cannot create a socket for", path, errno);
    goto done;
  }
  ssize_t sent;
  do {
    sent = sendto(fd, message, message_length, MSG_NOSIGNAL, (struct sockaddr *)&address, address_length);
  } while (sent < 0 && errno == EINTR);
  int error = errno;
  close(fd);
  if (sent < 0) {
    throw_errno(env, "cannot send to", path, error);
    goto done;
  }
  if ((size_t)sent != message_length) {
    throw_errno(env, "short datagram to", path, EMSGSIZE);
    goto done;
  }
  napi_get_undefined(env, &result);

done:
  free(path);
  free(message);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"notify", NULL, js_notify, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
