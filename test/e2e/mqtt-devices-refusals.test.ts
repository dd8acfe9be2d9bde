// The MQTT device front end against devices that get things wrong (docs/device-api-mqtt.md, "When something
// is wrong"): wrong tokens, subscriptions and topics outside the API, bytes that are not MQTT, bad JSON,
// QoS 2 sent twice, a second connection of the same device. mosquitto_pub, curl, MQTT.js and raw sockets
// with mqtt-packet as devices; a real mosquitto upstream and the ThingsBoard double behind the gateway.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { MqttDevice, mosquittoPub } from '../helpers/mqtt-device.js';
import { mqttGatewayRig } from '../helpers/mqtt-gateway-rig.js';
import { RawMqttDevice } from '../helpers/mqtt-raw-device.js';
import { sleep } from '../helpers/ports.js';

const rig = mqttGatewayRig(() => ({ mqttDevices: { connectTimeoutMs: 3000 } }));

/** Devices a test opened are ended after it, whatever it asserted. */
const device = async (token: string, options: Parameters<typeof MqttDevice.connect>[2] = {}): Promise<MqttDevice> => {
  const connected = await MqttDevice.connect(rig.port, token, options);
  rig.cleanups.push(() => connected.end());
  return connected;
};
const pub = (token: string, topic: string, message: string) => mosquittoPub(rig.port, token, topic, message, ['-q', '1']);

async function metrics(): Promise<string> {
  const { address, port: httpPort } = rig.gw.gateway.httpAddress!;
  return (await fetch(`http://${address}:${httpPort}/metrics`)).text();
}
const series = (text: string, name: string, label: string, value: string): number =>
  Number(new RegExp(`^${name}\\{${label}="${value}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);

/** What reached ThingsBoard besides the gateway announcing devices. */
const upstreamTraffic = (): string[] => rig.tb.received.map((message) => message.topic).filter((topic) => topic.startsWith('v1/gateway/') && topic !== 'v1/gateway/connect');

/** A raw TCP device (bytes out, MQTT packets in), ended after the test; CONNECTed as `token`'s device when given. */
async function rawDevice(token?: string): Promise<RawMqttDevice> {
  const raw = await (token === undefined ? RawMqttDevice.open(rig.port) : RawMqttDevice.connect(rig.port, token));
  rig.cleanups.push(() => raw.end());
  return raw;
}

const connectPacket = (token: string): Packet => ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 60, username: token });

describe('MQTT devices: connecting', () => {
  it('refuses a wrong token with CONNACK 5, to mosquitto_pub and MQTT.js alike, and counts it', async () => {
    const before = series(await metrics(), 'coap2mqtt_mqtt_device_connects_total', 'result', 'refused');
    const refused = await pub('not-a-token', 'v1/devices/me/telemetry', '{"t":1}');
    // mosquitto_pub exits with the CONNACK's return code.
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(/Connection Refused: not authorised/);
    const error = await MqttDevice.connect(rig.port, 'not-a-token-either').then(
      () => undefined,
      (failure: Error & { code?: number }) => failure,
    );
    expect(error?.code).toBe(5);
    const after = await metrics();
    expect(series(after, 'coap2mqtt_mqtt_device_connects_total', 'result', 'refused') - before).toBe(2);
    expect(upstreamTraffic()).toEqual([]);
    // One warning, where tokens are checked, names the address and the token's fingerprint, never the token.
    const text = JSON.stringify(rig.gw.logs);
    expect(text).toContain('request with an unknown access token refused');
    expect(text).not.toContain('not-a-token');
  });

  it('closes a device\'s older connection when it connects again', async () => {
    const first = await device('boiler-token-7', { clientId: 'first' });
    const second = await device('boiler-token-7', { clientId: 'second' });
    await first.waitClosed();
    await second.client.publishAsync('v1/devices/me/telemetry', '{"second":1}', { qos: 1 });
    expect((await rig.tb.waitForReadings('Boiler-7', 1))[0]).toMatchObject({ values: { second: 1 } });
    expect(second.closed).toBe(false);
    expect(series(await metrics(), 'coap2mqtt_mqtt_device_connections_closed_total', 'reason', 'taken-over')).toBeGreaterThanOrEqual(1);
  });
});

describe('MQTT devices: topics outside the API', () => {
  it('refuses subscriptions outside the API in the SUBACK (0x80), wildcards included, and grants the rest', async () => {
    const boiler = await device('boiler-token-7');
    expect(await boiler.subscribe(['v1/devices/me/#', 'foo/bar', 'v1/devices/me/attributes', '#', 'v1/devices/me/rpc/request/+'])).toEqual([128, 128, 1, 128, 1]);
    // QoS is granted as asked, at most 1.
    expect(await boiler.subscribe(['v1/devices/me/attributes/response/+'], 2)).toEqual([1]);
    expect(await boiler.subscribe(['v1/devices/me/rpc/response/+'], 0)).toEqual([0]);
    expect(boiler.closed).toBe(false);
  });

  it('acknowledges a publish on an unknown topic and sends nothing upstream', async () => {
    expect((await pub('boiler-token-7', 'foo/bar', '{"t":1}')).code).toBe(0);
    const boiler = await device('boiler-token-7');
    await boiler.client.publishAsync('v1/devices/me/telemetrie', '{"t":2}', { qos: 1 });
    await boiler.client.publishAsync('v2/t', '{"t":3}', { qos: 1 });
    await sleep(300);
    expect(boiler.closed).toBe(false);
    expect(upstreamTraffic()).toEqual([]);
  });
});

describe('MQTT devices: bad payloads and QoS', () => {
  // The last field: the device whose warning is expected (one per device per 10 minutes), or none.
  it.each([
    ['bad JSON telemetry', 'v1/devices/me/telemetry', '{"t":', 'boiler-token-7', 'Boiler-7'],
    ['an attribute request without a body', 'v1/devices/me/attributes/request/1', '', 'pump-token-2', 'Pump-2'],
    ['an attribute request with an id that is not a number', 'v1/devices/me/attributes/request/abc', '{}', 'boiler-token-7', undefined],
    ['a firmware chunk request whose size is not a number', 'v2/fw/request/1/chunk/0', 'big', 'boiler-token-7', undefined],
  ])('closes the connection without a PUBACK on %s at QoS 1, and sends nothing upstream', async (_name, topic, payload, token, warned) => {
    const sender = await device(token);
    let acknowledged = false;
    sender.client.publish(topic, payload, { qos: 1 }, (error) => (acknowledged = !error));
    await sender.waitClosed();
    await sleep(200);
    expect(acknowledged).toBe(false);
    expect(upstreamTraffic()).toEqual([]);
    if (warned) expect(rig.gw.logs.find((line) => line.level === 'warn' && line.topic === topic)).toMatchObject({ device: warned, msg: expect.stringMatching(/MQTT publish refused/) });
  });

  it('takes a QoS 2 publish from MQTT.js upstream exactly once', async () => {
    const pump = await device('pump-token-2');
    await pump.client.publishAsync('v1/devices/me/telemetry', '{"exactly":1}', { qos: 2 });
    await rig.tb.waitForReadings('Pump-2', 1);
    await sleep(300);
    expect(rig.tb.readings('Pump-2')).toMatchObject([{ values: { exactly: 1 } }]);
  });

  it('handles a QoS 2 PUBLISH sent again before its PUBREL once, answering PUBREC to both', async () => {
    const raw = await rawDevice('pump-token-2');
    const publish: Packet = { cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: '{"twice":1}', qos: 2, messageId: 7, retain: false, dup: false };
    raw.send(publish);
    await raw.waitFor('pubrec');
    raw.send({ ...publish, dup: true });
    await raw.waitFor('pubrec', 2);
    raw.send({ cmd: 'pubrel', messageId: 7 });
    expect((await raw.waitFor('pubcomp'))[0]).toMatchObject({ messageId: 7 });
    await rig.tb.waitForReadings('Pump-2', 1);
    await sleep(300);
    expect(rig.tb.readings('Pump-2')).toMatchObject([{ values: { twice: 1 } }]);
  });
});

describe('MQTT devices: bytes that are not MQTT', () => {
  const curl = (url: string): Promise<number> =>
    new Promise((resolve) => execFile('curl', ['-s', '--max-time', '5', url], (error) => resolve(typeof error?.code === 'number' ? error.code : 0)));

  it('closes connections that send random bytes, HTTP, a packet before CONNECT, a second CONNECT or an oversized packet, and keeps serving', async () => {
    const before = await metrics();
    // 70 KB of noise: whatever its first "header" says, the gateway has enough to decide on (a malformed
    // or oversized packet, or a packet before CONNECT).
    const noise = await rawDevice();
    noise.send(randomBytes(70_000));
    // An HTTP client: "G" reads as a PUBACK header announcing 69 bytes ("E"), curl's request is longer.
    const http = curl(`http://127.0.0.1:${rig.port}/api/v1/boiler-token-7/telemetry`);
    const early = await rawDevice();
    early.send({ cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: '{"early":1}', qos: 1, messageId: 1, retain: false, dup: false });
    const twice = await rawDevice('boiler-token-7');
    twice.send(connectPacket('boiler-token-7'));
    // A PUBLISH header announcing 70 000 bytes (over the 65 536 of mqttDevices.maxPacketBytes), then a trickle.
    const oversized = await rawDevice('pump-token-2');
    oversized.send(Buffer.from([0x30, 0xf0, 0xa2, 0x04, 0x00, 0x17]));

    await Promise.all([noise, early, twice, oversized].map((raw) => raw.waitClosed()));
    // curl: 52 empty reply, or 56 connection reset while reading.
    expect([52, 56]).toContain(await http);
    expect(early.packets).toEqual([]);
    expect(oversized.packets.map((packet) => packet.cmd)).toEqual(['connack']);
    const after = await metrics();
    const closed = (reason: string): number =>
      series(after, 'coap2mqtt_mqtt_device_connections_closed_total', 'reason', reason) - series(before, 'coap2mqtt_mqtt_device_connections_closed_total', 'reason', reason);
    expect(closed('too-large')).toBeGreaterThanOrEqual(1);
    expect(closed('protocol')).toBeGreaterThanOrEqual(2);
    expect(closed('malformed') + closed('protocol') + closed('too-large')).toBeGreaterThanOrEqual(5);
    expect(closed('connect-timeout')).toBe(0);

    // And a real device is served as before.
    expect((await pub('boiler-token-7', 'v1/devices/me/telemetry', '{"after":1}')).code).toBe(0);
    expect((await rig.tb.waitForReadings('Boiler-7', 1))[0]).toMatchObject({ values: { after: 1 } });
    expect(rig.tb.readings('Boiler-7')).toHaveLength(1);
  });
});
