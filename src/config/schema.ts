// Every configuration key, with its meaning, default and environment variable. `coap2mqtt check-config`
// and the README are generated from nothing else, so keep the docs here complete and plain.
import { isIP } from 'node:net';
import convict from 'convict';
import { dropPrototypeKeys, fitsShape, isPlainObject, MAX_DEPTH, SETTING_NAME, showValue, tooDeep } from './shape.js';

const registered = new Set<string>();

/** Our formats' checks by name, to explain a value convict is never handed (see shape.ts). */
const formatChecks = new Map<string, (value: unknown) => void>();

function addFormat(format: { name: string; validate: (value: unknown) => void; coerce?: (value: unknown) => unknown }): void {
  convict.addFormat(format);
  formatChecks.set(format.name, format.validate);
}

/** What a setting's format says about `value`, in convict's words (load.ts rewords them for technicians). */
export function formatComplaint(format: unknown, value: unknown): string {
  if (Array.isArray(format)) return `must be one of the possible values: ${JSON.stringify(format)}`;
  if (format === String || format === 'string') return 'must be of type String';
  if (format === 'port') return 'ports must be within range 0 - 65535';
  try {
    if (typeof format === 'string') formatChecks.get(format)?.(value);
  } catch (error) {
    return (error as Error).message;
  }
  return 'has the wrong type';
}

/** A convict format for integers in [min, max]; env strings are coerced like convict's own 'int'. */
function integer(min: number, max: number): string {
  const name = `integer ${min}..${max}`;
  if (!registered.has(name)) {
    registered.add(name);
    addFormat({
      name,
      coerce: (value: unknown) => (typeof value === 'string' && value.trim() !== '' ? Number(value) : value),
      validate: (value: unknown) => {
        if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
          throw new Error(`must be a whole number from ${min} to ${max}`);
        }
      },
    });
  }
  return name;
}

/** A format for "empty, or a URL with one of these schemes and a host"; `expected` ends the error message. */
function urlFormat(name: string, protocols: readonly string[], expected: string): void {
  addFormat({
    name,
    validate: (value: unknown) => {
      if (value === '') return;
      let url: URL | undefined;
      try {
        url = new URL(String(value));
      } catch {
        url = undefined;
      }
      if (typeof value !== 'string' || !url || !protocols.includes(url.protocol) || url.hostname === '') {
        throw new Error(`must be ${expected}`);
      }
    },
  });
}

urlFormat('mqtt-url', ['mqtt:', 'mqtts:'], 'empty (use the embedded broker) or an mqtt:// or mqtts:// URL, e.g. "mqtts://thingsboard.example.com:8883"');
urlFormat('http-url', ['http:', 'https:'], 'empty or an http:// or https:// URL, e.g. "https://thingsboard.example.com"');

/**
 * Environment variables carry lists and objects as JSON. Parsed only when the result is what convict can
 * take whole (see shape.ts) and not absurdly deep; otherwise the string stays, for the format to explain.
 */
function jsonWhen(fits: (parsed: unknown) => boolean): (value: unknown) => unknown {
  return (value) => {
    const parsed = jsonOf(value);
    if (parsed === value || tooDeep(parsed) !== undefined) return value;
    // convict's copies would make "__proto__" keys prototypes (see dropPrototypeKeys).
    dropPrototypeKeys(parsed);
    return fits(parsed) ? parsed : value;
  };
}

/** The JSON a string holds, or the value itself. */
function jsonOf(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    // No reviver: JSON.parse walks a reviver recursively, which a 20,000-deep list overflows.
    return JSON.parse(value) as unknown;
  } catch {
    return value;
  }
}

const DEEP = `must not be nested more than ${MAX_DEPTH} levels deep`;

/** A list of objects, like devices, with an example of one entry for the error message. */
function objectList(name: string, example: string): string {
  addFormat({
    name,
    coerce: jsonWhen(Array.isArray),
    validate: (value: unknown) => {
      if (Array.isArray(value)) return;
      throw new Error(Array.isArray(jsonOf(value)) ? DEEP : `must be a JSON array, e.g. [${example}]`);
    },
  });
  return name;
}

const DEVICE_LIST = objectList('device-list', '{"name":"Boiler-7","type":"thermostat","token":"..."}');
const PROVISION_KEY_LIST = objectList('provision-key-list', '{"key":"...","secret":"...","type":"thermostat"}');
const THING_LIST = objectList('thing-list', '{"thingToken":"...","device":"Boiler-7","activationCode":"..."}');

// Stricter than convict's Boolean, which takes any string ("no" included) as true.
addFormat({
  name: 'boolean',
  coerce: (value: unknown) => (value === 'true' ? true : value === 'false' ? false : value),
  validate: (value: unknown) => {
    if (typeof value !== 'boolean') throw new Error('must be true or false');
  },
});

addFormat({
  name: 'non-empty-string',
  validate: (value: unknown) => {
    if (typeof value !== 'string' || value.trim() === '') throw new Error('must be a non-empty string');
  },
});

// An address to listen on or connect to: anything else fails only at start (a bind error, exit 1 and a
// restart every 10 s). Host names as RFC 1123 allows them, at most 253 characters.
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;
addFormat({
  name: 'host',
  validate: (value: unknown) => {
    if (typeof value !== 'string' || (isIP(value) === 0 && !HOST_NAME.test(value))) throw new Error('must be an IP address or a host name');
  },
});

addFormat({
  name: 'block-size',
  coerce: (value: unknown) => (typeof value === 'string' && value.trim() !== '' ? Number(value) : value),
  validate: (value: unknown) => {
    if (![16, 32, 64, 128, 256, 512, 1024].includes(value as number)) {
      throw new Error('must be one of the RFC 7959 block sizes 16, 32, 64, 128, 256, 512 or 1024');
    }
  },
});

/** Where firmware images may come from, in the order firmware.sources tries them. */
export const FIRMWARE_SOURCE_NAMES = ['dir', 'url', 'thingsboard'] as const;

addFormat({
  name: 'firmware-sources',
  // COAP2MQTT_FIRMWARE_SOURCES carries the list as JSON.
  coerce: jsonWhen(Array.isArray),
  validate: (value: unknown) => {
    if (!Array.isArray(value) || value.some((item) => !(FIRMWARE_SOURCE_NAMES as readonly unknown[]).includes(item))) {
      if (!Array.isArray(value) && Array.isArray(jsonOf(value))) throw new Error(DEEP);
      throw new Error(`must be a list of ${FIRMWARE_SOURCE_NAMES.map((name) => `"${name}"`).join(', ')}, e.g. ["dir", "url", "thingsboard"]`);
    }
    if (new Set(value).size !== value.length) throw new Error('must name each source once');
  },
});

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** Every logger the gateway hands out names one of these (log.components). */
export const LOG_COMPONENTS = [
  'coap',
  'udp',
  'dtls',
  'thingsboard-api',
  'bridge',
  'presence',
  'outbox',
  'upstream',
  'embedded-broker',
  'attribute-cache',
  'limits',
  'http',
  'systemd',
  'reload',
  'provision',
  'firmware',
  'device-http',
  'thethings',
] as const;

addFormat({
  name: 'log-levels',
  // COAP2MQTT_LOG_COMPONENTS carries the object as JSON.
  coerce: jsonWhen((parsed) => fitsShape({}, parsed)),
  validate: (value: unknown) => {
    // A string here is JSON that was not taken: say what is wrong inside it.
    const levels = jsonOf(value);
    if (!isPlainObject(levels)) {
      throw new Error('must be an object of component → level, e.g. {"dtls": "debug", "upstream": "warn"}');
    }
    if (tooDeep(levels) !== undefined) throw new Error(DEEP);
    for (const [component, level] of Object.entries(levels)) {
      if (!SETTING_NAME.test(component)) throw new Error(`${showValue(component)} is not a component name; components: ${LOG_COMPONENTS.join(', ')}`);
      if (!(LOG_LEVELS as readonly unknown[]).includes(level)) {
        throw new Error(`"${component}": ${showValue(level)} is not a level; use one of ${LOG_LEVELS.join(', ')}`);
      }
    }
  },
});

export const schema = {
  coap: {
    host: {
      doc: 'Address the CoAP UDP socket listens on. "::" accepts IPv6 and IPv4 devices; "0.0.0.0" IPv4 only; a specific address limits it to one interface.',
      format: 'host',
      default: '::',
      env: 'COAP2MQTT_COAP_HOST',
    },
    port: {
      doc: 'UDP port for plain CoAP (5683 is the standard port; 0 picks a free one).',
      format: 'port',
      default: 5683,
      env: 'COAP2MQTT_COAP_PORT',
    },
    maxRequestBodyBytes: {
      doc: 'Largest request body accepted, in one datagram or reassembled from Block1 blocks. Larger requests get 4.13 with Size1. At most 49152 so that every reading fits one 64 KiB upstream message. (Called coap.maxPayloadBytes before 0.2.0; the old name still works, with a warning.)',
      format: integer(64, 49152),
      default: 16384,
      env: 'COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES',
    },
    piggybackWindowMs: {
      doc: 'How long a confirmable request may wait for the upstream acknowledgement before the gateway sends an empty ACK and answers later in a separate response. Keep it under the devices\' 2 s ACK timeout.',
      format: integer(0, 1500),
      default: 500,
      env: 'COAP2MQTT_COAP_PIGGYBACK_WINDOW_MS',
    },
    dedupMaxEntries: {
      doc: 'Hard cap on remembered (device address, message id) pairs used to recognise retransmissions for 247 s (RFC 7252 EXCHANGE_LIFETIME). Each costs about 24 bytes (memory taken as entries arrive); the default covers a steady 4,000 requests/s. Beyond the cap the oldest are forgotten early (logged once).',
      format: integer(1000, 20_000_000),
      default: 1_000_000,
      env: 'COAP2MQTT_COAP_DEDUP_MAX_ENTRIES',
    },
    dedupMaxBytes: {
      doc: 'Hard cap on the bytes of answers kept to repeat to retransmissions (most answers, a bare 2.01 or 2.04, take none; a diagnostic or a read\'s 2.05 is kept as the datagram that carried it). One source address (IPv6: its /64) may hold a sixteenth of it; beyond that its answers are not kept, so its retransmitted GETs are handled again and other retransmissions go unanswered (logged once). Beyond the cap the oldest are forgotten early (logged once).',
      format: integer(1_048_576, 1_073_741_824),
      default: 33_554_432,
      env: 'COAP2MQTT_COAP_DEDUP_MAX_BYTES',
    },
    maxBlockTransfers: {
      doc: 'How many Block1 uploads may be in progress at once; the least recently active is abandoned beyond it.',
      format: integer(1, 100_000),
      default: 500,
      env: 'COAP2MQTT_COAP_MAX_BLOCK_TRANSFERS',
    },
    blockTransferIdleMs: {
      doc: 'A Block1 upload with no new block for this long is abandoned.',
      format: integer(1000, 3_600_000),
      default: 120_000,
      env: 'COAP2MQTT_COAP_BLOCK_TRANSFER_IDLE_MS',
    },
    socketBufferBytes: {
      doc: 'Requested UDP socket send/receive buffer size (the kernel caps it at net.core.rmem_max / wmem_max).',
      format: integer(65_536, 268_435_456),
      default: 4_194_304,
      env: 'COAP2MQTT_COAP_SOCKET_BUFFER_BYTES',
    },
    maxBlockSize: {
      doc: 'Largest Block2 block the gateway sends (RFC 7959). Responses and notifications longer than this go out block by block; a device may ask for smaller blocks itself. Use 256 or less on 6LoWPAN links.',
      format: 'block-size',
      default: 1024,
      env: 'COAP2MQTT_COAP_MAX_BLOCK_SIZE',
    },
    observeCheckIntervalMs: {
      doc: 'At least this often each observation gets a confirmable notification (the current state when nothing else happened), so an observer that vanished is found and dropped (RFC 7641 §4.5).',
      format: integer(10_000, 86_400_000),
      default: 300_000,
      env: 'COAP2MQTT_COAP_OBSERVE_CHECK_INTERVAL_MS',
    },
    maxObservations: {
      doc: 'Most Observe relations held at once (two per device at most: attributes and RPC). Beyond it registrations are answered without Observe.',
      format: integer(1, 10_000_000),
      default: 100_000,
      env: 'COAP2MQTT_COAP_MAX_OBSERVATIONS',
    },
  },
  dtls: {
    enabled: {
      doc: 'Also accept CoAP over DTLS 1.2 (coaps://) on dtls.port, on the same address as coap.host. Devices authenticate with a PSK (devices[].psk) or a client certificate (devices[].cert), or send a token in the path over a server-authenticated session.',
      format: 'boolean',
      default: false,
      env: 'COAP2MQTT_DTLS_ENABLED',
    },
    port: {
      doc: 'UDP port for CoAP over DTLS (5684 is the standard coaps port).',
      format: 'port',
      default: 5684,
      env: 'COAP2MQTT_DTLS_PORT',
    },
    cert: {
      doc: 'PEM file with the gateway\'s certificate (then any intermediates) for certificate suites. Empty: PSK only.',
      format: String,
      default: '',
      env: 'COAP2MQTT_DTLS_CERT',
    },
    key: {
      doc: 'PEM file with the private key of dtls.cert. Keep it readable by the gateway only.',
      format: String,
      default: '',
      env: 'COAP2MQTT_DTLS_KEY',
    },
    ca: {
      doc: 'PEM file of the CA(s) that sign device certificates; devices listed with cert.cn must chain to it. Devices pinned with cert.fingerprint256 need no CA.',
      format: String,
      default: '',
      env: 'COAP2MQTT_DTLS_CA',
    },
    requireClientCert: {
      doc: 'Refuse certificate-suite handshakes from devices without a client certificate (PSK devices are unaffected). false also lets devices use a token path over a server-authenticated session.',
      format: 'boolean',
      default: false,
      env: 'COAP2MQTT_DTLS_REQUIRE_CLIENT_CERT',
    },
    ciphers: {
      doc: 'OpenSSL cipher list in the gateway\'s order of preference. The default puts RFC 7252\'s mandatory CCM_8 suites first (constrained devices implement little else), then GCM and ChaCha20 for capable clients.',
      format: 'non-empty-string',
      default:
        'PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8:PSK-AES128-CCM:ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:PSK-AES128-CBC-SHA256',
      env: 'COAP2MQTT_DTLS_CIPHERS',
    },
    securityLevel: {
      doc: 'OpenSSL security level (0-5) for keys and algorithms. 2 refuses RSA keys under 2048 bits and SHA-1 signatures; the CCM_8 suites pass at 0-2.',
      format: integer(0, 5),
      default: 2,
      env: 'COAP2MQTT_DTLS_SECURITY_LEVEL',
    },
    mtu: {
      doc: 'Largest DTLS datagram the gateway sends, in bytes. 1232 fits any IPv6 path; handshake flights are fragmented to it, and Block2 sizes are chosen so CoAP messages fit it.',
      format: integer(256, 9000),
      default: 1232,
      env: 'COAP2MQTT_DTLS_MTU',
    },
    handshakeTimeoutMs: {
      doc: 'A handshake not finished within this time is abandoned (a wrong PSK shows up this way: DTLS sends no alert for it).',
      format: integer(1000, 600_000),
      default: 30_000,
      env: 'COAP2MQTT_DTLS_HANDSHAKE_TIMEOUT_MS',
    },
    idleTimeoutMs: {
      doc: 'A session without traffic for this long is closed (close_notify); the device handshakes again when it next sends. Keep it above coap.observeCheckIntervalMs so observing devices keep theirs. 0: never.',
      format: integer(0, 86_400_000),
      default: 600_000,
      env: 'COAP2MQTT_DTLS_IDLE_TIMEOUT_MS',
    },
    maxSessions: {
      doc: 'Most established DTLS sessions at once (about 50-65 KB of memory each; handshakes still under way are bounded apart, by dtls.maxHandshakes). When full, the session idle longest (at least a minute) makes room for a new one; otherwise new handshakes are refused.',
      format: integer(1, 1_000_000),
      default: 10_000,
      env: 'COAP2MQTT_DTLS_MAX_SESSIONS',
    },
    // The defaults, from the figures: a half-open handshake holds ~55 KB (10,000 of them took RSS from 78 to
    // 623 MB). On loopback or a LAN a PSK handshake lasts ~1 ms after the cookie, so hundreds per second need
    // only a few places; over a 6LoWPAN mesh it lasts up to 1-3 s (a round trip, one retransmission), so 512
    // places let ~170-500 slow devices a second start: a 10,000-device fleet (dtls.maxSessions) reconnecting
    // within a minute. 512 x 55 KB = 28 MB at most. Per address, 64: a mesh behind one border router carries a
    // few dozen handshakes a second (shared 250 kbit/s radio, ~6 fragmented datagrams each) lasting ~1-2 s;
    // and one host alone takes at most 1/8 of the pool.
    maxHandshakes: {
      doc: 'Most DTLS handshakes in progress at once: a device has echoed its cookie (proving its address) and not finished yet; about 55 KB of memory each. They are kept apart from dtls.maxSessions, so they never push out or keep out established sessions. When full, the handshake silent longest gives way to a new one; above half full, handshakes silent for 3 s are dropped. The default holds a fleet of thousands reconnecting over slow links within a minute; raise it only if the log says handshakes pile up while devices are reconnecting, not under a flood.',
      format: integer(16, 100_000),
      default: 512,
      env: 'COAP2MQTT_DTLS_MAX_HANDSHAKES',
    },
    maxHandshakesPerAddress: {
      doc: 'Most DTLS handshakes in progress at once from one IPv4 address or IPv6 /64, so one host cannot take all of dtls.maxHandshakes. Beyond it a new handshake from that address waits (its device sends its ClientHello again) until one of them finishes or is silent for 3 s. Raise it when many devices share one address and reconnect together: behind a NAT, a mobile carrier\'s NAT, or a 6LoWPAN/Thread border router (one /64).',
      format: integer(1, 100_000),
      default: 64,
      env: 'COAP2MQTT_DTLS_MAX_HANDSHAKES_PER_ADDRESS',
    },
    sessionTickets: {
      doc: 'Issue RFC 5077 session tickets so devices can resume without a full handshake. Off by default: a ticket costs a constrained device ~0.7 KB of memory, and a resumed session is not re-checked against its PSK or certificate (removing a device from the list still refuses its requests).',
      format: 'boolean',
      default: false,
      env: 'COAP2MQTT_DTLS_SESSION_TICKETS',
    },
  },
  limits: {
    requestsPerSecond: {
      doc: 'Most new requests per second the gateway accepts from all devices together; beyond it they are answered 4.29 Too Many Requests with Max-Age (seconds until one would be accepted). Retransmissions, block-wise follow-ups and Observe deregistrations are never counted. 0: no gateway-wide limit. Set it somewhat below what the box sustains (npm run bench) to refuse cheaply rather than answer late.',
      format: integer(0, 1_000_000),
      default: 0,
      env: 'COAP2MQTT_LIMITS_REQUESTS_PER_SECOND',
    },
    burst: {
      doc: 'How many new requests may arrive at once above limits.requestsPerSecond before the gateway-wide limit applies (token-bucket size). 0: one second\'s worth, the value of limits.requestsPerSecond.',
      format: integer(0, 10_000_000),
      default: 0,
      env: 'COAP2MQTT_LIMITS_BURST',
    },
    deviceRequestsPerSecond: {
      doc: 'Most requests per second one device may make, whatever its address or transport; beyond it they are answered 4.29 Too Many Requests with Max-Age. A Block1 upload counts once; retransmissions, Block2 follow-ups and Observe deregistrations never. 0: no per-device limit.',
      format: integer(0, 100_000),
      default: 50,
      env: 'COAP2MQTT_LIMITS_DEVICE_REQUESTS_PER_SECOND',
    },
    deviceBurst: {
      doc: 'How many requests one device may send back to back before limits.deviceRequestsPerSecond applies, e.g. a backlog of readings sent after a reconnection (token-bucket size).',
      format: integer(1, 1_000_000),
      default: 100,
      env: 'COAP2MQTT_LIMITS_DEVICE_BURST',
    },
    unknownTokenFailures: {
      doc: 'An address (IPv6: its /64) that sends this many different unknown access tokens within limits.unknownTokenWindowMs is blocked for limits.unknownTokenBlockMs: its token requests, with a valid token too, are answered 4.29 with Max-Age, which stops token guessing. Repeating one wrong token counts once. Devices identified by DTLS are never blocked. Logged once per block. 0: never block.',
      format: integer(0, 1000),
      default: 20,
      env: 'COAP2MQTT_LIMITS_UNKNOWN_TOKEN_FAILURES',
    },
    unknownTokenWindowMs: {
      doc: 'The window in which limits.unknownTokenFailures different unknown tokens get an address blocked; it starts at the first unknown token.',
      format: integer(1000, 86_400_000),
      default: 60_000,
      env: 'COAP2MQTT_LIMITS_UNKNOWN_TOKEN_WINDOW_MS',
    },
    unknownTokenBlockMs: {
      doc: 'How long an address stays blocked after too many unknown tokens. Behind a NAT every device sharing the address is blocked with it, so keep it short enough for them to catch up.',
      format: integer(1000, 86_400_000),
      default: 300_000,
      env: 'COAP2MQTT_LIMITS_UNKNOWN_TOKEN_BLOCK_MS',
    },
  },
  upstream: {
    url: {
      doc: 'ThingsBoard MQTT endpoint, e.g. "mqtt://thingsboard.local:1883" or "mqtts://thingsboard.cloud:8883". Empty: start the embedded broker on loopback (see embeddedBroker) and keep all data on this machine.',
      format: 'mqtt-url',
      default: '',
      env: 'COAP2MQTT_UPSTREAM_URL',
    },
    accessToken: {
      doc: 'Access token of the gateway device in ThingsBoard (created with "Is gateway" ticked); sent as the MQTT username.',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_ACCESS_TOKEN',
      sensitive: true,
    },
    username: {
      doc: 'MQTT username, for gateways using ThingsBoard "MQTT Basic" credentials instead of an access token.',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_USERNAME',
    },
    password: {
      doc: 'MQTT password for "MQTT Basic" credentials.',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_PASSWORD',
      sensitive: true,
    },
    clientId: {
      doc: 'MQTT client id. Empty: "coap2mqtt-<hostname>-<random>", generated once and kept in state.dir, so two boxes with the same host name never evict each other from the broker. ThingsBoard "MQTT Basic" credentials may require a specific one.',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_CLIENT_ID',
    },
    ca: {
      doc: 'PEM file of the CA that signed the broker certificate (mqtts only). Empty: the system trust store.',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_CA',
    },
    cert: {
      doc: 'PEM client certificate, for ThingsBoard "X.509" gateway credentials (mqtts only).',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_CERT',
    },
    key: {
      doc: 'PEM private key of upstream.cert.',
      format: String,
      default: '',
      env: 'COAP2MQTT_UPSTREAM_KEY',
    },
    keepaliveSeconds: {
      doc: 'MQTT keep-alive interval; a dead connection is noticed after about 1.5 times this.',
      format: integer(5, 3600),
      default: 60,
      env: 'COAP2MQTT_UPSTREAM_KEEPALIVE_SECONDS',
    },
    connectTimeoutMs: {
      doc: 'How long one connection attempt may take before it is abandoned and retried.',
      format: integer(1000, 300_000),
      default: 10_000,
      env: 'COAP2MQTT_UPSTREAM_CONNECT_TIMEOUT_MS',
    },
    reconnectMinMs: {
      doc: 'First delay before reconnecting after the connection drops; doubles (with jitter) up to upstream.reconnectMaxMs.',
      format: integer(100, 600_000),
      default: 1000,
      env: 'COAP2MQTT_UPSTREAM_RECONNECT_MIN_MS',
    },
    reconnectMaxMs: {
      doc: 'Longest delay between reconnection attempts.',
      format: integer(100, 3_600_000),
      default: 60_000,
      env: 'COAP2MQTT_UPSTREAM_RECONNECT_MAX_MS',
    },
    publishTimeoutMs: {
      doc: 'How long a reading may wait for the broker\'s PUBACK before the device is told 5.03 and may retry.',
      format: integer(100, 600_000),
      default: 10_000,
      env: 'COAP2MQTT_UPSTREAM_PUBLISH_TIMEOUT_MS',
    },
    maxInflight: {
      doc: 'Publishes awaiting PUBACK at once. ThingsBoard allows 100 by default; stay below 80% of it.',
      format: integer(1, 65_535),
      default: 80,
      env: 'COAP2MQTT_UPSTREAM_MAX_INFLIGHT',
    },
    maxQueuedPublishes: {
      doc: 'Publishes that may wait for a free in-flight slot; beyond it devices are told 5.03.',
      format: integer(0, 1_000_000),
      default: 10_000,
      env: 'COAP2MQTT_UPSTREAM_MAX_QUEUED_PUBLISHES',
    },
    sessionLimitsTimeoutMs: {
      doc: 'After each connection the gateway asks ThingsBoard for its session limits (getSessionLimits) and keeps its publishes under 80% of them; the outbox waits up to this long for the answer before sending. 0: do not ask, use maxInflight and maxMessageBytes as configured and no rate limit.',
      format: integer(0, 600_000),
      default: 5_000,
      env: 'COAP2MQTT_UPSTREAM_SESSION_LIMITS_TIMEOUT_MS',
    },
    maxMessageBytes: {
      doc: 'Largest MQTT payload the broker accepts (ThingsBoard: 65536). Readings are split across messages below it.',
      format: integer(1024, 268_435_455),
      default: 65_536,
      env: 'COAP2MQTT_UPSTREAM_MAX_MESSAGE_BYTES',
    },
    maxDownlinkBytes: {
      doc: 'Largest message accepted from ThingsBoard (shared-attribute pushes, RPCs, attribute answers). A larger one is refused unread and logged; ThingsBoard\'s RPC call then times out. 65536 matches ThingsBoard\'s own default payload limit; a constrained device could not take much more in any case.',
      format: integer(1024, 16_777_216),
      default: 65_536,
      env: 'COAP2MQTT_UPSTREAM_MAX_DOWNLINK_BYTES',
    },
    maxDownlinkDepth: {
      doc: 'Deepest nesting of arrays and objects accepted in a message from ThingsBoard (the whole message counts: an RPC\'s params start at level 3). A deeper one is refused and logged, and an RPC is answered {"error": ...} at once. Deep JSON is almost always a rule chain gone wrong, and device firmware parsers seldom handle more than a few levels.',
      format: integer(4, 1000),
      default: 32,
      env: 'COAP2MQTT_UPSTREAM_MAX_DOWNLINK_DEPTH',
    },
  },
  outbox: {
    enabled: {
      doc: 'Keep uplinks (telemetry, client attributes, RPC replies, claims) that ThingsBoard cannot take at once in a durable store, answer the device 2.01 once they are safe there, and forward them upstream from there in order (outbox.mode says when: only when needed, or always). With false, a device is answered only after ThingsBoard\'s PUBACK and gets 5.03 while the broker is unreachable; nothing is written to disk.',
      format: 'boolean',
      default: true,
      env: 'COAP2MQTT_OUTBOX_ENABLED',
    },
    mode: {
      doc: '"spill": while ThingsBoard is connected, nothing waits in the outbox and the in-flight window has room, a reading goes straight upstream and the device is answered on the PUBACK, with nothing written to disk; when the connection is down, the window full, the PUBACK later than spillAfterMs, or earlier readings still wait, it is stored first (answered once durable) and sent from the outbox in order. "always": every reading is stored before the device is answered and sent from the store, at about 5 KB written per reading at low rates, less as readings share a commit (2.6 KB at 100/s, 0.5 KB at 1,000/s; see docs/outbox.md).',
      format: ['spill', 'always'],
      default: 'spill',
      env: 'COAP2MQTT_OUTBOX_MODE',
    },
    spillAfterMs: {
      doc: 'With mode "spill": how long a reading sent straight upstream may wait for the broker\'s PUBACK before it is stored instead (and the device answered once it is durable). Its publish stays on its way and the stored copy waits for it: if the PUBACK comes, the copy is dropped; if the connection is lost first, the copy is sent, and ThingsBoard may see the reading twice (QoS 1).',
      format: integer(50, 60_000),
      default: 2_000,
      env: 'COAP2MQTT_OUTBOX_SPILL_AFTER_MS',
    },
    maxBytes: {
      doc: 'Most uplink data the outbox keeps, in bytes (its file on disk is about as large). When a long outage fills it, the oldest readings are dropped first, logged and counted.',
      format: integer(1_048_576, 1_099_511_627_776),
      default: 268_435_456,
      env: 'COAP2MQTT_OUTBOX_MAX_BYTES',
    },
    maxAgeHours: {
      doc: 'Readings older than this are dropped from the outbox without being sent (logged and counted); 0 keeps them until maxBytes forces them out.',
      format: integer(0, 87_600),
      default: 168,
      env: 'COAP2MQTT_OUTBOX_MAX_AGE_HOURS',
    },
    minFreeDiskBytes: {
      doc: 'Free space to leave on the state directory\'s file system for the rest of the box (logs, updates): below it new uplinks are answered 5.03 instead of being stored. 0 leaves it to the disk filling up, which is also answered 5.03.',
      format: integer(0, 1_099_511_627_776),
      default: 67_108_864,
      env: 'COAP2MQTT_OUTBOX_MIN_FREE_DISK_BYTES',
    },
    synchronous: {
      doc: '"full": each commit reaches the storage medium before devices are answered, so acknowledged readings survive a power cut (one fdatasync of the WAL per group commit, on a background thread: commits that arrive meanwhile share the next one). "normal": they survive a crash or kill of the gateway but a power cut may lose the last moments; answers do not wait for the disk, which matters on slow SD cards.',
      format: ['full', 'normal'],
      default: 'full',
      env: 'COAP2MQTT_OUTBOX_SYNCHRONOUS',
    },
    shutdownFlushMs: {
      doc: 'On SIGTERM, how long to wait for ThingsBoard to acknowledge what is already on its way before closing (what is not acknowledged stays in the outbox for the next start).',
      format: integer(0, 600_000),
      default: 5_000,
      env: 'COAP2MQTT_OUTBOX_SHUTDOWN_FLUSH_MS',
    },
  },
  sessions: {
    persist: {
      doc: 'Keep Observe relations and the RPCs waiting for devices in <state.dir>/sessions.sqlite, so a restart, a crash or a power cut leaves no observing device deaf and loses no RPC: after a start each relation is confirmed with a notification of the current state. Written when a relation starts, moves or ends and when an RPC is queued, never per notification. false: kept in memory only; a clean stop then tells each observer 5.03 so it registers again.',
      format: 'boolean',
      default: true,
      env: 'COAP2MQTT_SESSIONS_PERSIST',
    },
    attributeRequestTimeoutMs: {
      doc: 'How long a device\'s GET /attributes waits for ThingsBoard\'s answer before it is told 5.04 Gateway Timeout (ThingsBoard sends no answer at all when it fails).',
      format: integer(100, 120_000),
      default: 5000,
      env: 'COAP2MQTT_SESSIONS_ATTRIBUTE_REQUEST_TIMEOUT_MS',
    },
    clientRpcTimeoutMs: {
      doc: 'How long a device\'s client-side RPC (POST /rpc) waits for the rule chain\'s reply before it is told 5.04 Gateway Timeout.',
      format: integer(100, 300_000),
      default: 10_000,
      env: 'COAP2MQTT_SESSIONS_CLIENT_RPC_TIMEOUT_MS',
    },
    rpcQueueTtlMs: {
      doc: 'How long a server-side RPC for a device that is not observing /rpc (a sleeping device) is kept for delivery when it next registers. Older ones are dropped and logged.',
      format: integer(1000, 7 * 86_400_000),
      default: 300_000,
      env: 'COAP2MQTT_SESSIONS_RPC_QUEUE_TTL_MS',
    },
    rpcQueueMax: {
      doc: 'Most RPCs kept per sleeping device; the oldest is dropped (and logged) beyond it.',
      format: integer(0, 10_000),
      default: 20,
      env: 'COAP2MQTT_SESSIONS_RPC_QUEUE_MAX',
    },
    idleTimeoutMs: {
      doc: 'A device with no observation that sends nothing for this long is disconnected upstream (v1/gateway/disconnect), so ThingsBoard shows it offline. 0 never disconnects.',
      format: integer(0, 30 * 86_400_000),
      default: 600_000,
      env: 'COAP2MQTT_SESSIONS_IDLE_TIMEOUT_MS',
    },
    keepAliveIntervalMs: {
      doc: 'An observing device that has sent nothing upstream for this long gets a small attribute request on its behalf, which counts as activity in ThingsBoard (silent devices are marked inactive after 10 minutes otherwise) and refreshes the shared-attribute cache. 0 turns it off.',
      format: integer(0, 86_400_000),
      default: 240_000,
      env: 'COAP2MQTT_SESSIONS_KEEP_ALIVE_INTERVAL_MS',
    },
  },
  embeddedBroker: {
    host: {
      doc: 'Loopback address of the embedded MQTT broker, used only while upstream.url is empty.',
      format: 'host',
      default: '127.0.0.1',
      env: 'COAP2MQTT_EMBEDDED_BROKER_HOST',
    },
    port: {
      doc: 'TCP port of the embedded MQTT broker (0 picks a free one). Watch what would go to ThingsBoard with: mosquitto_sub -p 1883 -t "v1/gateway/#" -v',
      format: 'port',
      default: 1883,
      env: 'COAP2MQTT_EMBEDDED_BROKER_PORT',
    },
  },
  http: {
    enabled: {
      doc: 'Serve /healthz (is the gateway serving devices, is ThingsBoard connected, how far behind is the outbox) and /metrics (Prometheus text format) over HTTP on http.host:http.port.',
      format: 'boolean',
      default: true,
      env: 'COAP2MQTT_HTTP_ENABLED',
    },
    host: {
      doc: 'Address of the health and metrics endpoint. Keep it on loopback (127.0.0.1 or ::1) unless a firewall protects the port: it needs no credentials.',
      format: 'host',
      default: '127.0.0.1',
      env: 'COAP2MQTT_HTTP_HOST',
    },
    port: {
      doc: 'TCP port of the health and metrics endpoint (0 picks a free one).',
      format: 'port',
      default: 9464,
      env: 'COAP2MQTT_HTTP_PORT',
    },
  },
  thethings: {
    enabled: {
      doc: 'Accept thethings.io\'s CoAP API under /v2/things (activate, write, read, subscribe) for devices written for thethings.io, beside ThingsBoard\'s /api/v1 paths.',
      format: 'boolean',
      default: false,
      env: 'COAP2MQTT_THETHINGS_ENABLED',
    },
    things: {
      doc: 'Thing tokens of devices, as [{"thingToken": "...", "device": "Boiler-7", "activationCode": "..."}]: device is a name in devices; activationCode (optional) is what POST /v2/things exchanges for the thing token. A registry access token also works as a thing token without an entry here.',
      format: THING_LIST,
      default: [] as unknown[],
      env: 'COAP2MQTT_THETHINGS_THINGS',
      sensitive: true,
    },
    provisionKey: {
      doc: 'Activation codes not in thethings.things are provisioned with this provision key (and thethings.provisionSecret), as a device named after the code, whose issued access token becomes the thing token; empty: unknown codes are refused (4.01).',
      format: String,
      default: '',
      env: 'COAP2MQTT_THETHINGS_PROVISION_KEY',
    },
    provisionSecret: {
      doc: 'The secret that goes with thethings.provisionKey.',
      format: String,
      default: '',
      env: 'COAP2MQTT_THETHINGS_PROVISION_SECRET',
      sensitive: true,
    },
    valuesPerKey: {
      doc: 'Recent values kept per device and key for reads (GET /v2/things/{thingToken}/resources/{key}); ThingsBoard\'s history is not reachable from the gateway.',
      format: integer(1, 10_000),
      default: 100,
      env: 'COAP2MQTT_THETHINGS_VALUES_PER_KEY',
    },
    maxSeries: {
      doc: 'Device-and-key series kept for reads, all devices together; the least recently written is forgotten beyond it.',
      format: integer(1, 1_000_000),
      default: 10_000,
      env: 'COAP2MQTT_THETHINGS_MAX_SERIES',
    },
  },
  deviceHttp: {
    enabled: {
      doc: 'Serve ThingsBoard\'s HTTP device API (POST /api/v1/{token}/telemetry, attributes, rpc, claim, provision; GET attributes, firmware; long-polls GET /rpc?timeout= and /attributes/updates?timeout=) on deviceHttp.host:deviceHttp.port, for Wi-Fi devices written for ThingsBoard\'s HTTP transport. Plain HTTP: keep it on a trusted network.',
      format: 'boolean',
      default: false,
      env: 'COAP2MQTT_DEVICE_HTTP_ENABLED',
    },
    host: {
      doc: 'Address of the HTTP device API ("::" also accepts IPv4 where the system allows).',
      format: 'host',
      default: '::',
      env: 'COAP2MQTT_DEVICE_HTTP_HOST',
    },
    port: {
      doc: 'TCP port of the HTTP device API (0 picks a free one).',
      format: 'port',
      default: 8080,
      env: 'COAP2MQTT_DEVICE_HTTP_PORT',
    },
    maxBodyBytes: {
      doc: 'Largest request body accepted; larger ones are answered 413.',
      format: integer(64, 16 * 1024 * 1024),
      default: 65_536,
      env: 'COAP2MQTT_DEVICE_HTTP_MAX_BODY_BYTES',
    },
    maxConnections: {
      doc: 'TCP connections at once (each long-poll holds one). A connection must send its request within 5 s of opening; at the bound a new connection closes the oldest one without a request in progress, and is refused only when every connection holds one.',
      format: integer(1, 100_000),
      default: 1024,
      env: 'COAP2MQTT_DEVICE_HTTP_MAX_CONNECTIONS',
    },
    maxConnectionsPerAddress: {
      doc: 'TCP connections at once from one IP address, so one client cannot take them all; beyond it the address\'s oldest connection without a request in progress is closed, or the new one refused. Behind a reverse proxy every client has the proxy\'s address: raise it to deviceHttp.maxConnections.',
      format: integer(1, 100_000),
      default: 128,
      env: 'COAP2MQTT_DEVICE_HTTP_MAX_CONNECTIONS_PER_ADDRESS',
    },
  },
  provision: {
    mode: {
      doc: 'What POST /api/v1/provision does. "upstream": forward the request to ThingsBoard over a separate short MQTT connection (username "provision") and register the credentials it issues; "local": check the request against provision.keys and issue a token here, announcing the device with v1/gateway/connect; "off": answer 4.03. Provisioned devices are added to devicesFile.',
      format: ['upstream', 'local', 'off'],
      default: 'upstream',
      env: 'COAP2MQTT_PROVISION_MODE',
    },
    keys: {
      doc: 'For provision.mode "local": the provision key/secret pairs devices may present, as [{"key": "...", "secret": "...", "type": "thermostat"}]; type is the device profile the new devices get (default "default").',
      format: PROVISION_KEY_LIST,
      default: [] as unknown[],
      env: 'COAP2MQTT_PROVISION_KEYS',
      sensitive: true,
    },
    deviceType: {
      doc: 'For provision.mode "upstream": the device profile the gateway names when it announces a device ThingsBoard provisioned (ThingsBoard has already created it with its provision profile; this matters only if it was deleted since).',
      format: 'non-empty-string',
      default: 'default',
      env: 'COAP2MQTT_PROVISION_DEVICE_TYPE',
    },
    namePrefix: {
      doc: 'A provisioning request without deviceName gets the name <namePrefix><8 random hex digits>, which the gateway logs and registers (ThingsBoard would invent a name it never reveals).',
      format: 'non-empty-string',
      default: 'coap-',
      env: 'COAP2MQTT_PROVISION_NAME_PREFIX',
    },
    timeoutMs: {
      doc: 'How long to wait for ThingsBoard\'s answer on /provision/response before answering the device 5.04.',
      format: integer(1000, 120_000),
      default: 10_000,
      env: 'COAP2MQTT_PROVISION_TIMEOUT_MS',
    },
    maxConcurrent: {
      doc: 'Provisioning requests handled at once (each opens its own MQTT connection upstream); more are answered 5.03 with Max-Age.',
      format: integer(1, 100),
      default: 4,
      env: 'COAP2MQTT_PROVISION_MAX_CONCURRENT',
    },
  },
  firmware: {
    sources: {
      doc: 'Where firmware and software images come from, tried in this order; a source that does not apply is skipped. "dir": firmware.dir; "url": the package\'s fw_url; "thingsboard": ThingsBoard\'s HTTP device API at firmware.thingsboardUrl with the device\'s own access token (registry tokens must then be ThingsBoard tokens). Every image is checked against fw_checksum before it is served.',
      format: 'firmware-sources',
      default: ['dir', 'url', 'thingsboard'] as string[],
      env: 'COAP2MQTT_FIRMWARE_SOURCES',
    },
    dir: {
      doc: 'Local directory of images, looked up as <dir>/<title>/<version>, <dir>/<title>-<version>.bin or <dir>/<title>-<version>; empty: none.',
      format: String,
      default: '',
      env: 'COAP2MQTT_FIRMWARE_DIR',
    },
    thingsboardUrl: {
      doc: 'Base URL of ThingsBoard\'s HTTP API for the "thingsboard" source, e.g. "https://thingsboard.example.com"; empty: that source is skipped.',
      format: 'http-url',
      default: '',
      env: 'COAP2MQTT_FIRMWARE_THINGSBOARD_URL',
    },
    cacheDir: {
      doc: 'Where verified images are kept, fetched once for all devices and across restarts; empty: <state.dir>/firmware. Elsewhere, the systemd unit only lets the service write there with ReadWritePaths= in a drop-in.',
      format: String,
      default: '',
      env: 'COAP2MQTT_FIRMWARE_CACHE_DIR',
    },
    cacheMaxBytes: {
      doc: 'Disk space the image cache may use; the least recently served images are deleted beyond it.',
      format: integer(1024 * 1024, 64 * 1024 * 1024 * 1024),
      default: 256 * 1024 * 1024,
      env: 'COAP2MQTT_FIRMWARE_CACHE_MAX_BYTES',
    },
    maxImageBytes: {
      doc: 'Largest image the gateway fetches and serves; larger packages are refused (5.02) with a log line.',
      format: integer(1024, 1024 * 1024 * 1024),
      default: 16 * 1024 * 1024,
      env: 'COAP2MQTT_FIRMWARE_MAX_IMAGE_BYTES',
    },
    fetchTimeoutMs: {
      doc: 'How long one download of an image from a source may take.',
      format: integer(1000, 3_600_000),
      default: 120_000,
      env: 'COAP2MQTT_FIRMWARE_FETCH_TIMEOUT_MS',
    },
    requireChecksum: {
      doc: 'Refuse to serve an image whose package has no fw_checksum (URL packages may have none). false serves such images unverified, with a warning.',
      format: 'boolean',
      default: true,
      env: 'COAP2MQTT_FIRMWARE_REQUIRE_CHECKSUM',
    },
  },
  devices: {
    doc: 'The devices allowed to send, as [{"name": "Boiler-7", "type": "thermostat", "token": "..."}]. name is the device name in ThingsBoard, type its device profile (used when ThingsBoard creates the device; default "default"), token the access token the device puts in its CoAP path. Over DTLS a device may instead be identified by "psk": {"identity": "...", "key": "..."} ("keyHex" for binary keys) or "cert": {"fingerprint256": "..."} or {"cn": "..."}; it then uses token-less paths such as /api/v1/telemetry.',
    format: DEVICE_LIST,
    default: [] as unknown[],
    env: 'COAP2MQTT_DEVICES',
    // Holds tokens and PSKs: a malformed list is reported without its content.
    sensitive: true,
  },
  devicesFile: {
    doc: 'JSON file with more devices, in the same form as devices; what "coap2mqtt devices add/remove" edits (atomically, keeping its permissions) and the gateway re-reads on SIGHUP (systemctl reload coap2mqtt). A relative path is relative to the configuration file\'s directory. A missing file means no devices from it.',
    format: 'non-empty-string',
    default: 'devices.json',
    env: 'COAP2MQTT_DEVICES_FILE',
  },
  state: {
    dir: {
      doc: 'Directory for the gateway\'s persistent state; created at start if missing and must be writable.',
      format: 'non-empty-string',
      default: 'state',
      env: 'COAP2MQTT_STATE_DIR',
    },
  },
  log: {
    level: {
      doc: 'Log level: fatal, error, warn, info, debug, trace or silent. info logs state changes only; debug logs every request.',
      format: [...LOG_LEVELS],
      default: 'info',
      env: 'COAP2MQTT_LOG_LEVEL',
    },
    components: {
      doc: 'Levels for single components, overriding log.level, e.g. {"dtls": "debug", "upstream": "warn"}. Components: coap, udp, dtls, thingsboard-api, bridge, presence, outbox, upstream, embedded-broker, attribute-cache, limits, http, systemd, reload, provision, firmware, device-http, thethings. Applied again on SIGHUP.',
      format: 'log-levels',
      default: {} as Record<string, string>,
      env: 'COAP2MQTT_LOG_COMPONENTS',
    },
    pretty: {
      doc: 'Human-readable log lines instead of JSON: "auto" when stdout is a terminal (journald and files get JSON), "always" or "never".',
      format: ['auto', 'always', 'never'],
      default: 'auto',
      env: 'COAP2MQTT_LOG_PRETTY',
    },
  },
};

export type ConfigSchema = typeof schema;
