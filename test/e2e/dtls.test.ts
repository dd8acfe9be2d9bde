// CoAP over DTLS end to end: libcoap's coap-client-openssl and coap-client-gnutls as devices (PSK and
// X.509), the gateway, a real mosquitto and the ThingsBoard double.
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import coapPacket from 'coap-packet';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient, spawnCoapClient, type RunningCoapClient } from '../helpers/coap-client.js';
import { DtlsClient } from '../helpers/dtls-client.js';
import { clientHello } from '../helpers/dtls-flooder.js';
import { DEVICES, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { eventually, sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { emptyReply, get, post } from '../helpers/udp-device.js';

const PSK = { identity: 'psk-sensor-1', key: 'correct horse battery staple' };
const HEX_PSK = { identity: 'psk-sensor-hex', keyHex: '00112233445566778899aabbccddeeff' };

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway;
let pki: TestPki;
let dir: string;
const running: RunningCoapClient[] = [];

const coaps = (path: string) => `coaps://127.0.0.1:${gw.gateway.dtlsAddress!.port}${path}`;
const pskArgs = ['-u', PSK.identity, '-k', PSK.key];
const devicesOn = (name: string) =>
  tb.on('v1/gateway/telemetry').filter((m) => Object.hasOwn(m.json as object, name)).length;
const warnings = () => gw.logs.filter((line) => line.level === 'warn' && line.component === 'dtls');

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-dtls-'));
  pki = makeTestPki(dir);
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    dtls: {
      enabled: true,
      port: 0,
      cert: pki.server.certFile,
      key: pki.server.keyFile,
      ca: pki.caFile,
      handshakeTimeoutMs: 2500,
    },
    thethings: { enabled: true, things: [{ thingToken: 'thing-psk', device: 'Psk-Sensor' }] },
    devices: [
      ...DEVICES,
      { name: 'Psk-Sensor', type: 'sensor', token: 'psk-sensor-token', psk: PSK },
      { name: 'Hex-Sensor', psk: HEX_PSK },
      { name: 'Ca-Sensor', cert: { cn: 'sensor-ca-1' } },
      { name: 'Pinned-Sensor', cert: { fingerprint256: pki.pinned.fingerprint256 } },
    ],
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await Promise.all(running.map((client) => client.stop()));
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => tb.clear());

describe('PSK devices', () => {
  it.each(['coap-client-openssl', 'coap-client-gnutls'])('%s posts telemetry on the token-less path under the PSK device', async (binary) => {
    const result = await coapClient(coaps('/api/v1/telemetry'), [...pskArgs, '-m', 'post', '-e', '{"t":1}'], { binary });
    expect(result.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect(Object.keys(telemetry!.json as object)).toEqual(['Psk-Sensor']);
  });

  it('accepts a binary key given as keyHex', async () => {
    // coap-client -k takes text; the hex key's bytes are ASCII-free, so drive it with the binding's client.
    const client = await DtlsClient.connect({
      host: '127.0.0.1',
      port: gw.gateway.dtlsAddress!.port,
      pskIdentity: HEX_PSK.identity,
      pskKey: Buffer.from(HEX_PSK.keyHex, 'hex'),
    });
    try {
      client.send(post('/api/v1/attributes', '{"firmware":"1.2"}', { messageId: 0x4242 }));
      const answer = coapPacket.parse(await client.next());
      expect(answer.code).toBe('2.01');
      const [attributes] = await tb.waitFor('v1/gateway/attributes');
      expect(attributes!.json).toEqual({ 'Hex-Sensor': { firmware: '1.2' } });
    } finally {
      await client.close();
    }
  });

  it('lets the PSK device use its own token path, and refuses another device\'s token with 4.01', async () => {
    const own = await coapClient(coaps('/api/v1/psk-sensor-token/telemetry'), [...pskArgs, '-m', 'post', '-e', '{"t":2}'], { binary: 'coap-client-openssl' });
    expect(own.response?.code).toBe('2.01');
    const other = await coapClient(coaps('/api/v1/boiler-token-7/telemetry'), [...pskArgs, '-m', 'post', '-e', '{"t":3}'], { binary: 'coap-client-openssl' });
    expect(other.response?.code).toBe('4.01');
    expect(other.response?.payload).toMatch(/another device/);
    await sleep(200);
    expect(devicesOn('Boiler-7')).toBe(0);
  });

  it('holds thethings.io paths to the same rule: the session\'s own thing token only', async () => {
    const write = (thingToken: string) =>
      coapClient(coaps(`/v2/things/${thingToken}`), [...pskArgs, '-m', 'post', '-e', '{"values":[{"key":"t","value":4}]}'], { binary: 'coap-client-openssl' });
    expect((await write('thing-psk')).response?.code).toBe('2.01');
    const other = await write('boiler-token-7');
    expect(other.response?.code).toBe('4.01');
    expect(other.response?.payload).toMatch(/another device than this DTLS identity/);
    await sleep(200);
    expect(devicesOn('Boiler-7')).toBe(0);
  });

  it('refuses an unknown identity at the handshake and logs the identity, never a key', async () => {
    const result = await coapClient(coaps('/api/v1/telemetry'), ['-u', 'nobody-7', '-k', 'whatever-key-123', '-m', 'post', '-e', '{"t":1}'], {
      binary: 'coap-client-openssl',
      timeoutSeconds: 3,
    });
    expect(result.response).toBeUndefined();
    const line = await eventually(() => warnings().find((entry) => entry.identity === 'nobody-7'));
    expect(line.msg).toMatch(/PSK identity is not registered/);
    expect(JSON.stringify(gw.logs)).not.toContain('whatever-key-123');
    expect(JSON.stringify(gw.logs)).not.toContain(PSK.key);
  });

  it('fails a wrong key as a handshake timeout, logged with the identity and a hint', async () => {
    const before = gw.gateway.dtls!.server.stats.handshakeTimeouts;
    const result = await coapClient(coaps('/api/v1/telemetry'), ['-u', PSK.identity, '-k', 'not the right key', '-m', 'post', '-e', '{"t":1}'], {
      binary: 'coap-client-openssl',
      timeoutSeconds: 2,
    });
    expect(result.response).toBeUndefined();
    const line = await eventually(() => warnings().find((entry) => /timed out/.test(String(entry.msg)) && entry.identity === PSK.identity), 6000);
    expect(line.msg).toMatch(/different key/);
    expect(gw.gateway.dtls!.server.stats.handshakeTimeouts).toBe(before + 1);
    expect(JSON.stringify(gw.logs)).not.toContain('not the right key');
    await sleep(200);
    expect(devicesOn('Psk-Sensor')).toBe(0);
  });
});

describe('certificate devices', () => {
  it.each(['coap-client-openssl', 'coap-client-gnutls'])('%s with a CA-signed certificate is the device with that CN', async (binary) => {
    const args = ['-c', pki.client.certFile, '-j', pki.client.keyFile, '-C', pki.caFile, '-m', 'post', '-e', '{"t":4}'];
    const result = await coapClient(coaps('/api/v1/telemetry'), args, { binary });
    expect(result.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect(Object.keys(telemetry!.json as object)).toEqual(['Ca-Sensor']);
  });

  it('accepts a self-signed certificate pinned by its fingerprint', async () => {
    const args = ['-c', pki.pinned.certFile, '-j', pki.pinned.keyFile, '-C', pki.caFile, '-m', 'post', '-e', '{"t":5}'];
    const result = await coapClient(coaps('/api/v1/telemetry'), args, { binary: 'coap-client-openssl' });
    expect(result.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect(Object.keys(telemetry!.json as object)).toEqual(['Pinned-Sensor']);
  });

  it('refuses a certificate from an untrusted CA even with a registered CN, and logs its subject', async () => {
    const args = ['-c', pki.rogue.certFile, '-j', pki.rogue.keyFile, '-C', pki.caFile, '-m', 'post', '-e', '{"t":6}'];
    const result = await coapClient(coaps('/api/v1/telemetry'), args, { binary: 'coap-client-openssl', timeoutSeconds: 3 });
    expect(result.response).toBeUndefined();
    expect(result.stdout + result.stderr).toMatch(/unknown ca/i);
    const fingerprint = pki.rogue.fingerprint256.replace(/:/g, '').toLowerCase();
    const line = await eventually(() => warnings().find((entry) => entry.fingerprint256 === fingerprint));
    expect(line.subject).toBe('CN=sensor-ca-1');
    expect(line.msg).toMatch(/client certificate does not verify/);
    await sleep(200);
    expect(devicesOn('Ca-Sensor')).toBe(0);
  });

  it('serves a token path on a session without a client certificate', async () => {
    const result = await coapClient(coaps('/api/v1/boiler-token-7/telemetry'), ['-C', pki.caFile, '-m', 'post', '-e', '{"t":7}'], {
      binary: 'coap-client-openssl',
    });
    expect(result.response?.code).toBe('2.01');
    const without = await coapClient(coaps('/api/v1/telemetry'), ['-C', pki.caFile, '-m', 'post', '-e', '{"t":8}'], { binary: 'coap-client-openssl' });
    expect(without.response?.code).toBe('4.01');
  });
});

describe('the plain-CoAP behaviour over DTLS', () => {
  it('delivers a server-side RPC to an Observe on /rpc and takes the reply on the token-less path', async () => {
    const device = spawnCoapClient(coaps('/api/v1/rpc'), [...pskArgs, '-s', '20', '-B', '20'], { binary: 'coap-client-openssl' });
    running.push(device);
    const [registered] = await device.waitForResponses(1, 5000);
    expect(registered!.code).toBe('2.03');
    await tb.publish('v1/gateway/rpc', { device: 'Psk-Sensor', data: { id: 17, method: 'blink', params: { times: 2 } } });
    const [, notification] = await device.waitForResponses(2, 3000);
    expect(notification!.code).toBe('2.05');
    expect(JSON.parse(notification!.payload!)).toEqual({ id: 17, method: 'blink', params: { times: 2 } });

    const reply = await coapClient(coaps('/api/v1/rpc/17'), [...pskArgs, '-m', 'post', '-e', '{"done":true}'], { binary: 'coap-client-openssl' });
    expect(reply.response?.code).toBe('2.01');
    const upstream = await eventually(() => tb.on('v1/gateway/rpc').find((m) => Object.hasOwn(m.json as object, 'id')));
    expect(upstream.json).toEqual({ device: 'Psk-Sensor', id: 17, data: { done: true } });
  });

  it('keeps an observation when the device handshakes again from the same address with the same PSK', async () => {
    const port = gw.gateway.dtlsAddress!.port;
    const device = { host: '127.0.0.1', port, pskIdentity: PSK.identity, pskKey: Buffer.from(PSK.key) };
    const first = await DtlsClient.connect(device);
    first.send(get('/api/v1/rpc', { observe: 0, token: Buffer.from('ob') }));
    expect(coapPacket.parse(await first.next()).code).toBe('2.03');
    // The device reboots: its DTLS state is gone, its CoAP observation state is kept, its port is the same.
    const localPort = first.localPort;
    await first.close(true);
    const second = await DtlsClient.connect({ ...device, localPort });
    try {
      await tb.publish('v1/gateway/rpc', { device: 'Psk-Sensor', data: { id: 23, method: 'afterReboot', params: {} } });
      const notification = coapPacket.parse(await second.next(3000));
      expect(notification.code).toBe('2.05');
      expect(notification.token).toEqual(Buffer.from('ob'));
      expect(JSON.parse(notification.payload.toString())).toMatchObject({ id: 23, method: 'afterReboot' });
      if (notification.confirmable) second.send(emptyReply('ack', notification.messageId));
    } finally {
      second.send(get('/api/v1/rpc', { observe: 1, token: Buffer.from('ob') }));
      await second.next().catch(() => undefined);
      await second.close();
    }
  });

  it('publishes a retransmitted CON once and answers both copies the same', async () => {
    const client = await DtlsClient.connect({ host: '127.0.0.1', port: gw.gateway.dtlsAddress!.port, pskIdentity: PSK.identity, pskKey: Buffer.from(PSK.key) });
    try {
      const request = post('/api/v1/telemetry', '{"retransmitted":1}', { messageId: 0x7001 });
      client.send(request);
      const first = coapPacket.parse(await client.next());
      client.send(request);
      const second = coapPacket.parse(await client.next());
      expect(first.code).toBe('2.01');
      expect(second.code).toBe('2.01');
      expect(second.messageId).toBe(first.messageId);
      await tb.waitFor('v1/gateway/telemetry');
      await sleep(300);
      expect(devicesOn('Psk-Sensor')).toBe(1);
    } finally {
      await client.close();
    }
  });

  it('keeps no session for a flood of ClientHellos and still serves a real device afterwards', async () => {
    const stats = gw.gateway.dtls!.server.stats;
    const sessionsBefore = stats.sessions;
    const verifyRequestsBefore = stats.helloVerifyRequests;
    // An initial ClientHello (no cookie) from a real socket; the gateway answers each with a 44-byte
    // HelloVerifyRequest and remembers nothing.
    const hello = clientHello();
    const socket = dgram.createSocket('udp4');
    let answers = 0;
    socket.on('message', () => answers++);
    for (let i = 0; i < 500; i++) socket.send(hello, gw.gateway.dtlsAddress!.port, '127.0.0.1');
    await eventually(() => stats.helloVerifyRequests >= verifyRequestsBefore + 400, 5000, 'HelloVerifyRequests');
    socket.close();
    // Earlier tests' sessions may close meanwhile; none may be added.
    expect(stats.sessions).toBeLessThanOrEqual(sessionsBefore);
    expect(answers).toBeGreaterThan(0);
    const result = await coapClient(coaps('/api/v1/telemetry'), [...pskArgs, '-m', 'post', '-e', '{"after":"flood"}'], { binary: 'coap-client-openssl' });
    expect(result.response?.code).toBe('2.01');
  });
});

describe('dtls.requireClientCert', () => {
  it('refuses a certificate handshake without a client certificate, logging why, and still serves PSK devices', async () => {
    const strict = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token' },
      dtls: { enabled: true, port: 0, cert: pki.server.certFile, key: pki.server.keyFile, requireClientCert: true },
      devices: [{ name: 'Strict-Psk', psk: PSK }, ...DEVICES],
    });
    try {
      await strict.upstreamConnected();
      const uri = (path: string) => `coaps://127.0.0.1:${strict.gateway.dtlsAddress!.port}${path}`;
      const anonymous = await coapClient(uri('/api/v1/boiler-token-7/telemetry'), ['-C', pki.caFile, '-m', 'post', '-e', '{"t":9}'], {
        binary: 'coap-client-openssl',
        timeoutSeconds: 3,
      });
      expect(anonymous.response).toBeUndefined();
      const line = await eventually(() => strict.logs.find((entry) => entry.level === 'warn' && /DTLS handshake failed/.test(String(entry.msg))));
      expect(line.reason).toMatch(/did not return a certificate/);
      const psk = await coapClient(uri('/api/v1/telemetry'), [...pskArgs, '-m', 'post', '-e', '{"t":10}'], { binary: 'coap-client-openssl' });
      expect(psk.response?.code).toBe('2.01');
    } finally {
      await strict.stop();
    }
  });
});

describe('start-up', () => {
  it('refuses to start when the DTLS key does not belong to the certificate, naming dtls.key', async () => {
    const start = startTestGateway({
      dtls: { enabled: true, port: 0, cert: pki.server.certFile, key: pki.client.keyFile },
      devices: [{ name: 'A', psk: { identity: 'a', key: 'sixteen-byte-key' } }],
    });
    await expect(start).rejects.toThrow(/^dtls\.key ".*client\.key": key values mismatch/);
  });
});
