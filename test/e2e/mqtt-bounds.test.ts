// The MQTT device front end's bounds and MQTT 5 (docs/device-api-mqtt.md, "Connecting" and "When something
// is wrong"): keep-alive, the connect timeout, mqttDevices.maxConnections, ThingsBoard's MQTT 5 reason
// codes, a device that stops reading, and software packages. Raw sockets with mqtt-packet where a device
// must misbehave, MQTT.js where it is a library's device; a real mosquitto upstream and the ThingsBoard
// double behind the gateway. The counters checked are /metrics' coap2mqtt_mqtt_device_*.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IPubackPacket, ISubackPacket } from 'mqtt-packet';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MqttDevice } from '../helpers/mqtt-device.js';
import { mqttGatewayRig } from '../helpers/mqtt-gateway-rig.js';
import { MqttJsDevice } from '../helpers/mqtt-js-device.js';
import { RawMqttDevice } from '../helpers/mqtt-raw-device.js';
import { eventually, eventuallyAsync, sleep } from '../helpers/ports.js';
import type { AttributeStore } from '../helpers/thingsboard-double.js';

const MAX_CONNECTIONS = 3;
/** Small, so four packets' worth of unread bytes (64 KiB) is soon reached by 20 KB updates. */
const MAX_PACKET_BYTES = 16_384;
const DEVICES = [
  { name: 'Boiler-7', type: 'thermostat', token: 'boiler-token-7' },
  { name: 'Pump-2', type: 'pump', token: 'pump-token-2' },
  { name: 'Valve-3', type: 'valve', token: 'valve-token-3' },
];

const images = mkdtempSync(join(tmpdir(), 'coap2mqtt-mqtt-bounds-'));
// Registered before the rig: after-hooks run as a stack, so this runs once the gateway has stopped.
afterAll(() => rmSync(images, { recursive: true, force: true }));
const attributes: AttributeStore = {};
const rig = mqttGatewayRig(({ tb }) => {
  tb.answerAttributeRequests(attributes);
  return {
    limits: { deviceRequestsPerSecond: 0 },
    mqttDevices: { connectTimeoutMs: 1000, maxConnections: MAX_CONNECTIONS, maxPacketBytes: MAX_PACKET_BYTES },
    firmware: { dir: images },
    devices: DEVICES,
  };
});

const opened: Array<{ end(): Promise<void> | void } | { close(): void }> = [];

function keep<T extends { end(): Promise<void> | void } | { close(): void }>(one: T): T {
  opened.push(one);
  return one;
}
const raw = async (open: Promise<RawMqttDevice>): Promise<RawMqttDevice> => keep(await open);

async function metrics(): Promise<string> {
  const { address, port: httpPort } = rig.gw.gateway.httpAddress!;
  return (await fetch(`http://${address}:${httpPort}/metrics`)).text();
}
const series = (text: string, name: string, label: string, value: string): number =>
  Number(new RegExp(`^${name}\\{${label}="${value}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
const closedFor = async (reason: string): Promise<number> => series(await metrics(), 'coap2mqtt_mqtt_device_connections_closed_total', 'reason', reason);
const openConnections = async (): Promise<number> => Number(/^coap2mqtt_mqtt_device_connections (\d+)$/m.exec(await metrics())?.[1] ?? -1);

afterEach(async () => {
  for (const one of opened.splice(0)) await ('end' in one ? one.end() : one.close());
  // maxConnections is 3: the next test starts with every slot free.
  await eventuallyAsync(async () => (await openConnections()) === 0, 5000, 'the gateway to see every connection closed');
});

describe('MQTT devices: keep-alive and the connect timeout', () => {
  it('closes a device silent for 1.5 keep-alive periods, and keeps one that pings', async () => {
    const before = await closedFor('keepalive');
    const [silent, pinger] = await Promise.all([
      raw(RawMqttDevice.connect(rig.port, 'boiler-token-7', { keepalive: 1 })),
      raw(RawMqttDevice.connect(rig.port, 'pump-token-2', { keepalive: 1 })),
    ]);
    const connectedAt = Date.now();
    const pings = setInterval(() => pinger.send({ cmd: 'pingreq' }), 500);
    try {
      const closedAt = await silent.waitClosed(4000);
      // 1.5 × 1 s, measured from the CONNACK the test saw (timers may be late, never early by much).
      expect(closedAt - connectedAt).toBeGreaterThanOrEqual(1300);
      expect(closedAt - connectedAt).toBeLessThan(4000);
      await sleep(3200 - (Date.now() - connectedAt));
      expect(pinger.closed).toBe(false);
      expect(pinger.received('pingresp').length).toBeGreaterThanOrEqual(5);
    } finally {
      clearInterval(pings);
    }
    expect(silent.received('connack')).toHaveLength(1);
    expect((await closedFor('keepalive')) - before).toBe(1);
  });

  it('closes a connection that sends no CONNECT within mqttDevices.connectTimeoutMs (1 s)', async () => {
    const before = await closedFor('connect-timeout');
    const idle = await raw(RawMqttDevice.open(rig.port));
    const closedAt = await idle.waitClosed(4000);
    expect(closedAt - idle.openedAt).toBeGreaterThanOrEqual(900);
    expect(idle.packets).toEqual([]);
    expect((await closedFor('connect-timeout')) - before).toBe(1);
  });
});

describe('MQTT devices: mqttDevices.maxConnections', () => {
  it('makes room for a device by closing the oldest connection that never sent CONNECT', async () => {
    const before = await closedFor('evicted');
    const idle: RawMqttDevice[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) idle.push(await raw(RawMqttDevice.open(rig.port)));
    await eventuallyAsync(async () => (await openConnections()) === MAX_CONNECTIONS, 2000, 'three connections at the gateway');
    const boiler = keep(await MqttDevice.connect(rig.port, 'boiler-token-7'));
    expect(boiler.connack.returnCode).toBe(0);
    await idle[0]!.waitClosed(500);
    expect(idle[1]!.closed || idle[2]!.closed).toBe(false);
    expect((await closedFor('evicted')) - before).toBe(1);
    await boiler.client.publishAsync('v1/devices/me/telemetry', '{"roomMade":1}', { qos: 1 });
    expect((await rig.tb.waitForReadings('Boiler-7', 1))[0]).toMatchObject({ values: { roomMade: 1 } });
  });

  it('refuses a connection, before any CONNACK, when every one is a connected device', async () => {
    const before = await closedFor('refused');
    for (const { token } of DEVICES) keep(await MqttDevice.connect(rig.port, token));
    const fourth = await raw(RawMqttDevice.open(rig.port));
    fourth.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 60, username: 'boiler-token-7' });
    await fourth.waitClosed(2000);
    expect(fourth.packets).toEqual([]);
    expect((await closedFor('refused')) - before).toBe(1);
    // The connected ones were not touched.
    expect(opened.filter((one): one is MqttDevice => one instanceof MqttDevice).map((device) => device.closed)).toEqual([false, false, false]);
  });
});

describe('MQTT 5 devices', () => {
  const v5 = { protocolVersion: 5 as const };
  const pubacks = (device: MqttJsDevice): Array<{ messageId: number; reasonCode: number }> =>
    device.received.filter((packet): packet is IPubackPacket => packet.cmd === 'puback').map(({ messageId, reasonCode }) => ({ messageId: messageId!, reasonCode: reasonCode ?? 0 }));

  it('tells the largest packet in the CONNACK, and answers with ThingsBoard\'s reason codes, staying open after 0x99 and 0x90', async () => {
    const device = keep(await MqttJsDevice.connect(`mqtt://127.0.0.1:${rig.port}`, { ...v5, username: 'boiler-token-7' }));
    expect(device.connack).toMatchObject({ reasonCode: 0, properties: { maximumPacketSize: MAX_PACKET_BYTES } });
    // No topic alias was allowed: Topic Alias Maximum absent means 0 (MQTT 5 §3.2.2.3.8).
    expect(device.connack?.properties?.topicAliasMaximum ?? 0).toBe(0);
    await device.publish('v1/devices/me/telemetry', '{"v5":1}');
    // A PUBACK reason code of 0x80 or more rejects MQTT.js's promise: the PUBACKs themselves tell.
    await device.publish('v1/devices/me/telemetry', '{"t":').catch(() => undefined);
    await device.publish('foo/bar', '{"t":1}').catch(() => undefined);
    await device.publish('v1/devices/me/telemetry', '{"v5":2}');
    expect(pubacks(device).map(({ reasonCode }) => reasonCode)).toEqual([0, 0x99, 0x90, 0]);
    expect(device.open).toBe(true);
    const readings = await rig.tb.waitForReadings('Boiler-7', 2);
    expect(readings.map((reading) => (reading as { values: unknown }).values)).toEqual([{ v5: 1 }, { v5: 2 }]);
  });

  it('refuses a wildcard filter with 0x8F in the SUBACK, grants the RPC one, and delivers an RPC as {"method","params"}', async () => {
    const device = keep(await MqttJsDevice.connect(`mqtt://127.0.0.1:${rig.port}`, { ...v5, username: 'pump-token-2' }));
    await new Promise((resolve) => device.client.subscribe(['v1/devices/me/#', 'v1/devices/me/rpc/request/+'], { qos: 1 }, resolve));
    const suback = device.received.find((packet): packet is ISubackPacket => packet.cmd === 'suback');
    expect(suback?.granted).toEqual([0x8f, 1]);
    await rig.tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 12, method: 'setSpeed', params: { rpm: 900 } } });
    const [rpc] = await eventually(() => device.publishesOn(/^v1\/devices\/me\/rpc\/request\//).at(0) && device.publishesOn(/^v1\/devices\/me\/rpc\/request\//), 5000, 'the RPC');
    expect(rpc!.topic).toBe('v1/devices/me/rpc/request/12');
    expect(JSON.parse(rpc!.payload.toString())).toEqual({ method: 'setSpeed', params: { rpm: 900 } });
  });

  it('refuses an unknown token with CONNACK 0x86 and no maximum packet size', async () => {
    const device = keep(await MqttJsDevice.open(`mqtt://127.0.0.1:${rig.port}`, { ...v5, username: 'no-such-token' }));
    expect(device.connack?.reasonCode).toBe(0x86);
    await eventually(() => !device.open, 3000, 'the refused connection to close');
  });

  it('keeps a session with a session expiry interval above 0, and only then', async () => {
    const persistent = { ...v5, clean: false, clientId: 'valve-v5', resubscribe: false, properties: { sessionExpiryInterval: 300 } };
    const first = await MqttDevice.connect(rig.port, 'valve-token-3', persistent);
    expect(first.connack.sessionPresent).toBe(false);
    expect(await first.subscribe(['v1/devices/me/rpc/request/+'])).toEqual([1]);
    await first.end();
    await rig.tb.publish('v1/gateway/rpc', { device: 'Valve-3', data: { id: 31, method: 'whileAway', params: {} } });
    await sleep(300);
    const back = keep(await MqttDevice.connect(rig.port, 'valve-token-3', persistent));
    expect(back.connack.sessionPresent).toBe(true);
    expect((await back.waitFor('v1/devices/me/rpc/request/31'))[0]!.json).toEqual({ method: 'whileAway', params: {} });
    await back.end();
    // Session expiry 0 (the default): not kept, even with clean start 0.
    const fleeting = { ...persistent, clientId: 'valve-v5-fleeting', properties: { sessionExpiryInterval: 0 } };
    const once = await MqttDevice.connect(rig.port, 'valve-token-3', fleeting);
    expect(await once.subscribe(['v1/devices/me/rpc/request/+'])).toEqual([1]);
    await once.end();
    const again = keep(await MqttDevice.connect(rig.port, 'valve-token-3', fleeting));
    expect(again.connack.sessionPresent).toBe(false);
  });

  it('closes a connection that publishes with a topic alias, which the CONNACK did not allow', async () => {
    const before = await closedFor('protocol');
    const device = await raw(RawMqttDevice.connect(rig.port, 'boiler-token-7', { protocolVersion: 5 }));
    expect(device.received('connack')[0]).toMatchObject({ reasonCode: 0 });
    device.send({ cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: '{"aliased":1}', qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 1 } });
    await device.waitClosed(3000);
    expect(device.received('puback')).toEqual([]);
    expect((await closedFor('protocol')) - before).toBe(1);
    await sleep(200);
    expect(rig.tb.readings('Boiler-7')).toEqual([]);
  });
});

describe('MQTT devices: a device that stops reading', () => {
  const filler = 'x'.repeat(20_000);

  it('closes the connection of a subscriber that stopped reading once 4 packets\' worth wait unread', async () => {
    const before = await closedFor('slow-reader');
    const sleeper = await raw(RawMqttDevice.connect(rig.port, 'boiler-token-7'));
    sleeper.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'v1/devices/me/attributes', qos: 0 }] });
    await sleeper.waitFor('suback');
    sleeper.socket.pause();
    const heapBefore = process.memoryUsage().heapUsed;
    // Loopback's kernel buffers take a few MB before the gateway's socket holds anything: push until it gives up.
    let pushed = 0;
    while (pushed < 1500 && (pushed % 20 !== 0 || (await closedFor('slow-reader')) === before)) {
      await rig.tb.pushShared('Boiler-7', { [`big${pushed % 10}`]: filler, update: pushed++ });
    }
    expect((await closedFor('slow-reader')) - before).toBe(1);
    // Nothing more is written for it: updates that keep coming are not queued anywhere for the device.
    const sent = series(await metrics(), 'coap2mqtt_mqtt_device_deliveries_total', 'result', 'sent');
    for (let more = 0; more < 50; more++) await rig.tb.pushShared('Boiler-7', { [`big${more % 10}`]: filler, more });
    await sleep(300);
    expect(series(await metrics(), 'coap2mqtt_mqtt_device_deliveries_total', 'result', 'sent')).toBe(sent);
    // A loose bound (the test, the double and the gateway share this heap, and garbage is not collected on demand).
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
    // Reading again, the device gets what the kernel held, then the end of the connection.
    sleeper.socket.resume();
    await sleeper.waitClosed(5000);
    expect(sleeper.received('publish').length).toBeLessThan(pushed);
  }, 30_000);

  it('keeps a subscriber that reads, however fast the large updates come', async () => {
    const before = await closedFor('slow-reader');
    const reader = keep(await MqttDevice.connect(rig.port, 'pump-token-2'));
    expect(await reader.subscribe(['v1/devices/me/attributes'], 0)).toEqual([0]);
    await Promise.all(Array.from({ length: 40 }, (_, update) => rig.tb.pushShared('Pump-2', { [`big${update % 10}`]: filler, update })));
    await reader.waitFor('v1/devices/me/attributes', 40, 10_000);
    expect(reader.closed).toBe(false);
    expect(await closedFor('slow-reader')).toBe(before);
  });
});

describe('MQTT devices: software packages', () => {
  it('serves software chunks on v2/sw/response/{req}/chunk/{n} with the package\'s bytes', async () => {
    const image = randomBytes(1500);
    writeFileSync(join(images, 'pump-app-3.bin'), image);
    await rig.tb.pushShared('Pump-2', {
      sw_title: 'pump-app',
      sw_version: '3',
      sw_size: image.length,
      sw_checksum_algorithm: 'SHA256',
      sw_checksum: createHash('sha256').update(image).digest('hex'),
    });
    const pump = keep(await MqttDevice.connect(rig.port, 'pump-token-2'));
    await pump.client.publishAsync('v2/sw/request/1/chunk/0', '1000', { qos: 1 });
    const [first] = await pump.waitFor('v2/sw/response/1/chunk/0');
    await pump.client.publishAsync('v2/sw/request/1/chunk/1', '1000', { qos: 1 });
    const [second] = await pump.waitFor('v2/sw/response/1/chunk/1');
    expect(first!.payload.equals(image.subarray(0, 1000))).toBe(true);
    expect(second!.payload.equals(image.subarray(1000))).toBe(true);
    expect(pump.on(/^v2\/fw\//)).toEqual([]);
    expect(pump.closed).toBe(false);
  });
});
