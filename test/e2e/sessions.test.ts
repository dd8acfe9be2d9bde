// Sessions that survive (issue 21), with real processes: the built gateway (node dist/cli.js) stopped with
// SIGTERM or SIGKILL and started again on the same state directory, a real mosquitto with the ThingsBoard
// double on it, libcoap's coap-client and bare UDP sockets as devices. A device that observed before a
// restart keeps hearing its RPCs without registering again; one whose address changes is followed there;
// an RPC queued before a crash is delivered after it.
// Needs `npm run build` first (or COAP2MQTT_TEST_CLI pointing at another build).
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import * as coapPacket from 'coap-packet';
import { describe, expect, it } from 'vitest';
import { spawnCoapClient, type DumpedMessage, type RunningCoapClient } from '../helpers/coap-client.js';
import { GatewayProcess, gatewayConfig, writeConfigFile, type Device } from '../helpers/gateway-process.js';
import { eventually, freeUdpPort, sleep } from '../helpers/ports.js';
import { DtlsClient } from '../helpers/dtls-client.js';
import { UdpDevice, emptyReply, get, observeOf, post } from '../helpers/udp-device.js';
import { upstreamRig } from '../helpers/upstream-rig.js';

const DEVICES: Device[] = [
  { name: 'Valve-1', type: 'valve', token: 'valve-token-1' },
  { name: 'Valve-2', type: 'valve', token: 'valve-token-2' },
];
/** Longer than the session store's commits take to come (50 ms after a quiet spell, 1 s apart): it is on disk. */
const WRITTEN_MS = 1300;

const upstream = upstreamRig({ gatewayProcesses: true });

/** A state directory and a config on a fixed CoAP port, so a restarted gateway is where devices left it. */
async function rig(options: { devices?: readonly Device[]; extra?: Record<string, Record<string, unknown>> } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-sessions-'));
  upstream.cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freeUdpPort();
  const stateDir = join(dir, 'state');
  const write = (devices: readonly Device[], extra = options.extra): string =>
    writeConfigFile(dir, gatewayConfig({ port, brokerUrl: upstream.broker.url, stateDir, devices, extra }));
  let configFile = write(options.devices ?? DEVICES);
  return {
    port,
    stateDir,
    uri: (path: string) => `coap://127.0.0.1:${port}${path}`,
    reconfigure(devices: readonly Device[], extra?: Record<string, Record<string, unknown>>) {
      configFile = write(devices, extra);
    },
    async start(): Promise<GatewayProcess> {
      const gateway = GatewayProcess.start(configFile);
      await gateway.ready();
      return gateway;
    },
  };
}

function observer(uri: string): RunningCoapClient {
  const client = spawnCoapClient(uri, ['-s', '120', '-B', '120']);
  upstream.cleanups.push(() => client.stop());
  return client;
}

async function openDevice(port: number): Promise<UdpDevice> {
  const device = await UdpDevice.open(port);
  upstream.cleanups.push(() => device.close());
  return device;
}

const rpc = (device: string, id: number): Promise<void> => upstream.tb.publish('v1/gateway/rpc', { device, data: { id, method: 'open', params: { valve: id } } });

const payloadOf = (message: DumpedMessage | coapPacket.ParsedPacket): unknown =>
  JSON.parse('messageId' in message && Buffer.isBuffer((message as coapPacket.ParsedPacket).payload) ? (message as coapPacket.ParsedPacket).payload.toString() : String((message as DumpedMessage).payload));

/** Waits for the next packet matching `wanted`, ACKing every CON on the way as a device does. */
async function receive(device: UdpDevice, wanted: (packet: coapPacket.ParsedPacket) => boolean, timeoutMs = 10_000): Promise<coapPacket.ParsedPacket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const packet = await device.nextPacket(Math.max(1, deadline - Date.now()));
    if (!packet) throw new Error('no matching packet arrived in time');
    if (packet.confirmable) device.send(emptyReply('ack', packet.messageId));
    if (wanted(packet)) return packet;
  }
}

/** Everything that arrives within `ms`, unanswered (a device that has gone away). */
async function drain(device: UdpDevice, ms: number): Promise<coapPacket.ParsedPacket[]> {
  const seen: coapPacket.ParsedPacket[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    const packet = await device.nextPacket(Math.max(1, deadline - Date.now()));
    if (!packet) return seen;
    seen.push(packet);
  }
}

const sentRequests = (client: RunningCoapClient): DumpedMessage[] => client.messages.filter((m) => m.code === 'GET');

describe('a coap-client observing /rpc across a restart of the gateway', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`receives the next RPC after a ${signal} and a start, without registering again`, async () => {
      const setup = await rig();
      let gateway = await setup.start();
      const client = observer(setup.uri('/api/v1/valve-token-1/rpc'));
      await client.waitForResponses(1);
      await sleep(WRITTEN_MS);
      await gateway.kill(signal);
      upstream.tb.clear();

      gateway = await setup.start();
      const restored = await gateway.waitForLog(/device sessions restored/);
      expect(restored).toMatchObject({ restored: 1, refused: 0 });
      // The confirmation: a CON notification of the current state, acknowledged by the client.
      const [, confirmation] = await client.waitForResponses(2, 5000);
      expect(confirmation).toMatchObject({ type: 'CON', code: '2.03' });
      // The device is connected upstream again: it observes.
      await eventually(() => upstream.tb.on('v1/gateway/connect').find((m) => (m.json as { device: string }).device === 'Valve-1'));

      await rpc('Valve-1', 7);
      const [, , notification] = await client.waitForResponses(3, 5000);
      expect(notification!.code).toBe('2.05');
      expect(payloadOf(notification!)).toEqual({ id: 7, method: 'open', params: { valve: 7 } });
      // Observe numbers went on rising across the restart (RFC 7641 §3.4).
      const numbers = client.responses().map((m) => Number(m.options.get('Observe')![0]));
      expect(numbers[1]).toBeGreaterThan(numbers[0]!);
      expect(numbers[2]).toBeGreaterThan(numbers[1]!);
      expect(numbers[2]! - numbers[0]!).toBeLessThan(2 ** 23);
      expect(sentRequests(client)).toHaveLength(1);
      await gateway.kill('SIGTERM');
    });
  }
});

describe('a relation follows its device to a new address', () => {
  it('moves the /rpc and /attributes relations of a device that posts from a new port, with their tokens; the old port hears nothing more', async () => {
    const setup = await rig();
    const gateway = await setup.start();
    const old = await openDevice(setup.port);
    old.send(get('/api/v1/valve-token-1/rpc', { observe: 0, token: Buffer.from('r1') }));
    const rpcRegistered = await receive(old, () => true);
    expect(rpcRegistered).toMatchObject({ code: '2.03' });
    old.send(get('/api/v1/valve-token-1/attributes', { observe: 0, token: Buffer.from('a1') }));
    await receive(old, (p) => p.code === '2.05');

    // NAT rebinding: the same device, a new source port; the old mapping is dead (nothing answers there).
    const moved = await openDevice(setup.port);
    moved.send(post('/api/v1/valve-token-1/telemetry', '{"flow":3}'));
    await receive(moved, (p) => p.code === '2.01');
    await rpc('Valve-1', 11);
    await upstream.tb.publish('v1/gateway/attributes', { device: 'Valve-1', data: { setpoint: 42 } });

    const rpcNotification = await receive(moved, (p) => p.token.equals(Buffer.from('r1')) && p.code === '2.05');
    expect(payloadOf(rpcNotification)).toEqual({ id: 11, method: 'open', params: { valve: 11 } });
    expect(observeOf(rpcNotification)).toBeGreaterThan(observeOf(rpcRegistered)!);
    const attributeNotification = await receive(moved, (p) => p.token.equals(Buffer.from('a1')) && p.code === '2.05');
    expect(payloadOf(attributeNotification)).toEqual({ setpoint: 42 });

    // The old address was only asked, with a notification of the current state, whether it is still there.
    const atOld = await drain(old, 500);
    for (const packet of atOld) expect(packet.payload.toString()).not.toMatch(/"id":11|setpoint/);
    await gateway.waitForLog(/Observe relation moved/);

    // After the move the old port hears nothing, the new one everything.
    await rpc('Valve-1', 12);
    const next = await receive(moved, (p) => p.token.equals(Buffer.from('r1')) && p.code === '2.05', 3000);
    expect(payloadOf(next)).toMatchObject({ id: 12 });
    expect(await drain(old, 500)).toEqual([]);
    // The device's reply from its new address goes upstream as ThingsBoard expects.
    moved.send(post('/api/v1/valve-token-1/rpc/12', '{"done":true}'));
    await receive(moved, (p) => p.code === '2.01');
    const reply = await eventually(() => upstream.tb.on('v1/gateway/rpc').find((m) => (m.json as { id?: number }).id === 12));
    expect(reply.json).toEqual({ device: 'Valve-1', id: 12, data: { done: true } });
  });

  it('leaves the relation where it is while the old address still acknowledges (a second socket of the same device)', async () => {
    const setup = await rig();
    await setup.start();
    const client = observer(setup.uri('/api/v1/valve-token-2/rpc'));
    await client.waitForResponses(1);
    const sender = await openDevice(setup.port);
    sender.send(post('/api/v1/valve-token-2/telemetry', '{"flow":1}'));
    await receive(sender, (p) => p.code === '2.01');
    // The observer is asked (it acknowledges) and keeps its relation.
    await client.waitForResponses(2, 5000);
    await rpc('Valve-2', 21);
    const responses = await client.waitForResponses(3, 5000);
    expect(payloadOf(responses[2]!)).toMatchObject({ id: 21 });
    expect(await drain(sender, 300)).toEqual([]);
  });

  it('moves nothing for a request with an unknown token from a new address', async () => {
    const setup = await rig();
    await setup.start();
    const device = await openDevice(setup.port);
    device.send(get('/api/v1/valve-token-1/rpc', { observe: 0, token: Buffer.from('r2') }));
    await receive(device, () => true);
    const stranger = await openDevice(setup.port);
    stranger.send(post('/api/v1/not-a-token/telemetry', '{"flow":9}'));
    expect(await receive(stranger, () => true)).toMatchObject({ code: '4.01' });
    stranger.send(post('/api/v1/valve-token-2/telemetry', '{"flow":9}'));
    expect(await receive(stranger, () => true)).toMatchObject({ code: '2.01' });
    await rpc('Valve-1', 31);
    // Straight to the observer, no probe first; nothing to the stranger.
    const first = await device.nextPacket(3000);
    expect(first).toMatchObject({ code: '2.05', token: Buffer.from('r2') });
    expect(payloadOf(first!)).toMatchObject({ id: 31 });
    device.send(emptyReply('ack', first!.messageId));
    expect(await drain(stranger, 300)).toEqual([]);
  });
});

describe('a DTLS device across a restart', () => {
  it('keeps its relation asleep until a new handshake with the same identity, then follows it there', async () => {
    const psk = { identity: 'valve-psk-1', key: 'valve psk key one' };
    const dtlsPort = await freeUdpPort();
    const setup = await rig({ devices: [{ ...DEVICES[0]!, psk } as Device, DEVICES[1]!], extra: { dtls: { enabled: true, port: dtlsPort } } });
    let gateway = await setup.start();
    const device = { host: '127.0.0.1', port: dtlsPort, pskIdentity: psk.identity, pskKey: Buffer.from(psk.key) };
    const before = await DtlsClient.connect(device);
    upstream.cleanups.push(() => before.close(true));
    before.send(get('/api/v1/rpc', { observe: 0, token: Buffer.from('d1') }));
    const registered = coapPacket.parse(await before.next());
    expect(registered.code).toBe('2.03');
    await sleep(WRITTEN_MS);
    await gateway.kill('SIGKILL');
    upstream.tb.clear();

    gateway = await setup.start();
    // Restored, but no session to confirm it on: it waits for the device.
    expect(await gateway.waitForLog(/device sessions restored/)).toMatchObject({ restored: 1 });
    await eventually(() => upstream.tb.on('v1/gateway/connect').find((m) => (m.json as { device: string }).device === 'Valve-1'));
    // The device notices (its next request goes unanswered), handshakes again from a new port, and posts.
    const after = await DtlsClient.connect(device);
    upstream.cleanups.push(() => after.close(true));
    after.send(post('/api/v1/telemetry', '{"flow":7}'));
    const seen: coapPacket.ParsedPacket[] = [];
    const next = async (): Promise<coapPacket.ParsedPacket> => {
      const packet = coapPacket.parse(await after.next(5000));
      if (packet.confirmable) after.send(emptyReply('ack', packet.messageId));
      seen.push(packet);
      return packet;
    };
    while (!seen.some((p) => p.code === '2.01')) await next();
    await rpc('Valve-1', 51);
    let notification: coapPacket.ParsedPacket | undefined;
    for (let i = 0; i < 4 && !notification; i++) {
      const packet = await next();
      if (packet.code === '2.05' && packet.token.equals(Buffer.from('d1'))) notification = packet;
    }
    expect(notification).toBeDefined();
    expect(payloadOf(notification!)).toMatchObject({ id: 51 });
    expect(observeOf(notification!)).toBeGreaterThan(observeOf(registered)!);
    await gateway.kill('SIGTERM');
  });
});

describe('queued RPCs survive a crash', () => {
  it('delivers an RPC queued for a sleeping device before a SIGKILL once it observes after the start, and its reply goes upstream', async () => {
    const setup = await rig();
    let gateway = await setup.start();
    // Known to the gateway and ThingsBoard, not observing: the RPC waits for it.
    const device = await openDevice(setup.port);
    device.send(post('/api/v1/valve-token-2/telemetry', '{"flow":2}'));
    await receive(device, (p) => p.code === '2.01');
    await rpc('Valve-2', 41);
    await gateway.waitForLog(/^RPC queued|delivering/, 3000).catch(() => undefined);
    await sleep(WRITTEN_MS);
    await gateway.kill('SIGKILL');

    gateway = await setup.start();
    await gateway.waitForLog(/device sessions restored/);
    device.send(get('/api/v1/valve-token-2/rpc', { observe: 0, token: Buffer.from('q1') }));
    const notification = await receive(device, (p) => p.code === '2.05');
    expect(payloadOf(notification)).toEqual({ id: 41, method: 'open', params: { valve: 41 } });
    device.send(post('/api/v1/valve-token-2/rpc/41', '{"opened":true}'));
    await receive(device, (p) => p.code === '2.01');
    const reply = await eventually(() => upstream.tb.on('v1/gateway/rpc').find((m) => (m.json as { id?: number }).id === 41));
    expect(reply.json).toEqual({ device: 'Valve-2', id: 41, data: { opened: true } });
  });
});

describe('when relations cannot be kept', () => {
  it('tells each observer 5.03 with Max-Age at a clean stop when sessions.persist is off', async () => {
    const setup = await rig({ extra: { sessions: { persist: false } } });
    const gateway = await setup.start();
    const device = await openDevice(setup.port);
    device.send(get('/api/v1/valve-token-1/rpc', { observe: 0, token: Buffer.from('p1') }));
    await receive(device, () => true);
    const stopped = gateway.kill('SIGTERM');
    const final = await receive(device, (p) => p.token.equals(Buffer.from('p1')));
    expect(final.code).toBe('5.03');
    expect(observeOf(final)).toBeUndefined();
    expect(final.options.find((o) => o.name === 'Max-Age')).toBeDefined();
    expect((await stopped).code).toBe(0);
    expect(readdirSync(setup.stateDir)).not.toContain('sessions.sqlite');
  });

  it('sets a damaged sessions file aside and starts; a file from a newer version is left alone and its observers hear 5.03 at stop', async () => {
    const setup = await rig();
    let gateway = await setup.start();
    await gateway.kill('SIGTERM');
    writeFileSync(join(setup.stateDir, 'sessions.sqlite'), Buffer.alloc(4096, 0x5a));
    rmSync(join(setup.stateDir, 'sessions.sqlite-wal'), { force: true });
    gateway = await setup.start();
    await gateway.waitForLog(/device sessions file could not be read/);
    expect(readdirSync(setup.stateDir).some((name) => name.startsWith('sessions.sqlite.unreadable-'))).toBe(true);
    await gateway.kill('SIGTERM');

    const newer = new Database(join(setup.stateDir, 'sessions.sqlite'));
    newer.pragma('user_version = 99');
    newer.close();
    gateway = await setup.start();
    await gateway.waitForLog(/cannot be kept across restarts/);
    const device = await openDevice(setup.port);
    device.send(get('/api/v1/valve-token-1/rpc', { observe: 0, token: Buffer.from('n1') }));
    await receive(device, () => true);
    const stopped = gateway.kill('SIGTERM');
    expect(await receive(device, (p) => p.token.equals(Buffer.from('n1')))).toMatchObject({ code: '5.03' });
    await stopped;
    const check = new Database(join(setup.stateDir, 'sessions.sqlite'), { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(99);
    check.close();
  });

  it('ends a restored relation whose device got a new token meanwhile, telling its observer 4.01', async () => {
    const setup = await rig();
    let gateway = await setup.start();
    const device = await openDevice(setup.port);
    device.send(get('/api/v1/valve-token-1/rpc', { observe: 0, token: Buffer.from('t1') }));
    await receive(device, () => true);
    await sleep(WRITTEN_MS);
    await gateway.kill('SIGTERM');
    setup.reconfigure([{ ...DEVICES[0]!, token: 'valve-token-1-rotated' }, DEVICES[1]!]);
    gateway = await setup.start();
    expect(await gateway.waitForLog(/device sessions restored/)).toMatchObject({ restored: 0, refused: 1 });
    const refusal = await receive(device, (p) => p.token.equals(Buffer.from('t1')));
    expect(refusal.code).toBe('4.01');
    expect(observeOf(refusal)).toBeUndefined();
    // The old token was not sent by that address: it is not blocked for it.
    device.send(post('/api/v1/valve-token-2/telemetry', '{"flow":5}'));
    expect(await receive(device, () => true)).toMatchObject({ code: '2.01' });
    await gateway.kill('SIGTERM');
  });
});
