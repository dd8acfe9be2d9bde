// The HTTP listeners: health and metrics for operators, and ThingsBoard's HTTP device API for devices.
import { BOOLEAN, HOST, integer, PORT } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const http = {
  enabled: setting({
    doc: 'Serve /healthz (is the gateway serving devices, is ThingsBoard connected, how far behind is the outbox) and /metrics (Prometheus text format) over HTTP on http.host:http.port.',
    format: BOOLEAN,
    default: true,
    env: 'COAP2MQTT_HTTP_ENABLED',
  }),
  host: setting({
    doc: 'Address of the health and metrics endpoint. Keep it on loopback (127.0.0.1 or ::1) unless a firewall protects the port: it needs no credentials.',
    format: HOST,
    default: '127.0.0.1',
    env: 'COAP2MQTT_HTTP_HOST',
  }),
  port: setting({
    doc: 'TCP port of the health and metrics endpoint (0 picks a free one).',
    format: PORT,
    default: 9464,
    env: 'COAP2MQTT_HTTP_PORT',
  }),
};

export const deviceHttp = {
  enabled: setting({
    doc: 'Serve ThingsBoard\'s HTTP device API (POST /api/v1/{token}/telemetry, attributes, rpc, claim, provision; GET attributes, firmware; long-polls GET /rpc?timeout= and /attributes/updates?timeout=) on deviceHttp.host:deviceHttp.port, for Wi-Fi devices written for ThingsBoard\'s HTTP transport. Plain HTTP: keep it on a trusted network.',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_DEVICE_HTTP_ENABLED',
  }),
  host: setting({
    doc: 'Address of the HTTP device API ("::" also accepts IPv4 where the system allows).',
    format: HOST,
    default: '::',
    env: 'COAP2MQTT_DEVICE_HTTP_HOST',
  }),
  port: setting({
    doc: 'TCP port of the HTTP device API (0 picks a free one).',
    format: PORT,
    default: 8080,
    env: 'COAP2MQTT_DEVICE_HTTP_PORT',
  }),
  maxBodyBytes: setting({
    doc: 'Largest request body accepted; larger ones are answered 413.',
    format: integer(64, 16 * 1024 * 1024),
    default: 65_536,
    env: 'COAP2MQTT_DEVICE_HTTP_MAX_BODY_BYTES',
  }),
  maxConnections: setting({
    doc: 'TCP connections at once (each long-poll holds one). A connection must send its request within 5 s of opening; at the bound a new connection closes the oldest one without a request in progress, and is refused only when every connection holds one.',
    format: integer(1, 100_000),
    default: 1024,
    env: 'COAP2MQTT_DEVICE_HTTP_MAX_CONNECTIONS',
  }),
  maxConnectionsPerAddress: setting({
    doc: 'TCP connections at once from one IP address, so one client cannot take them all; beyond it the address\'s oldest connection without a request in progress is closed, or the new one refused. Behind a reverse proxy every client has the proxy\'s address: raise it to deviceHttp.maxConnections.',
    format: integer(1, 100_000),
    default: 128,
    env: 'COAP2MQTT_DEVICE_HTTP_MAX_CONNECTIONS_PER_ADDRESS',
  }),
};

export type HttpConfig = ConfigOf<typeof http>;
export type DeviceHttpConfig = ConfigOf<typeof deviceHttp>;
