// A DTLS 1.2 server engine over the OpenSSL that Node itself links, for coap2mqtt.
//
// It owns no socket and makes no policy: TypeScript feeds it datagrams per peer and sends what it returns.
// Handshake, record layer and crypto are OpenSSL's; this file only wires memory BIOs, the stateless
// cookie exchange (DTLSv1_listen), and the two synchronous questions OpenSSL asks during a handshake
// (which key for this PSK identity? is this client certificate acceptable?), which it puts to JavaScript.
// ../shared/spec/dtls.md records why each setting below is what it is.
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define COOKIE_LENGTH 16
#define SECRET_LENGTH 32
#define MAX_PEER_KEY 96
#define MAX_IDENTITY 256
#define RECORD_HEADER 13
#define READ_BUFFER (16384 + 2048)
#define INITIAL_RETRANSMIT_US 1000000u
#define MAX_RETRANSMIT_US 8000000u

typedef struct context {
  SSL_CTX *ssl_ctx;
  napi_env env;          // env of the call in progress: OpenSSL's callbacks run synchronously inside it
  napi_ref psk_callback; // (identity, peer) => Buffer | undefined
  napi_ref verify_callback; // (certificate, peer) => boolean
  int alive;             // the JavaScript object still exists: callbacks may be called
  int refs;              // the JavaScript object plus every session still using this context
  unsigned int mtu;
  EVP_MAC_CTX *cookie_mac;          // HMAC-SHA256 keyed with the current secret
  EVP_MAC_CTX *previous_cookie_mac; // and with the previous one, so a rotation never breaks a handshake
  struct session *listener;
  int client; // client role: tests and the benchmark's load generator only
  unsigned char read_buffer[READ_BUFFER];
} context_t;

typedef struct session {
  SSL *ssl;
  context_t *ctx;
  char peer[MAX_PEER_KEY];
  size_t peer_length;
  int handshake_done;
  int identity_refused;  // the PSK callback found no key for the offered identity
  int certificate_refused;
  char identity[MAX_IDENTITY + 1]; // server: the identity offered; client: the one to offer
  unsigned char client_key[64];     // client role: the PSK to offer (one context serves many devices)
  unsigned int client_key_length;
} session_t;

// ---------------------------------------------------------------------------------------------- helpers

// Tags on the external handles, so a context passed where a session belongs is refused, not freed.
static const napi_type_tag CONTEXT_TAG = {0x6a1c0f2e5b3d4c71ULL, 0x9e8f7a6b5c4d3e2fULL};
static const napi_type_tag SESSION_TAG = {0x3f2e1d0c9b8a7968ULL, 0x5746352413021f0eULL};

static int has_tag(napi_env env, napi_value value, const napi_type_tag *tag) {
  bool matches = false;
  return napi_check_object_type_tag(env, value, tag, &matches) == napi_ok && matches;
}

#define CHECK(call)                                                                                   \
  do {                                                                                                \
    if ((call) != napi_ok) return NULL;                                                               \
  } while (0)

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

/** The most telling OpenSSL error of the failed call, as text ("no shared cipher"), then a clean queue. */
static void take_openssl_error(char *into, size_t size, const char *fallback) {
  unsigned long code = 0, last;
  // The first error is the root cause; later ones are the call stack's complaints about it.
  while ((last = ERR_get_error()) != 0) {
    if (code == 0) code = last;
  }
  if (code == 0) {
    snprintf(into, size, "%s", fallback);
    return;
  }
  const char *reason = ERR_reason_error_string(code);
  if (reason != NULL) snprintf(into, size, "%s", reason);
  else ERR_error_string_n(code, into, size);
}

static napi_value string_value(napi_env env, const char *text) {
  napi_value value;
  if (text == NULL) {
    CHECK(napi_get_null(env, &value));
  } else {
    CHECK(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &value));
  }
  return value;
}

static int get_string(napi_env env, napi_value value, char *into, size_t size, size_t *length) {
  size_t written = 0;
  if (napi_get_value_string_utf8(env, value, into, size, &written) != napi_ok) return 0;
  if (length) *length = written;
  return 1;
}

static napi_value named_property(napi_env env, napi_value object, const char *name) {
  napi_value value;
  if (napi_get_named_property(env, object, name, &value) != napi_ok) return NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type == napi_undefined || type == napi_null) return NULL;
  return value;
}

/** A PEM text property ("" or absent → NULL), copied to a heap string the caller frees. */
static char *pem_property(napi_env env, napi_value object, const char *name) {
  napi_value value = named_property(env, object, name);
  if (value == NULL) return NULL;
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok || length == 0) return NULL;
  char *text = malloc(length + 1);
  if (text == NULL) return NULL;
  napi_get_value_string_utf8(env, value, text, length + 1, &length);
  return text;
}

static int bool_property(napi_env env, napi_value object, const char *name) {
  napi_value value = named_property(env, object, name);
  bool result = false;
  if (value != NULL) napi_get_value_bool(env, value, &result);
  return result ? 1 : 0;
}

static int32_t int_property(napi_env env, napi_value object, const char *name, int32_t fallback) {
  napi_value value = named_property(env, object, name);
  int32_t result = fallback;
  if (value != NULL) napi_get_value_int32(env, value, &result);
  return result;
}

// ---------------------------------------------------------------------------------------------- lifetime

static void context_release(napi_env env, context_t *c);

static void session_close_ssl(session_t *s) {
  if (s->ssl != NULL) {
    SSL_free(s->ssl); // frees both memory BIOs and drops its reference on the SSL_CTX
    s->ssl = NULL;
  }
}

static void session_destroy(napi_env env, session_t *s) {
  session_close_ssl(s);
  context_t *c = s->ctx;
  s->ctx = NULL;
  if (c != NULL) context_release(env, c);
}

static void context_release(napi_env env, context_t *c) {
  if (--c->refs > 0) return;
  if (c->listener != NULL) {
    session_close_ssl(c->listener);
    free(c->listener);
  }
  EVP_MAC_CTX_free(c->cookie_mac);
  EVP_MAC_CTX_free(c->previous_cookie_mac);
  SSL_CTX_free(c->ssl_ctx);
  OPENSSL_cleanse(c, sizeof(*c));
  free(c);
}

static void context_finalize(napi_env env, void *data, void *hint) {
  context_t *c = data;
  c->alive = 0;
  if (c->psk_callback) napi_delete_reference(env, c->psk_callback);
  if (c->verify_callback) napi_delete_reference(env, c->verify_callback);
  c->psk_callback = c->verify_callback = NULL;
  context_release(env, c);
}

static void session_finalize(napi_env env, void *data, void *hint) {
  session_t *s = data;
  session_destroy(env, s);
  OPENSSL_cleanse(s, sizeof(*s));
  free(s);
}

// ---------------------------------------------------------------------------------------------- cookies

static EVP_MAC_CTX *new_cookie_mac(void) {
  unsigned char secret[SECRET_LENGTH];
  if (RAND_bytes(secret, sizeof secret) != 1) return NULL;
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  if (mac == NULL) return NULL;
  EVP_MAC_CTX *mac_ctx = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);
  if (mac_ctx == NULL) return NULL;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
      OSSL_PARAM_construct_end(),
  };
  int ok = EVP_MAC_init(mac_ctx, secret, sizeof secret, params);
  OPENSSL_cleanse(secret, sizeof secret);
  if (ok != 1) {
    EVP_MAC_CTX_free(mac_ctx);
    return NULL;
  }
  return mac_ctx;
}

/** Cookie = HMAC-SHA256(secret, peer address), truncated: the server keeps no state per ClientHello. */
static int compute_cookie(EVP_MAC_CTX *keyed, const session_t *s, unsigned char out[COOKIE_LENGTH]) {
  if (keyed == NULL) return 0;
  EVP_MAC_CTX *mac = EVP_MAC_CTX_dup(keyed);
  if (mac == NULL) return 0;
  unsigned char digest[EVP_MAX_MD_SIZE];
  size_t length = 0;
  int ok = EVP_MAC_update(mac, (const unsigned char *)s->peer, s->peer_length) == 1 &&
           EVP_MAC_final(mac, digest, &length, sizeof digest) == 1 && length >= COOKIE_LENGTH;
  EVP_MAC_CTX_free(mac);
  if (ok) memcpy(out, digest, COOKIE_LENGTH);
  return ok;
}

static int cookie_generate(SSL *ssl, unsigned char *cookie, unsigned int *length) {
  session_t *s = SSL_get_app_data(ssl);
  if (s == NULL || !compute_cookie(s->ctx->cookie_mac, s, cookie)) return 0;
  *length = COOKIE_LENGTH;
  return 1;
}

static int cookie_verify(SSL *ssl, const unsigned char *cookie, unsigned int length) {
  session_t *s = SSL_get_app_data(ssl);
  unsigned char expected[COOKIE_LENGTH];
  if (s == NULL || length != COOKIE_LENGTH) return 0;
  if (compute_cookie(s->ctx->cookie_mac, s, expected) && CRYPTO_memcmp(expected, cookie, COOKIE_LENGTH) == 0) return 1;
  return compute_cookie(s->ctx->previous_cookie_mac, s, expected) && CRYPTO_memcmp(expected, cookie, COOKIE_LENGTH) == 0;
}

// ---------------------------------------------------------------------------------------------- identity

static napi_value peer_value(napi_env env, const session_t *s) {
  napi_value value;
  CHECK(napi_create_string_utf8(env, s->peer, s->peer_length, &value));
  return value;
}

static unsigned int psk_server(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max_length) {
  session_t *s = SSL_get_app_data(ssl);
  if (s == NULL) return 0;
  snprintf(s->identity, sizeof s->identity, "%s", identity ? identity : "");
  context_t *c = s->ctx;
  unsigned int result = 0;
  if (c->alive && c->psk_callback != NULL) {
    napi_env env = c->env;
    napi_value callback, global, argv[2], answer;
    if (napi_get_reference_value(env, c->psk_callback, &callback) == napi_ok && napi_get_global(env, &global) == napi_ok &&
        napi_create_string_utf8(env, s->identity, NAPI_AUTO_LENGTH, &argv[0]) == napi_ok &&
        (argv[1] = peer_value(env, s)) != NULL &&
        napi_call_function(env, global, callback, 2, argv, &answer) == napi_ok) {
      bool is_buffer = false;
      void *data;
      size_t length;
      if (napi_is_buffer(env, answer, &is_buffer) == napi_ok && is_buffer &&
          napi_get_buffer_info(env, answer, &data, &length) == napi_ok && length > 0 && length <= max_length) {
        memcpy(psk, data, length);
        result = (unsigned int)length;
      }
    }
  }
  if (result == 0) s->identity_refused = 1;
  return result;
}

static unsigned int psk_client(SSL *ssl, const char *hint, char *identity, unsigned int max_identity_length,
                               unsigned char *psk, unsigned int max_psk_length) {
  session_t *s = SSL_get_app_data(ssl);
  if (s == NULL || s->client_key_length == 0 || s->client_key_length > max_psk_length || strlen(s->identity) >= max_identity_length) {
    return 0;
  }
  snprintf(identity, max_identity_length, "%s", s->identity);
  memcpy(psk, s->client_key, s->client_key_length);
  return s->client_key_length;
}

/** {subject, commonName, fingerprint256} of a certificate, for JavaScript's policy and logs. */
static napi_value certificate_value(napi_env env, X509 *cert) {
  napi_value object;
  CHECK(napi_create_object(env, &object));
  X509_NAME *name = X509_get_subject_name(cert);

  char subject[512] = "";
  BIO *bio = BIO_new(BIO_s_mem());
  if (bio != NULL) {
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    int n = BIO_read(bio, subject, sizeof subject - 1);
    subject[n > 0 ? n : 0] = '\0';
    BIO_free(bio);
  }
  char common_name[256] = "";
  int has_cn = X509_NAME_get_text_by_NID(name, NID_commonName, common_name, sizeof common_name) >= 0;

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  char hex[EVP_MAX_MD_SIZE * 2 + 1] = "";
  if (X509_digest(cert, EVP_sha256(), digest, &digest_length) == 1) {
    for (unsigned int i = 0; i < digest_length; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  }
  CHECK(napi_set_named_property(env, object, "subject", string_value(env, subject)));
  CHECK(napi_set_named_property(env, object, "commonName", string_value(env, has_cn ? common_name : NULL)));
  CHECK(napi_set_named_property(env, object, "fingerprint256", string_value(env, hex)));
  return object;
}

/**
 * Replaces OpenSSL's certificate check: run the normal chain verification against the configured CAs,
 * then let JavaScript decide with its result (a pinned self-signed device certificate fails the chain
 * check and is still acceptable). Called once per client Certificate message.
 */
static int verify_certificate(X509_STORE_CTX *store, void *arg) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
  session_t *s = ssl ? SSL_get_app_data(ssl) : NULL;
  context_t *c = arg;
  int chain_ok = X509_verify_cert(store) == 1;
  int chain_error = chain_ok ? X509_V_OK : X509_STORE_CTX_get_error(store);
  ERR_clear_error();
  X509 *leaf = X509_STORE_CTX_get0_cert(store);

  int accepted = 0;
  if (s != NULL && leaf != NULL && c->alive && c->verify_callback != NULL) {
    napi_env env = c->env;
    napi_value callback, global, argv[2], answer, chain;
    argv[0] = certificate_value(env, leaf);
    if (argv[0] != NULL &&
        napi_set_named_property(env, argv[0], "chainError",
                                (chain = string_value(env, chain_ok ? NULL : X509_verify_cert_error_string(chain_error)))) == napi_ok &&
        (argv[1] = peer_value(env, s)) != NULL && napi_get_reference_value(env, c->verify_callback, &callback) == napi_ok &&
        napi_get_global(env, &global) == napi_ok && napi_call_function(env, global, callback, 2, argv, &answer) == napi_ok) {
      bool yes = false;
      if (napi_get_value_bool(env, answer, &yes) == napi_ok) accepted = yes ? 1 : 0;
    }
  }
  if (accepted) {
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
  }
  if (s != NULL) s->certificate_refused = 1;
  // The alert follows the error: unknown_ca for an unverifiable chain, bad_certificate for a refused one.
  X509_STORE_CTX_set_error(store, chain_ok ? X509_V_ERR_CERT_REJECTED : chain_error);
  return 0;
}

/** RFC 6347 §4.2.4.1: start at 1 s and double, capped so a lossy link still finishes within the timeout. */
static unsigned int retransmit_timer(SSL *ssl, unsigned int previous_us) {
  if (previous_us == 0) return INITIAL_RETRANSMIT_US;
  return previous_us >= MAX_RETRANSMIT_US / 2 ? MAX_RETRANSMIT_US : previous_us * 2;
}

// ---------------------------------------------------------------------------------------------- context

static int load_certificate_chain(SSL_CTX *ctx, const char *pem, char *error, size_t size) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  X509 *leaf = bio ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
  if (leaf == NULL || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    take_openssl_error(error, size, "no certificate found");
    X509_free(leaf);
    BIO_free(bio);
    return 0;
  }
  X509_free(leaf);
  X509 *extra;
  while ((extra = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
      X509_free(extra);
      take_openssl_error(error, size, "cannot use an intermediate certificate");
      BIO_free(bio);
      return 0;
    }
  }
  ERR_clear_error(); // the loop ends with "no start line"
  BIO_free(bio);
  return 1;
}

static int load_private_key(SSL_CTX *ctx, const char *pem, char *error, size_t size) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  int ok = key != NULL && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
  EVP_PKEY_free(key);
  if (!ok) take_openssl_error(error, size, "no private key found");
  return ok;
}

static int load_trusted(SSL_CTX *ctx, const char *pem, char *error, size_t size) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  X509 *cert;
  while (bio != NULL && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, cert) == 1) count++;
    X509_free(cert);
  }
  ERR_clear_error();
  BIO_free(bio);
  if (count == 0) snprintf(error, size, "no certificate found");
  return count > 0;
}

/**
 * createContext({cert?, key?, ca?, ciphers, securityLevel, mtu, requestClientCert, requireClientCert,
 * tickets}, pskCallback, verifyCallback) → context. Throws "<what>: <OpenSSL's reason>" on bad input.
 */
static napi_value js_create_context(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return throw_error(env, "createContext(options, psk, verify)");
  napi_value options = argv[0];

  int client = bool_property(env, options, "client");
  int32_t mtu = int_property(env, options, "mtu", 1232);
  // OpenSSL's DTLS floor: SSL_set_mtu refuses less, and every session would then stall without an error.
  if (mtu < 256) return throw_error(env, "mtu: must be at least 256");
  ERR_clear_error();
  SSL_CTX *ssl_ctx = SSL_CTX_new(client ? DTLS_client_method() : DTLS_server_method());
  if (ssl_ctx == NULL) return throw_error(env, "cannot create an OpenSSL context");
  char error[256] = "";
  char message[384];
  const char *failed = NULL;

  SSL_CTX_set_min_proto_version(ssl_ctx, DTLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ssl_ctx, DTLS1_2_VERSION);
  SSL_CTX_set_security_level(ssl_ctx, int_property(env, options, "securityLevel", 2));
  uint64_t ssl_options = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE;
  if (!bool_property(env, options, "tickets")) ssl_options |= SSL_OP_NO_TICKET;
  SSL_CTX_set_options(ssl_ctx, ssl_options);
  SSL_CTX_set_mode(ssl_ctx, SSL_MODE_NO_AUTO_CHAIN);
  SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_session_id_context(ssl_ctx, (const unsigned char *)"coap2mqtt", 9);
  SSL_CTX_set_cookie_generate_cb(ssl_ctx, cookie_generate);
  SSL_CTX_set_cookie_verify_cb(ssl_ctx, cookie_verify);
  if (client) SSL_CTX_set_psk_client_callback(ssl_ctx, psk_client);
  else SSL_CTX_set_psk_server_callback(ssl_ctx, psk_server);

  char *ciphers = pem_property(env, options, "ciphers");
  if (ciphers != NULL && SSL_CTX_set_cipher_list(ssl_ctx, ciphers) != 1) {
    take_openssl_error(error, sizeof error, "no usable cipher suite");
    failed = "ciphers";
  }
  free(ciphers);

  char *cert = pem_property(env, options, "cert");
  char *key = pem_property(env, options, "key");
  char *ca = pem_property(env, options, "ca");
  if (failed == NULL && cert != NULL && !load_certificate_chain(ssl_ctx, cert, error, sizeof error)) failed = "cert";
  if (failed == NULL && key != NULL && !load_private_key(ssl_ctx, key, error, sizeof error)) failed = "key";
  if (failed == NULL && ca != NULL && !load_trusted(ssl_ctx, ca, error, sizeof error)) failed = "ca";
  if (key != NULL) OPENSSL_cleanse(key, strlen(key));
  free(cert);
  free(key);
  free(ca);
  if (failed != NULL) {
    SSL_CTX_free(ssl_ctx);
    ERR_clear_error();
    snprintf(message, sizeof message, "%s: %s", failed, error);
    return throw_error(env, message);
  }

  context_t *c = calloc(1, sizeof(context_t));
  if (c == NULL) {
    SSL_CTX_free(ssl_ctx);
    return throw_error(env, "out of memory");
  }
  c->ssl_ctx = ssl_ctx;
  c->alive = 1;
  c->refs = 1;
  c->mtu = (unsigned int)mtu;
  c->client = client;
  c->cookie_mac = new_cookie_mac();
  if (c->cookie_mac == NULL) {
    SSL_CTX_free(ssl_ctx);
    free(c);
    return throw_error(env, "cannot set up the cookie secret");
  }
  if (bool_property(env, options, "requestClientCert")) {
    int mode = SSL_VERIFY_PEER | (bool_property(env, options, "requireClientCert") ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    SSL_CTX_set_verify(ssl_ctx, mode, NULL);
    SSL_CTX_set_cert_verify_callback(ssl_ctx, verify_certificate, c);
  }
  napi_create_reference(env, argv[1], 1, &c->psk_callback);
  napi_create_reference(env, argv[2], 1, &c->verify_callback);
  ERR_clear_error();

  napi_value external;
  if (napi_create_external(env, c, context_finalize, NULL, &external) != napi_ok) {
    context_finalize(env, c, NULL);
    return NULL;
  }
  CHECK(napi_type_tag_object(env, external, &CONTEXT_TAG));
  return external;
}

static context_t *context_arg(napi_env env, napi_value value) {
  void *data = NULL;
  if (!has_tag(env, value, &CONTEXT_TAG) || napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    throw_error(env, "not a DTLS context");
    return NULL;
  }
  context_t *c = data;
  c->env = env;
  return c;
}

/** rotateCookieSecret(context): new secret; cookies made with the previous one stay valid until the next call. */
static napi_value js_rotate_cookie_secret(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  context_t *c = context_arg(env, argv[0]);
  if (c == NULL) return NULL;
  EVP_MAC_CTX *fresh = new_cookie_mac();
  if (fresh == NULL) return throw_error(env, "cannot make a new cookie secret");
  EVP_MAC_CTX_free(c->previous_cookie_mac);
  c->previous_cookie_mac = c->cookie_mac;
  c->cookie_mac = fresh;
  return NULL;
}

// ---------------------------------------------------------------------------------------------- sessions

static session_t *session_new(context_t *c, int client) {
  session_t *s = calloc(1, sizeof(session_t));
  if (s == NULL) return NULL;
  SSL *ssl = SSL_new(c->ssl_ctx);
  BIO *in = BIO_new(BIO_s_mem());
  BIO *out = BIO_new(BIO_s_mem());
  if (ssl == NULL || in == NULL || out == NULL) {
    SSL_free(ssl);
    BIO_free(in);
    BIO_free(out);
    free(s);
    return NULL;
  }
  // An empty memory BIO must read as "try again", not as end of file.
  BIO_set_mem_eof_return(in, -1);
  BIO_set_mem_eof_return(out, -1);
  SSL_set_bio(ssl, in, out);
  // A memory BIO cannot report a path MTU: without both calls OpenSSL falls back to 256 bytes.
  SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
  SSL_set_mtu(ssl, c->mtu);
  DTLS_set_timer_cb(ssl, retransmit_timer);
  if (client) SSL_set_connect_state(ssl);
  else SSL_set_accept_state(ssl);
  SSL_set_app_data(ssl, s);
  s->ssl = ssl;
  s->ctx = c;
  return s;
}

static session_t *session_arg(napi_env env, napi_value value) {
  void *data = NULL;
  if (!has_tag(env, value, &SESSION_TAG) || napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    throw_error(env, "not a DTLS session");
    return NULL;
  }
  session_t *s = data;
  if (s->ssl == NULL || s->ctx == NULL) {
    throw_error(env, "DTLS session already freed");
    return NULL;
  }
  s->ctx->env = env;
  return s;
}

/** Reads a call's arguments (argc: room in argv, then how many came) and its first, the session. */
static session_t *session_call(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  if (napi_get_cb_info(env, info, argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (*argc < 1) {
    throw_error(env, "a DTLS session is needed");
    return NULL;
  }
  return session_arg(env, argv[0]);
}

/**
 * Moves what OpenSSL wrote into datagrams: the memory BIO concatenates records, so split at record
 * boundaries and pack whole records up to the MTU (a flight of small records shares one datagram).
 */
static int drain(napi_env env, session_t *s, napi_value datagrams) {
  BIO *out = SSL_get_wbio(s->ssl);
  size_t pending = BIO_ctrl_pending(out);
  if (pending == 0) return 1;
  unsigned char *bytes = malloc(pending);
  if (bytes == NULL) return 0;
  int read = BIO_read(out, bytes, (int)pending);
  size_t total = read > 0 ? (size_t)read : 0;
  uint32_t index;
  napi_get_array_length(env, datagrams, &index);
  size_t start = 0, position = 0;
  unsigned int mtu = s->ctx->mtu;
  while (position < total) {
    size_t record = total - position;
    if (record >= RECORD_HEADER) {
      size_t length = RECORD_HEADER + (((size_t)bytes[position + 11] << 8) | bytes[position + 12]);
      if (length < record) record = length;
    }
    if (position > start && position + record - start > mtu) {
      napi_value datagram;
      if (napi_create_buffer_copy(env, position - start, bytes + start, NULL, &datagram) != napi_ok ||
          napi_set_element(env, datagrams, index++, datagram) != napi_ok) {
        free(bytes);
        return 0;
      }
      start = position;
    }
    position += record;
  }
  int ok = 1;
  if (total > start) {
    napi_value datagram;
    ok = napi_create_buffer_copy(env, total - start, bytes + start, NULL, &datagram) == napi_ok &&
         napi_set_element(env, datagrams, index, datagram) == napi_ok;
  }
  free(bytes);
  return ok;
}

typedef struct outcome {
  int handshake_done; // completed during this call
  int closed;         // close_notify received (and answered)
  char error[256];    // fatal: the session is unusable
} outcome_t;

/** {datagrams, data, handshakeDone, closed, error, identityRefused, certificateRefused} */
static napi_value outcome_value(napi_env env, session_t *s, napi_value datagrams, napi_value data, const outcome_t *o) {
  napi_value result, flag;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_set_named_property(env, result, "datagrams", datagrams));
  CHECK(napi_set_named_property(env, result, "data", data));
  CHECK(napi_get_boolean(env, o->handshake_done, &flag));
  CHECK(napi_set_named_property(env, result, "handshakeDone", flag));
  CHECK(napi_get_boolean(env, o->closed, &flag));
  CHECK(napi_set_named_property(env, result, "closed", flag));
  CHECK(napi_set_named_property(env, result, "error", string_value(env, o->error[0] ? o->error : NULL)));
  CHECK(napi_get_boolean(env, s->identity_refused, &flag));
  CHECK(napi_set_named_property(env, result, "identityRefused", flag));
  CHECK(napi_get_boolean(env, s->certificate_refused, &flag));
  CHECK(napi_set_named_property(env, result, "certificateRefused", flag));
  return result;
}

/** Drives the handshake, then reads every application record; stops at "needs another datagram". */
static void advance(napi_env env, session_t *s, napi_value data, outcome_t *o) {
  SSL *ssl = s->ssl;
  if (!s->handshake_done) {
    int n = SSL_do_handshake(ssl);
    if (n == 1) {
      s->handshake_done = 1;
      o->handshake_done = 1;
    } else {
      int reason = SSL_get_error(ssl, n);
      if (reason != SSL_ERROR_WANT_READ && reason != SSL_ERROR_WANT_WRITE) {
        take_openssl_error(o->error, sizeof o->error, "handshake failed");
        return;
      }
    }
  }
  if (!s->handshake_done) return;
  uint32_t count = 0;
  napi_get_array_length(env, data, &count); // feed() calls this once per record of a datagram
  unsigned char *buffer = s->ctx->read_buffer;
  for (;;) {
    int n = SSL_read(ssl, buffer, READ_BUFFER);
    if (n > 0) {
      napi_value plain;
      if (napi_create_buffer_copy(env, (size_t)n, buffer, NULL, &plain) != napi_ok) return;
      napi_set_element(env, data, count++, plain);
      continue;
    }
    int reason = SSL_get_error(ssl, n);
    if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) return;
    if (reason == SSL_ERROR_ZERO_RETURN) {
      o->closed = 1;
      SSL_shutdown(ssl); // answer the peer's close_notify with ours
      return;
    }
    take_openssl_error(o->error, sizeof o->error, "connection failed");
    return;
  }
}

static napi_value finish(napi_env env, session_t *s, napi_value data, outcome_t *o) {
  napi_value datagrams;
  CHECK(napi_create_array(env, &datagrams));
  // Always drain, also after a fatal error: the alert telling the peer why is in there.
  if (!drain(env, s, datagrams)) return NULL;
  ERR_clear_error();
  return outcome_value(env, s, datagrams, data, o);
}

/** feed(session, datagram | null) → outcome. null continues a handshake the listener has just accepted. */
static napi_value js_feed(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  session_t *s = session_call(env, info, &argc, argv);
  if (s == NULL) return NULL;
  ERR_clear_error();
  bool is_buffer = false;
  if (argc > 1) napi_is_buffer(env, argv[1], &is_buffer);
  unsigned char *bytes = NULL;
  size_t length = 0;
  if (is_buffer) CHECK(napi_get_buffer_info(env, argv[1], (void **)&bytes, &length));
  napi_value data;
  CHECK(napi_create_array(env, &data));
  outcome_t o = {0};
  BIO *in = SSL_get_rbio(s->ssl);
  // One record at a time: OpenSSL drops the rest of a datagram after a record it discards, e.g. a
  // retransmitted ClientHello (its record header still says DTLS 1.0) packed with the next flight.
  size_t position = 0;
  do {
    size_t record = length - position;
    if (record >= RECORD_HEADER) {
      size_t record_length = RECORD_HEADER + (((size_t)bytes[position + 11] << 8) | bytes[position + 12]);
      if (record_length < record) record = record_length;
    }
    if (record > 0) BIO_write(in, bytes + position, (int)record);
    position += record;
    advance(env, s, data, &o);
    // A record OpenSSL did not consume (garbage after a failure) must not be read as part of the next one.
    if (BIO_ctrl_pending(in) > 0) (void)BIO_reset(in);
  } while (position < length && o.error[0] == '\0' && !o.closed);
  return finish(env, s, data, &o);
}

/** write(session, plaintext) → datagrams. Throws when the session can no longer send. */
static napi_value js_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  session_t *s = session_call(env, info, &argc, argv);
  if (s == NULL) return NULL;
  void *bytes;
  size_t length;
  CHECK(napi_get_buffer_info(env, argv[1], &bytes, &length));
  if (!s->handshake_done) return throw_error(env, "handshake not finished");
  ERR_clear_error();
  int n = SSL_write(s->ssl, bytes, (int)length);
  napi_value datagrams;
  CHECK(napi_create_array(env, &datagrams));
  if (n <= 0) {
    char error[256];
    take_openssl_error(error, sizeof error, "write failed");
    return throw_error(env, error);
  }
  if (!drain(env, s, datagrams)) return NULL;
  return datagrams;
}

/** timeout(session) → ms until the handshake retransmission is due, or -1 when no timer runs. */
static napi_value js_timeout(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  session_t *s = session_call(env, info, &argc, argv);
  if (s == NULL) return NULL;
  struct timeval left;
  double ms = -1;
  if (DTLSv1_get_timeout(s->ssl, &left) == 1) ms = (double)left.tv_sec * 1000.0 + (double)left.tv_usec / 1000.0;
  napi_value value;
  CHECK(napi_create_double(env, ms, &value));
  return value;
}

/** handleTimeout(session) → outcome: retransmits the last flight when its timer has expired. */
static napi_value js_handle_timeout(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  session_t *s = session_call(env, info, &argc, argv);
  if (s == NULL) return NULL;
  ERR_clear_error();
  outcome_t o = {0};
  if (DTLSv1_handle_timeout(s->ssl) < 0) take_openssl_error(o.error, sizeof o.error, "handshake retransmissions exhausted");
  napi_value data;
  CHECK(napi_create_array(env, &data));
  return finish(env, s, data, &o);
}

/** shutdown(session) → datagrams carrying close_notify. */
static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  session_t *s = session_call(env, info, &argc, argv);
  if (s == NULL) return NULL;
  ERR_clear_error();
  napi_value datagrams;
  CHECK(napi_create_array(env, &datagrams));
  if (s->handshake_done) {
    SSL_shutdown(s->ssl);
    if (!drain(env, s, datagrams)) return NULL;
  }
  ERR_clear_error();
  return datagrams;
}

/** info(session) → {version, cipher, pskIdentity, certificate, resumed, dataMtu} once established. */
static napi_value js_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  session_t *s = session_call(env, info, &argc, argv);
  if (s == NULL) return NULL;
  napi_value object, value;
  CHECK(napi_create_object(env, &object));
  CHECK(napi_set_named_property(env, object, "version", string_value(env, SSL_get_version(s->ssl))));
  const SSL_CIPHER *cipher = SSL_get_current_cipher(s->ssl);
  CHECK(napi_set_named_property(env, object, "cipher", string_value(env, cipher ? SSL_CIPHER_get_name(cipher) : NULL)));
  CHECK(napi_set_named_property(env, object, "pskIdentity", string_value(env, SSL_get_psk_identity(s->ssl))));
  X509 *peer = SSL_get0_peer_certificate(s->ssl);
  if (peer != NULL) {
    value = certificate_value(env, peer);
    if (value == NULL) return NULL;
  } else {
    CHECK(napi_get_null(env, &value));
  }
  CHECK(napi_set_named_property(env, object, "certificate", value));
  CHECK(napi_get_boolean(env, SSL_session_reused(s->ssl) == 1, &value));
  CHECK(napi_set_named_property(env, object, "resumed", value));
  CHECK(napi_create_uint32(env, (uint32_t)DTLS_get_data_mtu(s->ssl), &value));
  CHECK(napi_set_named_property(env, object, "dataMtu", value));
  ERR_clear_error();
  return object;
}

/** free(session): releases OpenSSL's state now rather than at garbage collection. */
static napi_value js_free(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data = NULL;
  if (!has_tag(env, argv[0], &SESSION_TAG) || napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    return throw_error(env, "not a DTLS session");
  }
  session_destroy(env, data);
  return NULL;
}

/** Hands a new session to JavaScript as a tagged external; it now holds a reference on its context. */
static napi_value session_handle(napi_env env, session_t *s) {
  s->ctx->refs++;
  napi_value session;
  if (napi_create_external(env, s, session_finalize, NULL, &session) != napi_ok) {
    session_destroy(env, s);
    free(s);
    return NULL;
  }
  CHECK(napi_type_tag_object(env, session, &SESSION_TAG));
  return session;
}

/**
 * connect(clientContext, peerKey, pskIdentity?, pskKey?) → session; feed it null to send the ClientHello.
 * Tests and benchmarks only; the PSK is per session so one context serves many simulated devices.
 */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  context_t *c = context_arg(env, argv[0]);
  if (c == NULL) return NULL;
  if (!c->client) return throw_error(env, "connect() needs a context created with client: true");
  session_t *s = session_new(c, 1);
  if (s == NULL) return throw_error(env, "cannot create a DTLS session");
  get_string(env, argv[1], s->peer, sizeof s->peer, &s->peer_length);
  bool is_buffer = false;
  if (argc >= 4 && napi_is_buffer(env, argv[3], &is_buffer) == napi_ok && is_buffer) {
    void *key;
    size_t key_length = 0;
    napi_get_buffer_info(env, argv[3], &key, &key_length);
    if (key_length > 0 && key_length <= sizeof s->client_key && get_string(env, argv[2], s->identity, sizeof s->identity, NULL)) {
      memcpy(s->client_key, key, key_length);
      s->client_key_length = (unsigned int)key_length;
    }
  }
  return session_handle(env, s);
}

/**
 * listen(context, datagram, peerKey) → {datagrams, session}: the stateless cookie exchange. An initial
 * ClientHello gets a HelloVerifyRequest and leaves no state; one with a valid cookie for this peer becomes
 * a session (feed it null to continue). Anything else is dropped.
 */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  context_t *c = context_arg(env, argv[0]);
  if (c == NULL) return NULL;
  void *bytes;
  size_t length;
  CHECK(napi_get_buffer_info(env, argv[1], &bytes, &length));

  if (c->listener == NULL) {
    c->listener = session_new(c, 0);
    if (c->listener == NULL) return throw_error(env, "cannot create a DTLS listener");
  }
  session_t *l = c->listener;
  if (!get_string(env, argv[2], l->peer, sizeof l->peer, &l->peer_length)) return throw_error(env, "peerKey must be a string");

  ERR_clear_error();
  BIO *in = SSL_get_rbio(l->ssl);
  BIO_write(in, bytes, (int)length);
  BIO_ADDR *client = BIO_ADDR_new();
  int result = DTLSv1_listen(l->ssl, client);
  BIO_ADDR_free(client);
  if (BIO_ctrl_pending(in) > 0) (void)BIO_reset(in);

  napi_value object, datagrams, session;
  CHECK(napi_create_object(env, &object));
  CHECK(napi_create_array(env, &datagrams));
  if (!drain(env, l, datagrams)) return NULL;
  ERR_clear_error();
  CHECK(napi_set_named_property(env, object, "datagrams", datagrams));
  if (result == 1) {
    // The listener holds the verified ClientHello: it becomes this peer's session; a fresh one listens next.
    c->listener = NULL;
    session = session_handle(env, l);
    if (session == NULL) return NULL;
  } else {
    if (result < 0) {
      // A fatal error leaves the listener unusable; the next ClientHello gets a new one.
      session_close_ssl(l);
      free(l);
      c->listener = NULL;
    }
    CHECK(napi_get_null(env, &session));
  }
  CHECK(napi_set_named_property(env, object, "session", session));
  return object;
}

/**
 * releaseFreedMemory() → whether memory went back to the system. glibc keeps what OpenSSL freed in its
 * heaps for reuse; after a burst of freed sessions (a flood of half-open handshakes dropped) that is tens of
 * MB held for nothing. malloc_trim(0) returns free pages to the system. false where there is no glibc.
 */
static napi_value js_release_freed_memory(napi_env env, napi_callback_info info) {
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  napi_value value;
  CHECK(napi_get_boolean(env, released != 0, &value));
  return value;
}

// ---------------------------------------------------------------------------------------------- module

static napi_value init(napi_env env, napi_value exports) {
  if (OpenSSL_version_num() < 0x30000000L) {
    return throw_error(env, "the DTLS binding needs OpenSSL 3.0 or later in this Node.js");
  }
  napi_property_descriptor properties[] = {
      {"createContext", NULL, js_create_context, NULL, NULL, NULL, napi_default, NULL},
      {"rotateCookieSecret", NULL, js_rotate_cookie_secret, NULL, NULL, NULL, napi_default, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"feed", NULL, js_feed, NULL, NULL, NULL, napi_default, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_default, NULL},
      {"timeout", NULL, js_timeout, NULL, NULL, NULL, napi_default, NULL},
      {"handleTimeout", NULL, js_handle_timeout, NULL, NULL, NULL, napi_default, NULL},
      {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, js_info, NULL, NULL, NULL, napi_default, NULL},
      {"free", NULL, js_free, NULL, NULL, NULL, napi_default, NULL},
      {"releaseFreedMemory", NULL, js_release_freed_memory, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  napi_value version;
  CHECK(napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &version));
  CHECK(napi_set_named_property(env, exports, "openSslVersion", version));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
