// The connection to ThingsBoard's MQTT broker, or the embedded broker that stands in for it, and the
// checks between their settings.
import { redactUrl } from '../../log.js';
import { HOST, integer, MQTT_URL, PORT, TEXT } from '../formats.js';
import { readableFileProblem } from '../paths.js';
import { setting, type ConfigOf } from '../setting.js';

export const upstream = {
  url: setting({
    doc: 'ThingsBoard MQTT endpoint, e.g. "mqtt://thingsboard.local:1883" or "mqtts://thingsboard.cloud:8883". Empty: start the embedded broker on loopback (see embeddedBroker) and keep all data on this machine.',
    format: MQTT_URL,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_URL',
  }),
  accessToken: setting({
    doc: 'Access token of the gateway device in ThingsBoard (created with "Is gateway" ticked); sent as the MQTT username.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_ACCESS_TOKEN',
    sensitive: true,
  }),
  username: setting({
    doc: 'MQTT username, for gateways using ThingsBoard "MQTT Basic" credentials instead of an access token.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_USERNAME',
  }),
  password: setting({
    doc: 'MQTT password for "MQTT Basic" credentials.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_PASSWORD',
    sensitive: true,
  }),
  clientId: setting({
    doc: 'MQTT client id. Empty: "coap2mqtt-<hostname>-<random>", generated once and kept in state.dir, so two boxes with the same host name never evict each other from the broker. ThingsBoard "MQTT Basic" credentials may require a specific one.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_CLIENT_ID',
  }),
  ca: setting({
    doc: 'PEM file of the CA that signed the broker certificate (mqtts only). Empty: the system trust store.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_CA',
  }),
  cert: setting({
    doc: 'PEM client certificate, for ThingsBoard "X.509" gateway credentials (mqtts only).',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_CERT',
  }),
  key: setting({
    doc: 'PEM private key of upstream.cert.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_UPSTREAM_KEY',
  }),
  keepaliveSeconds: setting({
    doc: 'MQTT keep-alive interval; a dead connection is noticed after about 1.5 times this.',
    format: integer(5, 3600),
    default: 60,
    env: 'COAP2MQTT_UPSTREAM_KEEPALIVE_SECONDS',
  }),
  connectTimeoutMs: setting({
    doc: 'How long one connection attempt may take before it is abandoned and retried.',
    format: integer(1000, 300_000),
    default: 10_000,
    env: 'COAP2MQTT_UPSTREAM_CONNECT_TIMEOUT_MS',
  }),
  reconnectMinMs: setting({
    doc: 'First delay before reconnecting after the connection drops; doubles (with jitter) up to upstream.reconnectMaxMs.',
    format: integer(100, 600_000),
    default: 1000,
    env: 'COAP2MQTT_UPSTREAM_RECONNECT_MIN_MS',
  }),
  reconnectMaxMs: setting({
    doc: 'Longest delay between reconnection attempts.',
    format: integer(100, 3_600_000),
    default: 60_000,
    env: 'COAP2MQTT_UPSTREAM_RECONNECT_MAX_MS',
  }),
  publishTimeoutMs: setting({
    doc: 'How long a reading may wait for the broker\'s PUBACK before the device is told 5.03 and may retry.',
    format: integer(100, 600_000),
    default: 10_000,
    env: 'COAP2MQTT_UPSTREAM_PUBLISH_TIMEOUT_MS',
  }),
  maxInflight: setting({
    doc: 'Publishes awaiting PUBACK at once. ThingsBoard allows 100 by default; stay below 80% of it.',
    format: integer(1, 65_535),
    default: 80,
    env: 'COAP2MQTT_UPSTREAM_MAX_INFLIGHT',
  }),
  maxQueuedPublishes: setting({
    doc: 'Publishes that may wait for a free in-flight slot; beyond it devices are told 5.03.',
    format: integer(0, 1_000_000),
    default: 10_000,
    env: 'COAP2MQTT_UPSTREAM_MAX_QUEUED_PUBLISHES',
  }),
  sessionLimitsTimeoutMs: setting({
    doc: 'After each connection the gateway asks ThingsBoard for its session limits (getSessionLimits) and keeps its publishes under 80% of them; the outbox waits up to this long for the answer before sending. 0: do not ask, use maxInflight and maxMessageBytes as configured and no rate limit.',
    format: integer(0, 600_000),
    default: 5_000,
    env: 'COAP2MQTT_UPSTREAM_SESSION_LIMITS_TIMEOUT_MS',
  }),
  maxMessageBytes: setting({
    doc: 'Largest MQTT payload the broker accepts (ThingsBoard: 65536). Readings are split across messages below it.',
    format: integer(1024, 268_435_455),
    default: 65_536,
    env: 'COAP2MQTT_UPSTREAM_MAX_MESSAGE_BYTES',
  }),
  maxDownlinkBytes: setting({
    doc: 'Largest message accepted from ThingsBoard (shared-attribute pushes, RPCs, attribute answers). A larger one is refused unread and logged; ThingsBoard\'s RPC call then times out. 65536 matches ThingsBoard\'s own default payload limit; a constrained device could not take much more in any case.',
    format: integer(1024, 16_777_216),
    default: 65_536,
    env: 'COAP2MQTT_UPSTREAM_MAX_DOWNLINK_BYTES',
  }),
  maxDownlinkDepth: setting({
    doc: 'Deepest nesting of arrays and objects accepted in a message from ThingsBoard (the whole message counts: an RPC\'s params start at level 3). A deeper one is refused and logged, and an RPC is answered {"error": ...} at once. Deep JSON is almost always a rule chain gone wrong, and device firmware parsers seldom handle more than a few levels.',
    format: integer(4, 1000),
    default: 32,
    env: 'COAP2MQTT_UPSTREAM_MAX_DOWNLINK_DEPTH',
  }),
};

export const embeddedBroker = {
  host: setting({
    doc: 'Loopback address of the embedded MQTT broker, used only while upstream.url is empty.',
    format: HOST,
    default: '127.0.0.1',
    env: 'COAP2MQTT_EMBEDDED_BROKER_HOST',
  }),
  port: setting({
    doc: 'TCP port of the embedded MQTT broker (0 picks a free one). Watch what would go to ThingsBoard with: mosquitto_sub -p 1883 -t "v1/gateway/#" -v',
    format: PORT,
    default: 1883,
    env: 'COAP2MQTT_EMBEDDED_BROKER_PORT',
  }),
};

export type UpstreamConfig = ConfigOf<typeof upstream>;
export type EmbeddedBrokerConfig = ConfigOf<typeof embeddedBroker>;

/** A loopback host as configured. */
export const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export function checkUpstream(config: { readonly upstream: UpstreamConfig; readonly embeddedBroker: EmbeddedBrokerConfig }, errors: string[], warnings: string[]): void {
  const { upstream, embeddedBroker } = config;
  if (upstream.url === '') {
    if (!LOOPBACK.test(embeddedBroker.host)) {
      errors.push(
        `embeddedBroker.host: must be a loopback address such as 127.0.0.1 or ::1, because the embedded broker has no authentication (got "${embeddedBroker.host}")`,
      );
    }
  } else {
    const tls = upstream.url.startsWith('mqtts:');
    if (upstream.accessToken !== '' && upstream.username !== '') {
      errors.push('upstream.username: set either upstream.accessToken (access-token credentials) or upstream.username/password (MQTT Basic), not both');
    }
    if (upstream.accessToken === '' && upstream.username === '' && upstream.cert === '') {
      warnings.push('upstream.accessToken: empty, and no MQTT Basic or X.509 credentials either; ThingsBoard will refuse the connection');
    }
    for (const key of ['ca', 'cert', 'key'] as const) {
      const path = upstream[key];
      if (path === '') continue;
      if (!tls) errors.push(`upstream.${key}: only used with mqtts://, but upstream.url is "${redactUrl(upstream.url)}"`);
      const problem = readableFileProblem(path);
      if (problem) errors.push(`upstream.${key}: ${problem}`);
    }
    if ((upstream.cert === '') !== (upstream.key === '')) {
      errors.push('upstream.cert / upstream.key: an X.509 client certificate needs both the certificate and its private key');
    }
  }
  if (upstream.reconnectMinMs > upstream.reconnectMaxMs) {
    errors.push(
      `upstream.reconnectMinMs: must not exceed upstream.reconnectMaxMs (got ${upstream.reconnectMinMs} > ${upstream.reconnectMaxMs})`,
    );
  }
}
