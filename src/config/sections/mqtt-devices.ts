// ThingsBoard's MQTT device API for devices (docs/device-api-mqtt.md): the listeners, their bounds, the
// persistent sessions; and the check that keeps them off the embedded broker's port.
import { BOOLEAN, HOST, integer, PORT, TEXT } from '../formats.js';
import { readableFileProblem } from '../paths.js';
import { setting, type ConfigOf } from '../setting.js';
import type { DtlsConfig } from './dtls.js';
import { LOOPBACK, type EmbeddedBrokerConfig, type UpstreamConfig } from './upstream.js';

export const mqttDevices = {
  enabled: setting({
    doc: 'Serve ThingsBoard\'s MQTT device API (username = the device\'s access token; v1/devices/me/telemetry, attributes, attribute requests, RPC both ways, claim, /provision/request, v2/fw and v2/sw chunks) on mqttDevices.host:mqttDevices.port, for devices built with ThingsBoard\'s MQTT SDKs. With the embedded broker (upstream.url empty) move one of the two off 1883, e.g. embeddedBroker.port 1884.',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_MQTT_DEVICES_ENABLED',
  }),
  host: setting({
    doc: 'Address of the MQTT device listeners ("::" also accepts IPv4 where the system allows).',
    format: HOST,
    default: '::',
    env: 'COAP2MQTT_MQTT_DEVICES_HOST',
  }),
  port: setting({
    doc: 'TCP port for plain MQTT (ThingsBoard\'s is 1883; 0 picks a free one). Plain MQTT carries tokens in clear: keep it on a trusted network, or use mqttDevices.tls.',
    format: PORT,
    default: 1883,
    env: 'COAP2MQTT_MQTT_DEVICES_PORT',
  }),
  tls: setting({
    doc: 'Also serve MQTT over TLS (mqtts) on mqttDevices.tlsPort, with mqttDevices.cert and key (or dtls.cert and dtls.key when those are empty). A client certificate names its device as over DTLS (devices[].cert: fingerprint256, or cn signed by mqttDevices.ca / dtls.ca).',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_MQTT_DEVICES_TLS',
  }),
  tlsPort: setting({
    doc: 'TCP port for MQTT over TLS (ThingsBoard\'s is 8883; 0 picks a free one).',
    format: PORT,
    default: 8883,
    env: 'COAP2MQTT_MQTT_DEVICES_TLS_PORT',
  }),
  cert: setting({
    doc: 'PEM file with the certificate (then any intermediates) the TLS listener presents. Empty: dtls.cert.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_MQTT_DEVICES_CERT',
  }),
  key: setting({
    doc: 'PEM file with the private key of mqttDevices.cert. Empty: dtls.key. Keep it readable by the gateway only.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_MQTT_DEVICES_KEY',
  }),
  ca: setting({
    doc: 'PEM file of the CA(s) that sign device certificates listed with cert.cn. Empty: dtls.ca. Certificates pinned with cert.fingerprint256 need no CA.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_MQTT_DEVICES_CA',
  }),
  maxConnections: setting({
    doc: 'MQTT connections at once (an idle one takes about 4-5 KB of memory in the gateway, measured by npm run bench -- --targets mqtt-devices, plus the socket buffers of the kernel). At the bound the oldest connection that has not sent CONNECT yet is closed to make room; if every one is connected, the new one is refused.',
    format: integer(1, 1_000_000),
    default: 10_000,
    env: 'COAP2MQTT_MQTT_DEVICES_MAX_CONNECTIONS',
  }),
  maxPacketBytes: setting({
    doc: 'Largest MQTT packet accepted, header included (ThingsBoard\'s default is 65536). A bigger one closes the connection, as ThingsBoard does.',
    format: integer(1024, 16 * 1024 * 1024),
    default: 65_536,
    env: 'COAP2MQTT_MQTT_DEVICES_MAX_PACKET_BYTES',
  }),
  connectTimeoutMs: setting({
    doc: 'A connection that has not sent CONNECT (or finished its TLS handshake) this long after opening is closed.',
    format: integer(1000, 600_000),
    default: 10_000,
    env: 'COAP2MQTT_MQTT_DEVICES_CONNECT_TIMEOUT_MS',
  }),
  maxSessions: setting({
    doc: 'Persistent sessions (CONNECT with clean session false) remembered for devices that are away: their subscriptions, so the device gets the RPCs queued meanwhile as soon as it reconnects. The least recently used is forgotten first.',
    format: integer(0, 1_000_000),
    default: 10_000,
    env: 'COAP2MQTT_MQTT_DEVICES_MAX_SESSIONS',
  }),
  sessionExpiryMs: setting({
    doc: 'A persistent session whose device has not connected for this long is forgotten (0: only mqttDevices.maxSessions bounds them). Queued RPCs follow sessions.rpcQueueTtlMs whatever this says.',
    format: integer(0, 365 * 86_400_000),
    default: 7 * 86_400_000,
    env: 'COAP2MQTT_MQTT_DEVICES_SESSION_EXPIRY_MS',
  }),
};

export type MqttDevicesConfig = ConfigOf<typeof mqttDevices>;

const ANY_HOST = /^(::|0\.0\.0\.0|::0)$/;

/** Could two TCP listeners on these hosts take the same port? */
function overlap(a: string, b: string): boolean {
  return a === b || ANY_HOST.test(a) || ANY_HOST.test(b) || (LOOPBACK.test(a) && LOOPBACK.test(b));
}

export function checkMqttDevices(
  config: { readonly mqttDevices: MqttDevicesConfig; readonly embeddedBroker: EmbeddedBrokerConfig; readonly upstream: UpstreamConfig; readonly dtls: DtlsConfig },
  errors: string[],
): void {
  const { mqttDevices, embeddedBroker, upstream, dtls } = config;
  if (!mqttDevices.enabled) return;
  const ports = [{ key: 'mqttDevices.port', port: mqttDevices.port }, ...(mqttDevices.tls ? [{ key: 'mqttDevices.tlsPort', port: mqttDevices.tlsPort }] : [])].filter(({ port }) => port !== 0);
  if (mqttDevices.tls && mqttDevices.port !== 0 && mqttDevices.port === mqttDevices.tlsPort) {
    errors.push(`mqttDevices.tlsPort: must differ from mqttDevices.port (both ${mqttDevices.port})`);
  }
  for (const { key, port } of ports) {
    if (upstream.url === '' && port === embeddedBroker.port && overlap(mqttDevices.host, embeddedBroker.host)) {
      errors.push(
        `${key}: ${port} is also the embedded broker's port (embeddedBroker.port), which stands in for ThingsBoard while upstream.url is empty; move one of them, e.g. embeddedBroker.port 1884 (COAP2MQTT_EMBEDDED_BROKER_PORT=1884) so devices keep 1883`,
      );
    }
    const target = upstreamTarget(upstream.url);
    if (target && target.port === port && (LOOPBACK.test(target.host) || target.host === mqttDevices.host) && overlap(mqttDevices.host, '127.0.0.1')) {
      errors.push(`${key}: ${port} is the port of upstream.url on this machine (${target.host}); the gateway would connect to its own device listener. Use another port for one of them`);
    }
  }
  if (!mqttDevices.tls) return;
  const material = { cert: mqttDevices.cert || dtls.cert, key: mqttDevices.key || dtls.key, ca: mqttDevices.ca || dtls.ca };
  if (material.cert === '' || material.key === '') {
    errors.push('mqttDevices.cert / mqttDevices.key: MQTT over TLS needs a certificate and its key (mqttDevices.cert and key, or dtls.cert and key)');
  }
  for (const key of ['cert', 'key', 'ca'] as const) {
    if (material[key] === '') continue;
    const problem = readableFileProblem(material[key]);
    if (problem) errors.push(`mqttDevices.${key}${mqttDevices[key] === '' ? ` (dtls.${key})` : ''}: ${problem}`);
  }
}

/** Host and port of an mqtt:// or mqtts:// URL, or undefined. */
function upstreamTarget(url: string): { host: string; port: number } | undefined {
  if (url === '') return undefined;
  try {
    const parsed = new URL(url);
    const port = parsed.port === '' ? (parsed.protocol === 'mqtts:' ? 8883 : 1883) : Number(parsed.port);
    // A URL writes an IPv6 host in brackets ("[::1]"); the settings do not.
    return { host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'), port };
  } catch {
    return undefined;
  }
}
