// Content-Format as ThingsBoard's CoAP transport treats it: its JSON adaptor decodes the body whatever format
// the request declares (none, 0, 42 — the default of several embedded stacks — or 50), so a device written for
// it works through the gateway too. Only the formats the gateway cannot read (CBOR, EXI) are 4.15. Devices are
// libcoap's coap-client and a bare UDP socket; upstream a real mosquitto and the ThingsBoard double.
import * as coapPacket from 'coap-packet';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, post } from '../helpers/udp-device.js';

let broker: Mosquitto;
let gw: TestGateway;
let tb: ThingsBoardDouble;

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  tb.answerOwnRpcs(() => ({ time: 1_700_000_000_000 }));
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    provision: { mode: 'local', keys: [{ key: 'cf-key', secret: 'cf-secret', type: 'sensor' }] },
    thethings: { enabled: true, things: [{ thingToken: 'thing-boiler', device: 'Boiler-7' }] },
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

beforeEach(() => tb.clear());

/** coap-client's arguments for a POST of `body` with Content-Format `format` (none: no option at all). */
const postWith = (format: string, body: string): string[] => ['-m', 'post', ...(format === 'none' ? [] : ['-t', format]), '-e', body];

const FORMATS = ['none', '0', '42', '50'];

describe('any Content-Format whose body is JSON is read as JSON', () => {
  it.each(FORMATS)('telemetry with Content-Format %s: 2.01 and upstream', async (format) => {
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), postWith(format, `{"cf${format}":1}`));
    expect(result.response?.code).toBe('2.01');
    const [reading] = (await tb.waitForReadings('Boiler-7', 1)) as Array<{ values: unknown }>;
    expect(reading!.values).toEqual({ [`cf${format}`]: 1 });
  });

  it.each(FORMATS)('client attributes with Content-Format %s: 2.01 and upstream', async (format) => {
    const result = await coapClient(gw.uri('/api/v1/pump-token-2/attributes'), postWith(format, `{"cf${format}":"yes"}`));
    expect(result.response?.code).toBe('2.01');
    const [attributes] = await tb.waitFor('v1/gateway/attributes');
    expect(attributes!.json).toEqual({ 'Pump-2': { [`cf${format}`]: 'yes' } });
  });

  it.each(FORMATS)('an RPC reply with Content-Format %s: 2.01 and upstream', async (format) => {
    const id = 100 + FORMATS.indexOf(format);
    const result = await coapClient(gw.uri(`/api/v1/boiler-token-7/rpc/${id}`), postWith(format, '{"done":true}'));
    expect(result.response?.code).toBe('2.01');
    const [reply] = await tb.waitFor('v1/gateway/rpc');
    expect(reply!.json).toEqual({ device: 'Boiler-7', id, data: { done: true } });
  });

  it('a bare UDP device sending octet-stream (42), as embedded stacks do by default, on every JSON path', async () => {
    const device = await UdpDevice.open(gw.port);
    const octetStream = [{ name: 'Content-Format', value: Buffer.from([42]) }] as coapPacket.Option[];
    const ask = async (path: string, body: string): Promise<coapPacket.ParsedPacket | undefined> => {
      device.send(post(path, body, { extra: octetStream }));
      return device.nextPacket(5000);
    };
    try {
      expect((await ask('/api/v1/boiler-token-7/telemetry', '{"raw42":1}'))?.code).toBe('2.01');
      expect((await ask('/api/v1/boiler-token-7/claim', '{"secretKey":"k"}'))?.code).toBe('2.01');
      const rpc = await ask('/api/v1/boiler-token-7/rpc', '{"method":"getTime","params":{}}');
      expect(rpc?.code).toBe('2.05');
      expect(JSON.parse(rpc!.payload.toString())).toEqual({ time: 1_700_000_000_000 });
      const provisioned = await ask('/api/v1/provision', '{"deviceName":"CF-Sensor","provisionDeviceKey":"cf-key","provisionDeviceSecret":"cf-secret"}');
      expect(provisioned?.code).toBe('2.01');
      expect(JSON.parse(provisioned!.payload.toString())).toMatchObject({ status: 'SUCCESS' });
      // thethings.io's write goes through the same CoAP front end.
      expect((await ask('/v2/things/thing-boiler', '{"values":[{"key":"tt42","value":1}]}'))?.code).toBe('2.01');
    } finally {
      device.close();
    }
    const readings = (await tb.waitForReadings('Boiler-7', 2)) as Array<{ values: unknown }>;
    expect(readings.map((reading) => reading.values)).toEqual([{ raw42: 1 }, { tt42: 1 }]);
    expect((await tb.waitFor('v1/gateway/claim'))[0]!.json).toEqual({ 'Boiler-7': { secretKey: 'k' } });
  });

  it('a body that is not JSON is still 4.00, whatever the format says', async () => {
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), postWith('42', 'temperature=21.5'));
    expect(result.response?.code).toBe('4.00');
    expect(result.response?.payload).toMatch(/malformed JSON/);
    await sleep(200);
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
  });
});

describe('formats the gateway cannot read are 4.15, named', () => {
  const unreadable: Array<[number, string]> = [
    [60, 'application/cbor'],
    [63, 'application/cbor-seq'],
    [112, 'application/senml+cbor'],
    [113, 'application/sensml+cbor'],
    [47, 'application/exi'],
  ];

  it.each(unreadable)('Content-Format %i (%s) on telemetry: 4.15 naming it, nothing upstream', async (format, name) => {
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), postWith(String(format), '{"t":1}'));
    expect(result.response?.code).toBe('4.15');
    expect(result.response?.payload).toContain(`Content-Format ${format} (${name})`);
    await sleep(100);
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
  });
});
