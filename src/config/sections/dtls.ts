// CoAP over DTLS: the listener, its credentials, cipher policy and handshake bounds; and the checks
// that need the devices (who can authenticate with what).
import { BOOLEAN, integer, NON_EMPTY_STRING, PORT, TEXT } from '../formats.js';
import { readableFileProblem } from '../paths.js';
import { setting, type ConfigOf } from '../setting.js';
import type { CoapConfig } from './coap.js';
import { DEMO_DEVICE, type DeviceEntry } from './devices.js';

export const dtls = {
  enabled: setting({
    doc: 'Also accept CoAP over DTLS 1.2 (coaps://) on dtls.port, on the same address as coap.host. Devices authenticate with a PSK (devices[].psk) or a client certificate (devices[].cert), or send a token in the path over a server-authenticated session.',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_DTLS_ENABLED',
  }),
  port: setting({
    doc: 'UDP port for CoAP over DTLS (5684 is the standard coaps port).',
    format: PORT,
    default: 5684,
    env: 'COAP2MQTT_DTLS_PORT',
  }),
  cert: setting({
    doc: 'PEM file with the gateway\'s certificate (then any intermediates) for certificate suites. Empty: PSK only.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_DTLS_CERT',
  }),
  key: setting({
    doc: 'PEM file with the private key of dtls.cert. Keep it readable by the gateway only.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_DTLS_KEY',
  }),
  ca: setting({
    doc: 'PEM file of the CA(s) that sign device certificates; devices listed with cert.cn must chain to it. Devices pinned with cert.fingerprint256 need no CA.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_DTLS_CA',
  }),
  requireClientCert: setting({
    doc: 'Refuse certificate-suite handshakes from devices without a client certificate (PSK devices are unaffected). false also lets devices use a token path over a server-authenticated session.',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_DTLS_REQUIRE_CLIENT_CERT',
  }),
  ciphers: setting({
    doc: 'OpenSSL cipher list in the gateway\'s order of preference. The default puts RFC 7252\'s mandatory CCM_8 suites first (constrained devices implement little else), then GCM and ChaCha20 for capable clients.',
    format: NON_EMPTY_STRING,
    default:
      'PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8:PSK-AES128-CCM:ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:PSK-AES128-CBC-SHA256',
    env: 'COAP2MQTT_DTLS_CIPHERS',
  }),
  securityLevel: setting({
    doc: 'OpenSSL security level (0-5) for keys and algorithms. 2 refuses RSA keys under 2048 bits and SHA-1 signatures; the CCM_8 suites pass at 0-2.',
    format: integer(0, 5),
    default: 2,
    env: 'COAP2MQTT_DTLS_SECURITY_LEVEL',
  }),
  mtu: setting({
    doc: 'Largest DTLS datagram the gateway sends, in bytes. 1232 fits any IPv6 path; handshake flights are fragmented to it, and Block2 sizes are chosen so CoAP messages fit it.',
    format: integer(256, 9000),
    default: 1232,
    env: 'COAP2MQTT_DTLS_MTU',
  }),
  handshakeTimeoutMs: setting({
    doc: 'A handshake not finished within this time is abandoned (a wrong PSK shows up this way: DTLS sends no alert for it).',
    format: integer(1000, 600_000),
    default: 30_000,
    env: 'COAP2MQTT_DTLS_HANDSHAKE_TIMEOUT_MS',
  }),
  idleTimeoutMs: setting({
    doc: 'A session without traffic for this long is closed (close_notify); the device handshakes again when it next sends. Keep it above coap.observeCheckIntervalMs so observing devices keep theirs. 0: never.',
    format: integer(0, 86_400_000),
    default: 600_000,
    env: 'COAP2MQTT_DTLS_IDLE_TIMEOUT_MS',
  }),
  maxSessions: setting({
    doc: 'Most established DTLS sessions at once (about 50-65 KB of memory each; handshakes still under way are bounded apart, by dtls.maxHandshakes). When full, the session idle longest (at least a minute) makes room for a new one; otherwise new handshakes are refused.',
    format: integer(1, 1_000_000),
    default: 10_000,
    env: 'COAP2MQTT_DTLS_MAX_SESSIONS',
  }),
  // The defaults, from the figures: a half-open handshake holds ~55 KB (10,000 of them took RSS from 78 to
  // 623 MB). On loopback or a LAN a PSK handshake lasts ~1 ms after the cookie, so hundreds per second need
  // only a few places; over a 6LoWPAN mesh it lasts up to 1-3 s (a round trip, one retransmission), so 512
  // places let ~170-500 slow devices a second start: a 10,000-device fleet (dtls.maxSessions) reconnecting
  // within a minute. 512 x 55 KB = 28 MB at most. Per address, 64: a mesh behind one border router carries a
  // few dozen handshakes a second (shared 250 kbit/s radio, ~6 fragmented datagrams each) lasting ~1-2 s;
  // and one host alone takes at most 1/8 of the pool.
  maxHandshakes: setting({
    doc: 'Most DTLS handshakes in progress at once: a device has echoed its cookie (proving its address) and not finished yet; about 55 KB of memory each. They are kept apart from dtls.maxSessions, so they never push out or keep out established sessions. When full, the handshake silent longest gives way to a new one; above half full, handshakes silent for 3 s are dropped. The default holds a fleet of thousands reconnecting over slow links within a minute; raise it only if the log says handshakes pile up while devices are reconnecting, not under a flood.',
    format: integer(16, 100_000),
    default: 512,
    env: 'COAP2MQTT_DTLS_MAX_HANDSHAKES',
  }),
  maxHandshakesPerAddress: setting({
    doc: 'Most DTLS handshakes in progress at once from one IPv4 address or IPv6 /64, so one host cannot take all of dtls.maxHandshakes. Beyond it a new handshake from that address waits (its device sends its ClientHello again) until one of them finishes or is silent for 3 s. Raise it when many devices share one address and reconnect together: behind a NAT, a mobile carrier\'s NAT, or a 6LoWPAN/Thread border router (one /64).',
    format: integer(1, 100_000),
    default: 64,
    env: 'COAP2MQTT_DTLS_MAX_HANDSHAKES_PER_ADDRESS',
  }),
  sessionTickets: setting({
    doc: 'Issue RFC 5077 session tickets so devices can resume without a full handshake. Off by default: a ticket costs a constrained device ~0.7 KB of memory, and a resumed session is not re-checked against its PSK or certificate (removing a device from the list still refuses its requests).',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_DTLS_SESSION_TICKETS',
  }),
};

export type DtlsConfig = ConfigOf<typeof dtls>;

export function checkDtls(config: { readonly dtls: DtlsConfig; readonly coap: CoapConfig }, devices: readonly DeviceEntry[], errors: string[], warnings: string[]): void {
  const { dtls, coap } = config;
  const pskDevices = devices.filter((device) => device.psk);
  const certDevices = devices.map((device, index) => ({ device, index })).filter(({ device }) => device.cert);
  if (!dtls.enabled) {
    // The demo device has a PSK for the README's DTLS example; that is not worth a warning.
    if (pskDevices.length + certDevices.length > 0 && devices[0] !== DEMO_DEVICE) {
      warnings.push('devices: some devices have a psk or cert, which are used only over DTLS, but dtls.enabled is false');
    }
    return;
  }
  if (dtls.port !== 0 && dtls.port === coap.port) errors.push(`dtls.port: must differ from coap.port (both are ${dtls.port})`);
  if (dtls.maxHandshakesPerAddress > dtls.maxHandshakes) {
    warnings.push(
      `dtls.maxHandshakesPerAddress (${dtls.maxHandshakesPerAddress}) is above dtls.maxHandshakes (${dtls.maxHandshakes}): one address can take every handshake place; keep it well below`,
    );
  }
  for (const key of ['cert', 'key', 'ca'] as const) {
    const path = dtls[key];
    if (path === '') continue;
    const problem = readableFileProblem(path);
    if (problem) errors.push(`dtls.${key}: ${problem}`);
  }
  if ((dtls.cert === '') !== (dtls.key === '')) {
    errors.push('dtls.cert / dtls.key: the gateway\'s certificate needs both the certificate file and its private key file');
  }
  if (dtls.cert === '') {
    if (certDevices.length > 0) {
      errors.push(`device "${certDevices[0]!.device.name}" cert: certificate devices need the gateway's own certificate; set dtls.cert and dtls.key`);
    }
    if (dtls.requireClientCert) errors.push('dtls.requireClientCert: needs dtls.cert and dtls.key (client certificates are only asked for in certificate suites)');
    if (pskDevices.length === 0 && certDevices.length === 0) {
      errors.push('dtls.enabled: nothing to authenticate with; give devices a psk, or set dtls.cert and dtls.key');
    }
  }
  const byCn = certDevices.find(({ device }) => device.cert && 'cn' in device.cert);
  if (byCn && dtls.ca === '') {
    errors.push(
      `device "${byCn.device.name}" cert.cn: a certificate is matched by its CN only when it chains to dtls.ca; set dtls.ca, or pin the certificate with cert.fingerprint256`,
    );
  }
  if (dtls.idleTimeoutMs > 0 && dtls.idleTimeoutMs <= coap.observeCheckIntervalMs) {
    warnings.push(
      `dtls.idleTimeoutMs: ${dtls.idleTimeoutMs} is not above coap.observeCheckIntervalMs (${coap.observeCheckIntervalMs}), so sessions of observing devices that otherwise stay quiet will be closed between checks`,
    );
  }
}
