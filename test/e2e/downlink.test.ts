// ThingsBoard → gateway → device: attribute reads, Observe on /attributes and /rpc, RPC replies,
// client-side RPC and claims, through a real mosquitto with libcoap's coap-client (and a bare UDP socket
// where exact datagrams matter) as devices, and a ThingsBoard double on the broker.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient, spawnCoapClient, type RunningCoapClient } from '../helpers/coap-client.js';
import { DEVICES, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, emptyReply, get, observeOf } from '../helpers/udp-device.js';

let broker: Mosquitto;
let gw: TestGateway;
let tb: ThingsBoardDouble;
const stateDir = mkdtempSync(join(tmpdir(), 'coap2mqtt-downlink-state-'));
const running: RunningCoapClient[] = [];

const SESSIONS = { attributeRequestTimeoutMs: 800, clientRpcTimeoutMs: 800, rpcQueueTtlMs: 60_000, idleTimeoutMs: 0 };

async function startGateway(): Promise<TestGateway> {
  const started = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token', reconnectMinMs: 200, reconnectMaxMs: 500 },
    sessions: SESSIONS,
    state: { dir: stateDir },
    // Valve-5: a device whose attributes the gateway has never seen pushed nor read.
    devices: [...DEVICES, { name: 'Valve-5', type: 'valve', token: 'valve-token-5' }],
  });
  await started.upstreamConnected();
  return started;
}

function observe(path: string, args: string[] = []): RunningCoapClient {
  const client = spawnCoapClient(gw.uri(path), ['-s', '30', ...args]);
  running.push(client);
  return client;
}

/** Waits until the gateway has subscribed the device's observation upstream (its connect went out). */
async function observing(client: RunningCoapClient, firstCode: string): Promise<void> {
  const [first] = await client.waitForResponses(1);
  expect(first!.code).toBe(firstCode);
  expect(first!.options.get('Observe')).toBeDefined();
}

/** ThingsBoard's attributes, per device (the double's store: tests may add to it). */
const attributes: Record<string, { client?: Record<string, unknown>; shared?: Record<string, unknown> }> = {
  'Boiler-7': { client: { serial: 'SN-001', fw: '1.2' }, shared: { setpoint: 21.5, mode: 'eco' } },
};

const payloadOf = (message: { payload: string | undefined }): unknown => JSON.parse(message.payload ?? 'null');

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  tb.answerAttributeRequests(attributes);
  tb.answerOwnRpcs((request) => ({ time: 1_700_000_000_000, asked: request }));
  gw = await startGateway();
});

afterAll(async () => {
  await Promise.all(running.map((client) => client.stop()));
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

beforeEach(async () => {
  await Promise.all(running.splice(0).map((client) => client.stop()));
  tb.silent = false;
  tb.clear();
});

describe('server-side RPC over Observe', () => {
  it('delivers an RPC to an observing coap-client within a second, and the reply goes upstream', async () => {
    const device = observe('/api/v1/boiler-token-7/rpc');
    await observing(device, '2.03');
    const published = Date.now();
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 5, method: 'setGpio', params: { pin: 1, value: 1 } } });
    const [, notification] = await device.waitForResponses(2, 2000);
    expect(Date.now() - published).toBeLessThan(1000);
    expect(notification!.code).toBe('2.05');
    expect(payloadOf(notification!)).toEqual({ id: 5, method: 'setGpio', params: { pin: 1, value: 1 } });
    const [first, second] = device.responses().map((m) => Number(m.options.get('Observe')![0]));
    expect(second).toBeGreaterThan(first!);

    const reply = await coapClient(gw.uri('/api/v1/boiler-token-7/rpc/5'), ['-m', 'post', '-e', '{"pin":1,"value":1}']);
    expect(reply.response?.code).toBe('2.01');
    // The double hears its own RPC request on the same topic; the reply is the one with a top-level id.
    const upstream = await eventually(() => tb.on('v1/gateway/rpc').find((m) => Object.hasOwn(m.json as object, 'id')));
    expect(upstream.json).toEqual({ device: 'Boiler-7', id: 5, data: { pin: 1, value: 1 } });
  });

  it('numbers notifications in order and sends them CON to a CON registration', async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 0, token: Buffer.from('rp') }));
      const registered = await device.nextPacket();
      expect(registered).toMatchObject({ ack: true, code: '2.03' });
      expect(observeOf(registered!)).toBe(0);
      for (const id of [1, 2, 3]) await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id, method: 'tick', params: {} } });
      const seen: number[] = [];
      for (let i = 0; i < 3; i++) {
        const notification = await device.nextPacket();
        expect(notification).toMatchObject({ confirmable: true, code: '2.05', token: Buffer.from('rp') });
        seen.push(observeOf(notification!)!);
        expect((JSON.parse(notification!.payload.toString()) as { id: number }).id).toBe(i + 1);
        device.send(emptyReply('ack', notification!.messageId));
      }
      expect(seen).toEqual([1, 2, 3]);
    } finally {
      await sleep(50);
      device.close();
    }
  });

  it('delivers a burst of RPCs to several devices in order, each device its own in sequence', async () => {
    // Published without waiting, they reach the gateway in a few large TCP reads, handed on in slices.
    const devices = [
      { name: 'Pump-2', token: 'pump-token-2' },
      { name: 'Boiler-7', token: 'boiler-token-7' },
    ];
    const sockets = await Promise.all(devices.map(() => UdpDevice.open(gw.port)));
    try {
      for (const [i, { token }] of devices.entries()) {
        sockets[i]!.send(get(`/api/v1/${token}/rpc`, { observe: 0, token: Buffer.from('bu') }));
        expect(await sockets[i]!.nextPacket()).toMatchObject({ code: '2.03' });
      }
      const perDevice = 60; // under the 100 notifications a relation may have waiting
      await Promise.all(
        Array.from({ length: perDevice * devices.length }, (_, n) =>
          tb.publish('v1/gateway/rpc', { device: devices[n % devices.length]!.name, data: { id: 1000 + n, method: 'burst', params: {} } }),
        ),
      );
      const received = await Promise.all(
        sockets.map(async (socket) => {
          const ids: number[] = [];
          while (ids.length < perDevice) {
            const notification = await socket.nextPacket(3000);
            if (!notification) break;
            if (notification.confirmable) socket.send(emptyReply('ack', notification.messageId));
            ids.push((JSON.parse(notification.payload.toString()) as { id: number }).id);
          }
          return ids;
        }),
      );
      for (const [i, ids] of received.entries()) {
        expect(ids).toEqual(Array.from({ length: perDevice }, (_, k) => 1000 + k * devices.length + i));
      }
    } finally {
      await sleep(50);
      for (const socket of sockets) socket.close();
    }
  });

  it('keeps RPCs for a sleeping device and delivers them, in order, when it registers', async () => {
    await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 41, method: 'first', params: {} } });
    await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 42, method: 'second', params: { x: 1 } } });
    await sleep(200);
    const device = observe('/api/v1/pump-token-2/rpc');
    const responses = await device.waitForResponses(3);
    expect(responses[0]!.code).toBe('2.03');
    expect(responses.slice(1).map(payloadOf)).toEqual([
      { id: 41, method: 'first', params: {} },
      { id: 42, method: 'second', params: { x: 1 } },
    ]);
  });

  it('ends the older observation with 2.02 when the device registers again from elsewhere', async () => {
    const first = observe('/api/v1/boiler-token-7/rpc');
    await observing(first, '2.03');
    const second = observe('/api/v1/boiler-token-7/rpc');
    await observing(second, '2.03');
    const [, last] = await first.waitForResponses(2);
    expect(last!.code).toBe('2.02');
    expect(last!.options.get('Observe')).toBeUndefined();

    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 7, method: 'who', params: {} } });
    const [, notification] = await second.waitForResponses(2);
    expect(payloadOf(notification!)).toMatchObject({ id: 7 });
    expect(first.responses()).toHaveLength(2);
  });

  it('ends an observation on RST and queues what came after it for the next registration', async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 0, token: Buffer.from('r1') }));
      expect(await device.nextPacket()).toMatchObject({ code: '2.03' });
      await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 61, method: 'a', params: {} } });
      const notification = await device.nextPacket();
      device.send(emptyReply('reset', notification!.messageId));
      await sleep(100);
      await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 62, method: 'b', params: {} } });
      // Nothing more to this relation; the RPC waits for the next registration.
      expect(await device.next(500)).toBeUndefined();
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 0, token: Buffer.from('r2') }));
      expect(await device.nextPacket()).toMatchObject({ code: '2.03', token: Buffer.from('r2') });
      // The RST-ed RPC was never acknowledged, so it is delivered again, before the later one (one CON
      // notification in flight at a time: each waits for the previous ACK).
      const ids: number[] = [];
      for (let i = 0; i < 2; i++) {
        const packet = await device.nextPacket();
        ids.push((JSON.parse(packet!.payload.toString()) as { id: number }).id);
        device.send(emptyReply('ack', packet!.messageId));
      }
      expect(ids).toEqual([61, 62]);
    } finally {
      await sleep(50);
      device.close();
    }
  });

  it('deregisters on GET with Observe 1 and answers it plainly', async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 0, token: Buffer.from('d1') }));
      expect(await device.nextPacket()).toMatchObject({ code: '2.03' });
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 1, token: Buffer.from('d1') }));
      const answer = await device.nextPacket();
      expect(answer).toMatchObject({ code: '2.05' });
      expect(observeOf(answer!)).toBeUndefined();
      await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 71, method: 'late', params: {} } });
      expect(await device.next(500)).toBeUndefined();
      // Collect it so later tests start with an empty queue.
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 0, token: Buffer.from('d2'), confirmable: false }));
      expect((await device.nextPacket())!.code).toBe('2.03');
      const queued = await device.nextPacket();
      expect(queued).toMatchObject({ confirmable: false, code: '2.05' });
      expect(JSON.parse(queued!.payload.toString())).toMatchObject({ id: 71 });
      device.send(get('/api/v1/pump-token-2/rpc', { observe: 1, token: Buffer.from('d2') }));
      await device.nextPacket();
    } finally {
      await sleep(50);
      device.close();
    }
  });

  it('ignores malformed messages from upstream (logged once) and keeps delivering valid ones', async () => {
    const device = observe('/api/v1/boiler-token-7/rpc');
    await observing(device, '2.03');
    await tb.publish('v1/gateway/rpc', 'not json at all');
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { method: 'noId' } });
    await tb.publish('v1/gateway/attributes', { data: { orphan: 1 } });
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 8, method: 'valid', params: {} } });
    const [, notification] = await device.waitForResponses(2);
    expect(payloadOf(notification!)).toMatchObject({ id: 8, method: 'valid' });
    expect(device.responses()).toHaveLength(2);
    const warnings = gw.logs.filter((line) => String(line['msg']).startsWith('refused a message from upstream'));
    expect(warnings.map((line) => line['reason'])).toEqual(
      expect.arrayContaining(['not JSON', 'RPC request without an "id" from 0 to 2147483647 and a "method" string']),
    );
  });

  it('refuses a GET on /rpc without Observe and a reply with a bad id or body', async () => {
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/rpc'))).response?.code).toBe('4.00');
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/rpc/abc'), ['-m', 'post', '-e', '{}'])).response?.code).toBe('4.00');
    // ThingsBoard's ids are ints and it truncates a larger one: 4294967301 would answer RPC 5.
    const beyond = await coapClient(gw.uri('/api/v1/boiler-token-7/rpc/4294967301'), ['-m', 'post', '-e', '{}']);
    expect(beyond.response?.code).toBe('4.00');
    expect(beyond.response?.payload).toMatch(/from 0 to 2147483647/);
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/rpc/5'), ['-m', 'post', '-e', '{"broken'])).response?.code).toBe('4.00');
    await sleep(200);
    expect(tb.on('v1/gateway/rpc')).toHaveLength(0);
  });
});

describe('attributes', () => {
  it('merges a GET with clientKeys and sharedKeys from two upstream requests', async () => {
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/attributes?clientKeys=serial,fw&sharedKeys=setpoint'));
    expect(result.response?.code).toBe('2.05');
    expect(JSON.parse(result.response!.payload!)).toEqual({ client: { serial: 'SN-001', fw: '1.2' }, shared: { setpoint: 21.5 } });
    const requests = tb.on('v1/gateway/attributes/request').map((m) => m.json as Record<string, unknown>);
    expect(requests).toHaveLength(2);
    expect(requests).toContainEqual(expect.objectContaining({ device: 'Boiler-7', client: true, keys: ['serial', 'fw'] }));
    expect(requests).toContainEqual(expect.objectContaining({ device: 'Boiler-7', client: false, key: 'setpoint' }));
  });

  it('answers 4.04 when nothing is found, and 5.04 when ThingsBoard stays silent', async () => {
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/attributes?sharedKeys=nope'))).response?.code).toBe('4.04');
    tb.silent = true;
    const timedOut = await coapClient(gw.uri('/api/v1/boiler-token-7/attributes?sharedKeys=mode'));
    expect(timedOut.response?.code).toBe('5.04');
  });

  it('answers a GET without keys with every client and shared attribute, from one upstream request with keys []', async () => {
    // An answer teaches the gateway that setpoint and mode are shared; ThingsBoard's key-less answer mixes the scopes.
    await coapClient(gw.uri('/api/v1/boiler-token-7/attributes?sharedKeys=setpoint,mode'));
    tb.clear();
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/attributes'));
    expect(result.response?.code).toBe('2.05');
    expect(JSON.parse(result.response!.payload!)).toEqual({ client: { serial: 'SN-001', fw: '1.2' }, shared: { setpoint: 21.5, mode: 'eco' } });
    // The keys of unknown scope are asked in the shared scope once: none of them is shared.
    expect(tb.on('v1/gateway/attributes/request').map((m) => m.json)).toEqual([
      { id: expect.any(Number), device: 'Boiler-7', client: false, keys: [] },
      { id: expect.any(Number), device: 'Boiler-7', client: false, keys: ['serial', 'fw'] },
    ]);
  });

  it('reports a shared attribute the gateway never saw as shared, by asking the scope of the keys it does not know', async () => {
    attributes['Valve-5'] = { client: { model: 'V-5' }, shared: { opening: 40, boost: true } };
    const result = await coapClient(gw.uri('/api/v1/valve-token-5/attributes'));
    expect(result.response?.code).toBe('2.05');
    expect(JSON.parse(result.response!.payload!)).toEqual({ client: { model: 'V-5' }, shared: { opening: 40, boost: true } });
    expect(tb.on('v1/gateway/attributes/request').map((m) => m.json)).toEqual([
      { id: expect.any(Number), device: 'Valve-5', client: false, keys: [] },
      { id: expect.any(Number), device: 'Valve-5', client: false, keys: ['model', 'opening', 'boost'] },
    ]);
  });

  it('answers a GET without keys 5.04 when ThingsBoard stays silent, like any read it must answer', async () => {
    tb.silent = true;
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/attributes'))).response?.code).toBe('5.04');
  });

  it('gives an observer the cached state, then each push as sent, deletions included', async () => {
    await tb.pushShared('Pump-2', { speed: 3, label: 'P2' });
    await sleep(200);
    const device = observe('/api/v1/pump-token-2/attributes');
    const [initial] = await device.waitForResponses(1);
    expect(initial!.code).toBe('2.05');
    expect(Number(initial!.options.get('Observe')![0])).toBe(0);
    expect(payloadOf(initial!)).toEqual({ speed: 3, label: 'P2' });

    await tb.pushShared('Pump-2', { speed: 4 });
    await tb.pushShared('Pump-2', { deleted: ['label'] });
    const responses = await device.waitForResponses(3);
    expect(responses.slice(1).map(payloadOf)).toEqual([{ speed: 4 }, { deleted: ['label'] }]);
    // ThingsBoard and the gateway's cache followed: a key-less GET shows the state after the deletion, as shared.
    const read = await coapClient(gw.uri('/api/v1/pump-token-2/attributes'));
    expect(JSON.parse(read.response!.payload!)).toEqual({ shared: { speed: 4 } });
  });

  it('also observes /attributes/updates, and sends large notifications block-wise', async () => {
    const output = join(stateDir, 'observed.out');
    const device = observe('/api/v1/pump-token-2/attributes/updates', ['-b', '64', '-o', output]);
    await device.waitForResponses(1);
    const big = 'x'.repeat(3000);
    await tb.publish('v1/gateway/attributes', { device: 'Pump-2', data: { blob: big } });
    // coap-client fetches the remaining blocks itself and writes the reassembled notification to the file.
    await eventually(() => (existsSync(output) && readFileSync(output, 'utf8').includes(JSON.stringify({ blob: big }))) || undefined, 5000, 'the reassembled large notification');
    const blocks = device.messages.filter((m) => m.options.has('Block2'));
    expect(blocks.length).toBeGreaterThan(3000 / 64);
  });
});

describe('client-side RPC and claim', () => {
  it('relays a client-side RPC as the gateway\'s own and answers with the reply', async () => {
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/rpc'), ['-m', 'post', '-e', '{"method":"getTime","params":{"tz":"UTC"}}']);
    expect(result.response?.code).toBe('2.05');
    expect(JSON.parse(result.response!.payload!)).toEqual({
      time: 1_700_000_000_000,
      asked: { method: 'getTime', params: { device: 'Boiler-7', params: { tz: 'UTC' } } },
    });
  });

  it('answers 5.04 when no reply comes, and 4.00 for a body without a method', async () => {
    tb.silent = true;
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/rpc'), ['-m', 'post', '-e', '{"method":"getTime"}'])).response?.code).toBe('5.04');
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/rpc'), ['-m', 'post', '-e', '{"params":{}}'])).response?.code).toBe('4.00');
  });

  it('forwards a claim, with or without a body', async () => {
    expect((await coapClient(gw.uri('/api/v1/pump-token-2/claim'), ['-m', 'post', '-e', '{"secretKey":"abc","durationMs":60000}'])).response?.code).toBe('2.01');
    expect((await coapClient(gw.uri('/api/v1/pump-token-2/claim'), ['-m', 'post'])).response?.code).toBe('2.01');
    const claims = await tb.waitFor('v1/gateway/claim', 2);
    expect(claims.map((m) => m.json)).toEqual([{ 'Pump-2': { secretKey: 'abc', durationMs: 60000 } }, { 'Pump-2': {} }]);
  });
});

describe('across an upstream broker restart and a gateway restart', () => {
  it('keeps an observation through a broker restart and delivers again afterwards', async () => {
    const device = observe('/api/v1/boiler-token-7/rpc');
    await observing(device, '2.03');
    await broker.stop();
    await sleep(300);
    await broker.start();
    await eventually(() => gw.gateway.upstream.connected || undefined, 10_000, 'gateway reconnected');
    // The device is announced again on the new session before anything else concerns it.
    await eventually(() => gw.logs.find((line) => line['msg'] === 're-announced active devices upstream'), 5000);
    await sleep(200); // the gateway's SUBSCRIBE is processed before the double publishes
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 99, method: 'afterRestart', params: {} } });
    const [, notification] = await device.waitForResponses(2, 5000);
    expect(payloadOf(notification!)).toMatchObject({ id: 99, method: 'afterRestart' });
  });

  it('keeps the shared-attribute cache across a gateway restart', async () => {
    await tb.pushShared('Boiler-7', { persisted: 'yes' });
    await sleep(300);
    await gw.stop();
    gw = await startGateway();
    const read = await coapClient(gw.uri('/api/v1/boiler-token-7/attributes'));
    expect(JSON.parse(read.response!.payload!)).toMatchObject({ shared: { persisted: 'yes' } });
  });
});
