// A reload over DTLS: a renewed gateway certificate is used for new handshakes while established sessions
// carry on; a removed PSK device loses its session; an unchanged one keeps session and observation; key
// material OpenSSL refuses leaves the previous certificate in use.
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import coapPacket from 'coap-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type GatewayConfig } from '../../src/config/load.js';
import { DtlsClient } from '../helpers/dtls-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { eventually } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { emptyReply, get, post } from '../helpers/udp-device.js';

const KEEP = { name: 'Keep-Sensor', psk: { identity: 'keep-1', key: 'keep-sensor-key-0123' } };
const GONE = { name: 'Gone-Sensor', psk: { identity: 'gone-1', key: 'gone-sensor-key-0123' } };

let dir: string;
let first: TestPki;
let second: TestPki;
let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway;
const clients: DtlsClient[] = [];

/** The configuration the technician would write next, through the real loader. */
function configWith(devices: unknown[], cert: string, key: string): GatewayConfig {
  const file = join(dir, `next-${Date.now()}-${Math.random()}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      coap: { host: '127.0.0.1', port: 0 },
      http: { port: 0 },
      upstream: { url: broker.url, accessToken: 'gw', sessionLimitsTimeoutMs: 0 },
      dtls: { enabled: true, port: 0, cert, key },
      devices,
      state: { dir: gw.gateway.stateDir },
    }),
  );
  const loaded = loadConfig({ file, env: {} });
  if (!loaded.ok) throw new Error(loaded.errors.join('; '));
  return loaded.config;
}

async function connect(device: typeof KEEP): Promise<DtlsClient> {
  const client = await DtlsClient.connect({
    host: '127.0.0.1',
    port: gw.gateway.dtlsAddress!.port,
    pskIdentity: device.psk.identity,
    pskKey: Buffer.from(device.psk.key),
  });
  clients.push(client);
  return client;
}

/** A certificate-suite handshake (the gateway authenticates itself only): which certificate does it show? */
async function serverCertificate(): Promise<string | undefined> {
  const client = await DtlsClient.connect({ host: '127.0.0.1', port: gw.gateway.dtlsAddress!.port, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
  clients.push(client);
  return client.info?.certificate?.fingerprint256;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-reload-dtls-'));
  first = makeTestPki(join(dir, 'first'));
  second = makeTestPki(join(dir, 'second'));
  // The files the configuration names; the test renews them in place, as a technician (or certbot) would.
  copyFileSync(first.server.certFile, join(dir, 'gateway.pem'));
  copyFileSync(first.server.keyFile, join(dir, 'gateway.key'));
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gw' },
    dtls: { enabled: true, port: 0, cert: join(dir, 'gateway.pem'), key: join(dir, 'gateway.key') },
    devices: [KEEP, GONE],
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  for (const client of clients) await client.close(true);
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('SIGHUP reload with DTLS', () => {
  it('renews the certificate for new handshakes, ends the removed device, and leaves the unchanged one be', async () => {
    const keep = await connect(KEEP);
    const gone = await connect(GONE);
    keep.send(get('/api/v1/rpc', { observe: 0, token: Buffer.from('ob') }));
    expect(coapPacket.parse(await keep.next()).code).toBe('2.03');
    gone.send(post('/api/v1/telemetry', '{"t":1}', { messageId: 7 }));
    expect(coapPacket.parse(await gone.next()).code).toBe('2.01');

    copyFileSync(second.server.certFile, join(dir, 'gateway.pem'));
    copyFileSync(second.server.keyFile, join(dir, 'gateway.key'));
    const report = gw.gateway.reload(configWith([KEEP], join(dir, 'gateway.pem'), join(dir, 'gateway.key')));
    expect(report).toEqual({
      devices: { added: [], removed: ['Gone-Sensor'], changed: [] },
      dtlsSessionsClosed: 1,
      dtlsCredentials: 'reloaded',
      mqttTlsCredentials: 'off',
      restartNeeded: [],
    });

    // The removed device's session ended with close_notify; the kept one still gets its RPCs.
    await eventually(() => gone.closedBy === 'peer', 3000, 'close_notify to the removed device');
    await tb.publish('v1/gateway/rpc', { device: 'Keep-Sensor', data: { id: 3, method: 'stillThere', params: {} } });
    const notification = coapPacket.parse(await keep.next(3000));
    expect(JSON.parse(notification.payload.toString())).toMatchObject({ id: 3, method: 'stillThere' });
    if (notification.confirmable) keep.send(emptyReply('ack', notification.messageId));

    // New handshakes see the renewed certificate; the removed identity is refused.
    expect(await serverCertificate()).toBe(second.server.fingerprint256.replace(/:/g, '').toLowerCase());
    await connect(KEEP);
    await expect(connect(GONE)).rejects.toThrow();
  }, 20_000);

  it('keeps the previous certificate when the new key does not match it', async () => {
    copyFileSync(first.server.certFile, join(dir, 'gateway.pem'));
    // gateway.key still holds the second key: a mismatched pair.
    const report = gw.gateway.reload(configWith([KEEP], join(dir, 'gateway.pem'), join(dir, 'gateway.key')));
    expect(report.dtlsCredentials).toEqual({ error: expect.stringMatching(/^dtls\.key ".*gateway\.key": .*mismatch/) });
    expect(await serverCertificate()).toBe(second.server.fingerprint256.replace(/:/g, '').toLowerCase());
  });
});
