// thethings.io's CoAP dialect (/v2/things) on the same core: libcoap's coap-client as a thethings.io device,
// a real mosquitto, and a ThingsBoard double that only publishes and subscribes on it.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient, spawnCoapClient, type RunningCoapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, emptyReply, get, observeOf, post } from '../helpers/udp-device.js';

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway;
const running: RunningCoapClient[] = [];

const write = (thingToken: string, values: unknown) =>
  coapClient(gw.uri(`/v2/things/${thingToken}`), ['-m', 'post', '-t', 'json', '-e', JSON.stringify({ values })]);
const payloadOf = (message: { payload: string | undefined } | undefined): unknown => JSON.parse(message?.payload ?? 'null');
/** thethings.io's documented answer to a write, byte for byte. */
const WRITTEN = '{"status":"Success","message":"Created"}';

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  tb.answerAttributeRequests({ 'Boiler-7': { shared: { setpoint: 21.5 } } });
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    thethings: {
      enabled: true,
      things: [{ thingToken: 'thing-boiler', device: 'Boiler-7', activationCode: 'ACT-BOILER' }],
      provisionKey: 'tt-key',
      provisionSecret: 'tt-secret',
    },
    provision: { mode: 'local', keys: [{ key: 'tt-key', secret: 'tt-secret', type: 'sensor' }] },
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await Promise.all(running.map((client) => client.stop()));
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

beforeEach(async () => {
  await Promise.all(running.splice(0).map((client) => client.stop()));
  tb.clear();
});

describe('thethings.io write and read', () => {
  it('lands the done-when write on v1/gateway/telemetry under the mapped device', async () => {
    const result = await coapClient(gw.uri('/v2/things/thing-boiler'), ['-m', 'post', '-e', '{"values":[{"key":"fun","value":"9000"}]}']);
    expect(result.response?.code).toBe('2.01');
    expect(result.response?.payload).toBe(WRITTEN);
    expect(result.response?.options.get('Content-Format')).toEqual(['application/json']);
    const [reading] = await tb.waitForReadings('Boiler-7', 1);
    expect((reading as { values: unknown }).values).toEqual({ fun: '9000' });
  });

  it('turns datetime into ts, and reads values back newest first within limit and dates', async () => {
    const values = [
      { key: 'temp', value: 20, datetime: '20261201100000' },
      { key: 'temp', value: 21, datetime: '20261201110000' },
      { key: 'temp', value: 22, datetime: '20261201120000' },
    ];
    expect((await write('thing-boiler', values)).response?.code).toBe('2.01');
    const readings = await tb.waitForReadings('Boiler-7', 3);
    expect(readings.map((reading) => (reading as { ts: number }).ts)).toEqual([
      Date.UTC(2026, 11, 1, 10),
      Date.UTC(2026, 11, 1, 11),
      Date.UTC(2026, 11, 1, 12),
    ]);
    const newest = await coapClient(gw.uri('/v2/things/thing-boiler/resources/temp'), ['-m', 'get']);
    expect(newest.response?.code).toBe('2.05');
    expect(payloadOf(newest.response)).toEqual([{ key: 'temp', value: 22, datetime: '2026-12-01T12:00:00.000Z' }]);
    const two = await coapClient(gw.uri('/v2/things/thing-boiler/resources/temp?limit=2&endDate=20261201113000'), ['-m', 'get']);
    expect((payloadOf(two.response) as Array<{ value: number }>).map((entry) => entry.value)).toEqual([21, 20]);
    // A registry access token serves as a thing token too.
    const byToken = await coapClient(gw.uri('/v2/things/boiler-token-7/resources/temp?limit=100&startDate=20261201110000'), ['-m', 'get']);
    expect((payloadOf(byToken.response) as Array<{ value: number }>).map((entry) => entry.value)).toEqual([22, 21]);
    const none = await coapClient(gw.uri('/v2/things/thing-boiler/resources/nothing'), ['-m', 'get']);
    expect(payloadOf(none.response)).toEqual([]);
  });

  it('reads between a startDate and an endDate, and never a date that is not one', async () => {
    const values = [10, 11, 12, 13].map((hour) => ({ key: 'level', value: hour, datetime: `202612021${hour - 10}0000` }));
    expect((await write('thing-boiler', values)).response?.code).toBe('2.01');
    const between = await coapClient(gw.uri('/v2/things/thing-boiler/resources/level?limit=10&startDate=20261202110000&endDate=20261202120000'), ['-m', 'get']);
    expect(between.response?.payload).toBe(
      '[{"key":"level","value":12,"datetime":"2026-12-02T12:00:00.000Z"},{"key":"level","value":11,"datetime":"2026-12-02T11:00:00.000Z"}]',
    );
    const malformed = await coapClient(gw.uri('/v2/things/thing-boiler/resources/level?startDate=2026120211'), ['-m', 'get']);
    expect(malformed.response?.code).toBe('4.00');
    expect(malformed.response?.options.get('Content-Format')).toEqual(['application/json']);
    expect(payloadOf(malformed.response)).toEqual({ status: 'error', message: expect.stringMatching(/startDate must be YYYYMMDDHHmmss/) });
  });

  it('answers every mistake with a code and {"status":"error","message":...} as JSON, and publishes nothing', async () => {
    const cases: Array<[string, string, string[], string, RegExp]> = [
      ['unknown thing token', '/v2/things/no-such-thing', ['-m', 'post', '-e', '{"values":[{"key":"a","value":1}]}'], '4.01', /unknown thing token/],
      ['not a write', '/v2/things/thing-boiler', ['-m', 'post', '-e', '{"fun":1}'], '4.00', /expected \{"values"/],
      ['bad datetime', '/v2/things/thing-boiler', ['-m', 'post', '-e', '{"values":[{"key":"a","value":1,"datetime":"2026-13"}]}'], '4.00', /datetime must be YYYYMMDDHHmmss/],
      ['key with a space', '/v2/things/thing-boiler', ['-m', 'post', '-e', '{"values":[{"key":"room temp","value":1}]}'], '4.00', /values\[0\]\.key may only hold letters, digits/],
      ['key with a slash', '/v2/things/thing-boiler', ['-m', 'post', '-e', '{"values":[{"key":"ok.k-1_x","value":1},{"key":"a/b","value":2}]}'], '4.00', /values\[1\]\.key/],
      ['limit over 100', '/v2/things/thing-boiler/resources/temp?limit=101', ['-m', 'get'], '4.00', /limit must be a whole number from 1 to 100/],
      ['unknown path', '/v2/things/thing-boiler/other', ['-m', 'get'], '4.04', /no such path/],
      ['wrong method', '/v2/things/thing-boiler/resources/temp', ['-m', 'put', '-e', '1'], '4.05', /takes GET/],
      ['RPC reply to no number', '/v2/things/thing-boiler/rpc/abc', ['-m', 'post', '-e', '{"ok":true}'], '4.00', /.+/],
      ['empty activation code', '/v2/things', ['-m', 'post', '-e', '{"activationCode":""}'], '4.00', /activationCode/],
    ];
    for (const [name, path, args, code, message] of cases) {
      const result = await coapClient(gw.uri(path), args);
      expect({ name, code: result.response?.code, format: result.response?.options.get('Content-Format') }).toEqual({ name, code, format: ['application/json'] });
      const body = payloadOf(result.response) as { status: string; message: string };
      expect({ name, body }).toEqual({ name, body: { status: 'error', message: expect.stringMatching(message) } });
    }
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
  });
});

describe('thethings.io activation', () => {
  it('exchanges a configured activation code for its thing token', async () => {
    const result = await coapClient(gw.uri('/v2/things'), ['-m', 'post', '-e', '{"activationCode":"ACT-BOILER"}']);
    expect(result.response?.code).toBe('2.01');
    expect(payloadOf(result.response)).toEqual({ status: 'created', thingToken: 'thing-boiler' });
  });

  it('provisions a device for an unknown code; its token writes at once, and activating again gives it back', async () => {
    const first = await coapClient(gw.uri('/v2/things'), ['-m', 'post', '-e', '{"activationCode":"NEW-THING-1"}']);
    expect(first.response?.code).toBe('2.01');
    const { thingToken } = payloadOf(first.response) as { thingToken: string };
    expect(thingToken).toMatch(/^\S{8,}$/);
    expect((await write(thingToken, [{ key: 'hello', value: true }])).response?.code).toBe('2.01');
    await tb.waitForReadings('NEW-THING-1', 1);
    expect(tb.on('v1/gateway/connect').map((message) => message.json)).toContainEqual({ device: 'NEW-THING-1', type: 'sensor' });
    const again = await coapClient(gw.uri('/v2/things'), ['-m', 'post', '-e', '{"activationCode":"NEW-THING-1"}']);
    expect(payloadOf(again.response)).toEqual({ status: 'created', thingToken });
  });

  it('never hands out the token of a configured device whose name is sent as an activation code', async () => {
    const result = await coapClient(gw.uri('/v2/things'), ['-m', 'post', '-e', '{"activationCode":"Pump-2"}']);
    expect(result.response?.code).toBe('4.00');
    expect(payloadOf(result.response)).toEqual({ status: 'error', message: expect.stringMatching(/activation refused: .*configuration file/) });
    expect(result.response?.payload).not.toContain('pump-token-2');
  });
});

describe('thethings.io subscribe', () => {
  it('delivers shared-attribute pushes and RPCs as thethings.io arrays; the reply goes upstream', async () => {
    const client = spawnCoapClient(gw.uri('/v2/things/thing-boiler'), ['-s', '30']);
    running.push(client);
    const [first] = await client.waitForResponses(1);
    expect(first!.code).toBe('2.05');
    expect(first!.options.get('Observe')).toBeDefined();
    await eventually(() => tb.on('v1/gateway/connect').length > 0 || gw.logs.some((line) => line.msg === 'observation started'), 3000, 'the observation');

    await tb.publish('v1/gateway/attributes', { device: 'Boiler-7', data: { setpoint: 23 } });
    const [, push] = await client.waitForResponses(2, 3000);
    expect(payloadOf(push)).toEqual([{ key: 'setpoint', value: 23 }]);

    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 77, method: 'reboot', params: { delay: 5 } } });
    const [, , rpc] = await client.waitForResponses(3, 3000);
    expect(payloadOf(rpc)).toEqual([{ key: 'rpc', value: { id: 77, method: 'reboot', params: { delay: 5 } } }]);

    const reply = await coapClient(gw.uri('/v2/things/thing-boiler/rpc/77'), ['-m', 'post', '-e', '{"ok":true}']);
    expect(reply.response?.code).toBe('2.01');
    expect(reply.response?.payload).toBe(WRITTEN);
    const upstream = await eventually(() => tb.on('v1/gateway/rpc').find((message) => Object.hasOwn(message.json as object, 'id')));
    expect(upstream.json).toEqual({ device: 'Boiler-7', id: 77, data: { ok: true } });
  });

  it("notifies the thing's own writes to its subscription, each value with its write's datetime", async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      device.send(get('/v2/things/thing-boiler', { observe: 0, token: Buffer.from('tt') }));
      const registered = await device.nextPacket();
      expect(registered).toMatchObject({ ack: true, code: '2.05' });
      expect(observeOf(registered!)).toBe(0);

      device.send(post('/v2/things/thing-boiler', '{"values":[{"key":"fun","value":"9000","datetime":"20150130153533"},{"key":"temp","value":21.5}]}'));
      // The write's own answer and the notification may come in either order.
      const [first, second] = [await device.nextPacket(), await device.nextPacket()];
      const answer = [first, second].find((packet) => packet?.ack);
      const notification = [first, second].find((packet) => packet && !packet.ack);
      expect(answer).toMatchObject({ code: '2.01' });
      expect(answer!.payload.toString()).toBe(WRITTEN);
      expect(notification).toMatchObject({ code: '2.05', token: Buffer.from('tt') });
      expect(observeOf(notification!)).toBeGreaterThan(0);
      const notified = JSON.parse(notification!.payload.toString()) as Array<{ key: string; value: unknown; datetime: string }>;
      expect(notified[0]).toEqual({ key: 'fun', value: '9000', datetime: '2015-01-30T15:35:33.000Z' });
      // A value without a datetime carries the time the gateway received it.
      expect(notified[1]).toMatchObject({ key: 'temp', value: 21.5 });
      expect(notified[1]!.datetime).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      expect(Math.abs(Date.parse(notified[1]!.datetime) - Date.now())).toBeLessThan(10_000);
      if (notification!.confirmable) device.send(emptyReply('ack', notification!.messageId));

      // Shared attributes still come in the same array form on the same relation.
      await tb.publish('v1/gateway/attributes', { device: 'Boiler-7', data: { setpoint: 24 } });
      const push = await device.nextPacket(3000);
      expect(JSON.parse(push!.payload.toString())).toEqual([{ key: 'setpoint', value: 24 }]);
      if (push!.confirmable) device.send(emptyReply('ack', push!.messageId));
    } finally {
      device.send(get('/v2/things/thing-boiler', { observe: 1, token: Buffer.from('tt') }));
      await sleep(50);
      device.close();
    }
  });
});
