// ThingsBoard's MQTT device API on the gateway (docs/device-api-mqtt.md), row by row of its topic table:
// mosquitto_pub / mosquitto_sub and MQTT.js as devices on the gateway's MQTT listener, a real mosquitto
// upstream, and a ThingsBoard double that only publishes and subscribes on it.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { gatewayApiViolations } from '../helpers/gateway-api-validator.js';
import { MosquittoSub, MqttDevice, mosquittoPub } from '../helpers/mqtt-device.js';
import { mqttGatewayRig } from '../helpers/mqtt-gateway-rig.js';
import { sleep } from '../helpers/ports.js';
import type { AttributeStore } from '../helpers/thingsboard-double.js';

const images = mkdtempSync(join(tmpdir(), 'coap2mqtt-mqtt-images-'));
// Registered before the rig: after-hooks run as a stack, so this runs once the gateway has stopped.
afterAll(() => rmSync(images, { recursive: true, force: true }));
const attributes: AttributeStore = { 'Boiler-7': { shared: { setpoint: 21.5 }, client: { firmware: '1.0' } } };
const rig = mqttGatewayRig(async ({ tb }) => {
  tb.answerAttributeRequests(attributes);
  tb.answerOwnRpcs((request) => ({ echoed: request.params }));
  await tb.answerProvisioning((request) =>
    request['provisionDeviceSecret'] === 'right'
      ? { status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN', credentialsValue: 'mqtt-issued-token' }
      : { status: 'NOT_FOUND', errorMsg: 'Provision data was not found!' },
  );
  return { sessions: { attributeRequestTimeoutMs: 1000, clientRpcTimeoutMs: 1000 }, firmware: { dir: images } };
});

/** Devices and subscribers a test opened are ended after it, whatever it asserted. */
const device = async (token: string, options: Parameters<typeof MqttDevice.connect>[2] = {}): Promise<MqttDevice> => {
  const connected = await MqttDevice.connect(rig.port, token, options);
  rig.cleanups.push(() => connected.end());
  return connected;
};
const subscriber = async (token: string, topics: string[], extra: string[] = []): Promise<MosquittoSub> => {
  const sub = await MosquittoSub.start(rig.port, token, topics, extra);
  rig.cleanups.push(() => sub.stop());
  return sub;
};
const pub = (token: string, topic: string, message: string) => mosquittoPub(rig.port, token, topic, message, ['-q', '1']);
const values = (reading: unknown): unknown => (reading as { values: unknown }).values;

beforeEach(() => {
  rig.tb.silent = false;
});

describe('MQTT device API: uplinks', () => {
  it('takes mosquitto_pub -q 1 telemetry to v1/gateway/telemetry under the device\'s name, announcing the device first', async () => {
    const before = Date.now();
    expect((await pub('boiler-token-7', 'v1/devices/me/telemetry', '{"temperature":21.5}')).code).toBe(0);
    const [reading] = await rig.tb.waitForReadings('Boiler-7', 1);
    expect(values(reading)).toEqual({ temperature: 21.5 });
    expect((reading as { ts: number }).ts).toBeGreaterThanOrEqual(before);
    const topics = rig.tb.received.map((message) => message.topic);
    expect(topics).toContain('v1/gateway/connect');
    expect(topics.indexOf('v1/gateway/connect')).toBeLessThan(topics.indexOf('v1/gateway/telemetry'));
    expect(rig.tb.on('v1/gateway/connect')[0]!.json).toEqual({ device: 'Boiler-7', type: 'thermostat' });
  });

  it('takes the array form and the {ts, values} form, keeping the device\'s timestamps', async () => {
    expect((await pub('boiler-token-7', 'v1/devices/me/telemetry', '[{"ts":1700000000000,"values":{"a":1}},{"b":"x"}]')).code).toBe(0);
    expect((await pub('boiler-token-7', 'v1/devices/me/telemetry', '{"ts":1700000001000,"values":{"c":true}}')).code).toBe(0);
    const readings = await rig.tb.waitForReadings('Boiler-7', 3);
    expect(readings[0]).toEqual({ ts: 1700000000000, values: { a: 1 } });
    expect(values(readings[1])).toEqual({ b: 'x' });
    expect(readings[2]).toEqual({ ts: 1700000001000, values: { c: true } });
    expect(gatewayApiViolations(rig.tb.received)).toEqual([]);
  });

  it('publishes client attributes and claims on v1/gateway/attributes and v1/gateway/claim', async () => {
    expect((await pub('pump-token-2', 'v1/devices/me/attributes', '{"fw_version":"2.1","battery":87}')).code).toBe(0);
    expect((await rig.tb.waitFor('v1/gateway/attributes'))[0]!.json).toEqual({ 'Pump-2': { fw_version: '2.1', battery: 87 } });
    expect((await pub('pump-token-2', 'v1/devices/me/claim', '{"secretKey":"k","durationMs":60000}')).code).toBe(0);
    expect((await rig.tb.waitFor('v1/gateway/claim'))[0]!.json).toEqual({ 'Pump-2': { secretKey: 'k', durationMs: 60000 } });
  });
});

describe('MQTT device API: downlinks and answers', () => {
  it('pushes shared-attribute updates, deleted keys included, to mosquitto_sub on v1/devices/me/attributes', async () => {
    const sub = await subscriber('boiler-token-7', ['v1/devices/me/attributes']);
    expect(sub.grantedQos).toEqual([1]);
    await rig.tb.pushShared('Boiler-7', { level: 3, mode: 'eco' });
    await rig.tb.pushShared('Boiler-7', { deleted: ['mode'] });
    const heard = await sub.waitFor(2);
    expect(heard.map(({ topic, json }) => ({ topic, json }))).toEqual([
      { topic: 'v1/devices/me/attributes', json: { level: 3, mode: 'eco' } },
      { topic: 'v1/devices/me/attributes', json: { deleted: ['mode'] } },
    ]);
  });

  it('answers an attribute request on .../attributes/response/{id}, {} when nothing is found', async () => {
    const boiler = await device('boiler-token-7');
    await boiler.client.publishAsync('v1/devices/me/attributes/request/1', '{"clientKeys":"firmware","sharedKeys":"setpoint"}', { qos: 1 });
    const [answer] = await boiler.waitFor('v1/devices/me/attributes/response/1');
    expect(answer!.json).toEqual({ client: { firmware: '1.0' }, shared: { setpoint: 21.5 } });
    await boiler.client.publishAsync('v1/devices/me/attributes/request/2', '{"sharedKeys":"nothing"}', { qos: 1 });
    expect((await boiler.waitFor('v1/devices/me/attributes/response/2'))[0]!.json).toEqual({});
    await boiler.client.publishAsync('v1/devices/me/attributes/request/3', '{"sharedKeys":"setpoint"}', { qos: 1 });
    expect((await boiler.waitFor('v1/devices/me/attributes/response/3'))[0]!.json).toEqual({ shared: { setpoint: 21.5 } });
    // {}: every attribute, each in its scope.
    await boiler.client.publishAsync('v1/devices/me/attributes/request/4', '{}', { qos: 1 });
    expect((await boiler.waitFor('v1/devices/me/attributes/response/4'))[0]!.json).toEqual({ client: attributes['Boiler-7']!.client, shared: attributes['Boiler-7']!.shared });
    // Answers go to the device unasked: it never subscribed to .../attributes/response/+.
    expect(boiler.received.map((message) => message.topic)).toEqual([1, 2, 3, 4].map((id) => `v1/devices/me/attributes/response/${id}`));
  });

  it('delivers a server-side RPC as {"method","params"} on v1/devices/me/rpc/request/{id}, and takes the reply to v1/gateway/rpc', async () => {
    const sub = await subscriber('boiler-token-7', ['v1/devices/me/rpc/request/+'], ['-C', '1']);
    await rig.tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 41, method: 'setValve', params: { open: true } } });
    const [rpc] = await sub.waitFor(1);
    expect(rpc).toMatchObject({ topic: 'v1/devices/me/rpc/request/41', json: { method: 'setValve', params: { open: true } } });
    await sub.stop();
    expect((await pub('boiler-token-7', 'v1/devices/me/rpc/response/41', '{"done":true}')).code).toBe(0);
    // The double hears its own RPC on the topic too; the reply is the second message.
    expect((await rig.tb.waitFor('v1/gateway/rpc', 2))[1]!.json).toEqual({ device: 'Boiler-7', id: 41, data: { done: true } });
  });

  it('answers a client-side RPC on v1/devices/me/rpc/response/{n}, and {"error":"timeout"} when the rule chain is silent', async () => {
    const boiler = await device('boiler-token-7');
    await boiler.client.publishAsync('v1/devices/me/rpc/request/7', '{"method":"getTime","params":{"tz":"UTC"}}', { qos: 1 });
    const [answer] = await boiler.waitFor('v1/devices/me/rpc/response/7');
    // The gateway asks on its own RPC connection with {"device", "params"} (docs/thingsboard.md).
    expect(answer!.json).toEqual({ echoed: { device: 'Boiler-7', params: { tz: 'UTC' } } });
    rig.tb.silent = true;
    await boiler.client.publishAsync('v1/devices/me/rpc/request/8', '{"method":"getTime","params":{}}', { qos: 1 });
    expect((await boiler.waitFor('v1/devices/me/rpc/response/8', 1, 4000))[0]!.json).toEqual({ error: 'timeout' });
  });

  it('provisions over a "provision" session (/provision/request → /provision/response), and the issued token then works', async () => {
    const asker = await device('provision');
    await asker.client.publishAsync('/provision/request', JSON.stringify({ deviceName: 'Mqtt-1', provisionDeviceKey: 'k', provisionDeviceSecret: 'right' }), { qos: 1 });
    const [answer] = await asker.waitFor('/provision/response');
    expect(answer!.json).toEqual({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN', credentialsValue: 'mqtt-issued-token' });
    expect((await pub('mqtt-issued-token', 'v1/devices/me/telemetry', '{"fresh":1}')).code).toBe(0);
    expect(values((await rig.tb.waitForReadings('Mqtt-1', 1))[0])).toEqual({ fresh: 1 });
  });

  it('serves firmware chunks on v2/fw/response/{req}/chunk/{n} with the image\'s bytes', async () => {
    const image = randomBytes(2500);
    writeFileSync(join(images, 'pump-fw-4.bin'), image);
    const data = { fw_title: 'pump-fw', fw_version: '4', fw_size: 2500, fw_checksum_algorithm: 'SHA256', fw_checksum: createHash('sha256').update(image).digest('hex') };
    await rig.tb.pushShared('Pump-2', data);
    const pump = await device('pump-token-2');
    const answers = [];
    for (const [request, chunk, size] of [[9, 0, '1000'], [9, 2, '1000'], [9, 3, '1000'], [10, 0, '']] as const) {
      await pump.client.publishAsync(`v2/fw/request/${request}/chunk/${chunk}`, size, { qos: 1 });
      answers.push((await pump.waitFor(`v2/fw/response/${request}/chunk/${chunk}`))[0]!);
    }
    expect(answers[0]!.payload.equals(image.subarray(0, 1000))).toBe(true);
    expect(answers[1]!.payload.equals(image.subarray(2000))).toBe(true);
    // Past the end: an empty payload, as ThingsBoard sends; no size: the whole image.
    expect(answers[2]!.payload).toHaveLength(0);
    expect(answers[3]!.payload.equals(image)).toBe(true);
    expect(pump.closed).toBe(false);
  });

  it('serves a whole package far bigger than the unread-bytes bound in one answer, to a device that reads it', async () => {
    // 8 MiB: more than the socket buffers take at once, and 32 times the bound a device may leave unread.
    const image = randomBytes(8 * 1024 * 1024);
    writeFileSync(join(images, 'big-fw-1.bin'), image);
    await rig.tb.pushShared('Pump-2', { fw_title: 'big-fw', fw_version: '1', fw_size: image.length, fw_checksum_algorithm: 'SHA256', fw_checksum: createHash('sha256').update(image).digest('hex') });
    const pump = await device('pump-token-2');
    await pump.client.publishAsync('v2/fw/request/1/chunk/0', '', { qos: 1 });
    const [whole] = await pump.waitFor('v2/fw/response/1/chunk/0', 1, 20_000);
    expect(whole!.payload.equals(image)).toBe(true);
    expect(pump.closed).toBe(false);
  }, 30_000);

  it('tells NOT_FOUND on v2/fw/error when no package is assigned, then closes the connection', async () => {
    const boiler = await device('boiler-token-7');
    await boiler.subscribe(['v2/fw/error', 'v2/fw/response/+/chunk/+']);
    await boiler.client.publishAsync('v2/fw/request/1/chunk/0', '512', { qos: 1 });
    const [error] = await boiler.waitFor('v2/fw/error');
    expect(error!.text).toBe('NOT_FOUND');
    await boiler.waitClosed();
    expect(boiler.on(/^v2\/fw\/response/)).toEqual([]);
  });
});

describe('MQTT device API: isolation and sessions', () => {
  it('gives an RPC and an attribute update for one device to that device only, on the topics both share', async () => {
    const boiler = await device('boiler-token-7');
    const pump = await device('pump-token-2');
    const topics = ['v1/devices/me/rpc/request/+', 'v1/devices/me/attributes'];
    expect(await boiler.subscribe(topics)).toEqual([1, 1]);
    expect(await pump.subscribe(topics)).toEqual([1, 1]);
    await rig.tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 5, method: 'boilerOnly', params: {} } });
    await rig.tb.pushShared('Boiler-7', { boilerOnly: 1 });
    await rig.tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 6, method: 'pumpOnly', params: {} } });
    await boiler.waitFor(/./, 2);
    await pump.waitFor(/./, 1);
    await sleep(300);
    expect(boiler.received.map(({ topic, json }) => ({ topic, json }))).toEqual([
      { topic: 'v1/devices/me/rpc/request/5', json: { method: 'boilerOnly', params: {} } },
      { topic: 'v1/devices/me/attributes', json: { boilerOnly: 1 } },
    ]);
    expect(pump.received.map(({ topic, json }) => ({ topic, json }))).toEqual([{ topic: 'v1/devices/me/rpc/request/6', json: { method: 'pumpOnly', params: {} } }]);
  });

  it('keeps a persistent session\'s subscription while the device is away, and delivers the RPC that came meanwhile', async () => {
    const options = { clean: false, clientId: 'pump-persistent', resubscribe: false };
    const first = await device('pump-token-2', options);
    expect(first.connack.sessionPresent).toBe(false);
    expect(await first.subscribe(['v1/devices/me/rpc/request/+'])).toEqual([1]);
    await first.end();
    await sleep(100);
    await rig.tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 77, method: 'whileAway', params: { n: 1 } } });
    await sleep(300);
    // Back with the same client id; no SUBSCRIBE is sent this time.
    const back = await device('pump-token-2', options);
    expect(back.connack.sessionPresent).toBe(true);
    const [rpc] = await back.waitFor('v1/devices/me/rpc/request/77');
    expect(rpc!.json).toEqual({ method: 'whileAway', params: { n: 1 } });
    await back.end();
    // Clean session drops it: the next persistent connect finds none.
    await (await device('pump-token-2', { clientId: 'pump-persistent', clean: true })).end();
    expect((await device('pump-token-2', options)).connack.sessionPresent).toBe(false);
  });
});
