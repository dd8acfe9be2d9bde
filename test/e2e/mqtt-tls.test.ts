// MQTT over TLS for devices (mqttDevices.tls; docs/device-api-mqtt.md, "Connecting"): a client certificate
// names its device as over DTLS (a pinned fingerprint, or a CN signed by the configured CA), a certificate
// of no device is refused with CONNACK 5, and without a certificate the username (the token) decides.
// MQTT.js with key/cert/ca is the device; the certificates are made fresh as for the DTLS tests. A reload
// renews the listener's certificate for new handshakes while open connections carry on.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { mqttGatewayRig } from '../helpers/mqtt-gateway-rig.js';
import { MqttJsDevice } from '../helpers/mqtt-js-device.js';
import { makeTestPki, type Identity, type TestPki } from '../helpers/pki.js';

const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-mqtt-tls-'));
// Registered before the rig: after-hooks run as a stack, so this runs once the gateway has stopped.
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let pki: TestPki;
/** Another CA and server certificate: what the gateway's certificate is renewed to. */
let renewed: TestPki;
const rig = mqttGatewayRig(() => {
  pki = makeTestPki(join(dir, 'pki'));
  renewed = makeTestPki(join(dir, 'renewed'));
  // The files the configuration names; the reload test renews them in place, as a technician (or certbot) would.
  copyFileSync(pki.server.certFile, join(dir, 'gateway.pem'));
  copyFileSync(pki.server.keyFile, join(dir, 'gateway.key'));
  return {
    limits: { deviceRequestsPerSecond: 0 },
    mqttDevices: { tls: true, tlsPort: 0, cert: join(dir, 'gateway.pem'), key: join(dir, 'gateway.key'), ca: pki.caFile },
    devices: [
      { name: 'Boiler-7', type: 'thermostat', token: 'boiler-token-7' },
      { name: 'Pinned-Sensor', type: 'sensor', cert: { fingerprint256: pki.pinned.fingerprint256 } },
      { name: 'Ca-Sensor', type: 'sensor', cert: { cn: 'sensor-ca-1' } },
    ],
  };
});
const tlsPort = (): number => rig.gw.gateway.mqttAddresses!.tls!.port;
const devices: MqttJsDevice[] = [];

afterEach(() => {
  for (const device of devices.splice(0)) device.close();
});

/** MQTT.js over TLS, trusting the test CA, with a client certificate when one is given. */
async function open(identity: Identity | undefined, options: { username?: string } = {}): Promise<MqttJsDevice> {
  const device = await MqttJsDevice.open(`mqtts://127.0.0.1:${tlsPort()}`, {
    ca: readFileSync(pki.caFile),
    ...(identity ? { cert: identity.cert, key: identity.key } : {}),
    rejectUnauthorized: true,
    clientId: `tls-${devices.length}`,
    ...options,
  });
  devices.push(device);
  return device;
}

const warnings = (): Array<Record<string, unknown>> => rig.gw.logs.filter((line) => line.level === 'warn');

describe('MQTT over TLS', () => {
  it('listens on its own port next to plain MQTT, and says both in the start line', () => {
    const { plain, tls } = rig.gw.gateway.mqttAddresses!;
    expect(tls!.port).not.toBe(plain.port);
    const started = rig.gw.logs.find((line) => line.msg === 'coap2mqtt started');
    expect(started?.mqttDevices).toBe(`mqtt://127.0.0.1:${plain.port}, mqtts://127.0.0.1:${tls!.port}`);
  });

  it('a device with a pinned self-signed certificate connects without a username; its telemetry arrives under its name', async () => {
    const device = await open(pki.pinned);
    expect(device.connack).toMatchObject({ returnCode: 0, sessionPresent: false });
    await device.publish('v1/devices/me/telemetry', '{"t":5}');
    const [reading] = await rig.tb.waitForReadings('Pinned-Sensor', 1);
    expect(reading).toMatchObject({ values: { t: 5 } });
  });

  it('a device with a certificate signed by mqttDevices.ca is the device of its CN', async () => {
    const device = await open(pki.client);
    expect(device.connack?.returnCode).toBe(0);
    await device.publish('v1/devices/me/attributes', '{"fw":"2.0"}');
    const [message] = await rig.tb.waitFor('v1/gateway/attributes');
    expect(message!.json).toEqual({ 'Ca-Sensor': { fw: '2.0' } });
  });

  it('refuses a certificate of no device with CONNACK 5, even with a registered CN from another CA, and the connection closes', async () => {
    const device = await open(pki.rogue);
    expect(device.connack?.returnCode).toBe(5);
    await expect.poll(() => device.open).toBe(false);
    // The warning names the address and the certificate by its fingerprint's prefix.
    const prefix = pki.rogue.fingerprint256.replace(/:/g, '').toLowerCase().slice(0, 16);
    const warning = warnings().find((line) => /MQTT connection refused/.test(String(line.msg)));
    expect(warning).toMatchObject({ peer: '127.0.0.1', reason: expect.stringContaining(prefix) });
  });

  it('a certificate of no device is refused even with a valid token as the username: the certificate decides', async () => {
    const device = await open(pki.rogue, { username: 'boiler-token-7' });
    expect(device.connack?.returnCode).toBe(5);
  });

  it('serves a token device without a client certificate; the token never appears in the log', async () => {
    const device = await open(undefined, { username: 'boiler-token-7' });
    expect(device.connack?.returnCode).toBe(0);
    await device.publish('v1/devices/me/telemetry', '{"t":7}');
    const [reading] = await rig.tb.waitForReadings('Boiler-7', 1);
    expect(reading).toMatchObject({ values: { t: 7 } });
    const unknown = await open(undefined, { username: 'no-such-token' });
    expect(unknown.connack?.returnCode).toBe(5);
    expect(JSON.stringify(rig.gw.logs)).not.toContain('boiler-token-7');
    expect(JSON.stringify(rig.gw.logs)).not.toContain('no-such-token');
  });

  it('a client that does not trust the gateway\'s certificate never gets to CONNECT', async () => {
    const device = await MqttJsDevice.open(`mqtts://127.0.0.1:${tlsPort()}`, { ca: readFileSync(join(dir, 'pki', 'rogue-ca.pem')), rejectUnauthorized: true, username: 'boiler-token-7' });
    devices.push(device);
    expect(device.connack).toBeUndefined();
    expect(device.open).toBe(false);
  });
});

describe('MQTT over TLS: a reload', () => {
  /** The certificate a new TLS handshake is shown (the client trusts anything: only the fingerprint matters). */
  const presented = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: tlsPort(), rejectUnauthorized: false }, () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.destroy();
      });
      socket.once('error', reject);
    });
  const renew = (identity: Identity, key: Identity): void => {
    copyFileSync(identity.certFile, join(dir, 'gateway.pem'));
    copyFileSync(key.keyFile, join(dir, 'gateway.key'));
  };

  it('renews the certificate for new handshakes, an open connection carries on, and a key that does not match leaves the previous one', async () => {
    const device = await open(undefined, { username: 'boiler-token-7' });
    expect(device.connack?.returnCode).toBe(0);
    expect(await presented()).toBe(pki.server.fingerprint256);

    renew(renewed.server, renewed.server);
    // The same configuration, its files renewed in place: what a SIGHUP reads.
    const report = rig.gw.gateway.reload(rig.gw.config);
    expect(report).toMatchObject({ mqttTlsCredentials: 'reloaded', restartNeeded: [] });
    expect(await presented()).toBe(renewed.server.fingerprint256);
    await device.publish('v1/devices/me/telemetry', '{"afterReload":1}');
    expect((await rig.tb.waitForReadings('Boiler-7', 1))[0]).toMatchObject({ values: { afterReload: 1 } });
    expect(device.open).toBe(true);
    // Nothing changed since: nothing to reload.
    expect(rig.gw.gateway.reload(rig.gw.config).mqttTlsCredentials).toBe('unchanged');

    // The first certificate with the renewed key: OpenSSL refuses the pair, the renewed certificate stays.
    renew(pki.server, renewed.server);
    const refused = rig.gw.gateway.reload(rig.gw.config);
    // Named by the files to look at, not only OpenSSL's words.
    expect(refused.mqttTlsCredentials).toEqual({ error: expect.stringMatching(/^mqttDevices\.cert ".*gateway\.pem" \/ mqttDevices\.key ".*gateway\.key": .*mismatch/) });
    expect(await presented()).toBe(renewed.server.fingerprint256);
    expect(device.open).toBe(true);

    // Back to the first pair, so the handshakes of the tests above would work again.
    renew(pki.server, pki.server);
    expect(rig.gw.gateway.reload(rig.gw.config).mqttTlsCredentials).toBe('reloaded');
    expect(await presented()).toBe(pki.server.fingerprint256);
  });
});
