// Device → gateway → real mosquitto → ThingsBoard double, with libcoap's coap-client as the device.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { gatewayApiViolations } from '../helpers/gateway-api-validator.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

let broker: Mosquitto;
let gw: TestGateway;
let tb: ThingsBoardDouble;

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  gw = await startTestGateway({ coap: { host: '::', port: 0 }, upstream: { url: broker.url, accessToken: 'gateway-token' } });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

beforeEach(() => tb.clear());

describe('telemetry', () => {
  it('answers 2.01 after the broker has it, announcing the device first', async () => {
    const before = Date.now();
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"temperature":21.5}']);
    expect(result.response?.code).toBe('2.01');
    expect(result.response?.type).toBe('ACK');

    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    const topics = tb.received.map((m) => m.topic);
    expect(topics.indexOf('v1/gateway/connect')).toBeLessThan(topics.indexOf('v1/gateway/telemetry'));
    expect(tb.on('v1/gateway/connect')[0]!.json).toEqual({ device: 'Boiler-7', type: 'thermostat' });
    const body = telemetry!.json as Record<string, Array<{ ts: number; values: unknown }>>;
    expect(Object.keys(body)).toEqual(['Boiler-7']);
    expect(body['Boiler-7']).toHaveLength(1);
    expect(body['Boiler-7']![0]!.values).toEqual({ temperature: 21.5 });
    // Stamped with the gateway's receive time when the device sent none.
    expect(body['Boiler-7']![0]!.ts).toBeGreaterThanOrEqual(before);
    expect(body['Boiler-7']![0]!.ts).toBeLessThanOrEqual(Date.now());
  });

  it('keeps the device timestamp and accepts arrays of both forms', async () => {
    const payload = JSON.stringify([{ ts: 1700000000000, values: { a: 1 } }, { b: 'x', c: null }]);
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', payload]);
    expect(result.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    const records = (telemetry!.json as Record<string, Array<{ ts: number; values: unknown }>>)['Boiler-7']!;
    expect(records[0]).toEqual({ ts: 1700000000000, values: { a: 1 } });
    expect(records[1]!.values).toEqual({ b: 'x' });
  });

  it('answers NON requests with a NON 2.01 after the PUBACK', async () => {
    const result = await coapClient(gw.uri('/api/v1/pump-token-2/telemetry'), ['-N', '-m', 'post', '-e', '{"flow":3}']);
    expect(result.response?.type).toBe('NON');
    expect(result.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect((telemetry!.json as Record<string, Array<{ values: unknown }>>)['Pump-2']![0]!.values).toEqual({ flow: 3 });
  });

  it('reassembles a Block1 upload and publishes it whole, once', async () => {
    const values: Record<string, number> = {};
    for (let i = 0; i < 60; i++) values[`sensor_${String(i).padStart(2, '0')}`] = i * 1.5;
    const file = join(mkdtempSync(join(tmpdir(), 'coap2mqtt-block1-')), 'body.json');
    writeFileSync(file, JSON.stringify(values));
    const requestsBefore = gw.gateway.messageLayer.stats.requests;
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-b', '64', '-f', file]);
    expect(result.response?.code).toBe('2.01');
    expect(result.response?.options.get('Block1')?.[0]).toMatch(/^\d+\/_\/64$/);
    // coap-client logs only the first and last block at -v 6; the gateway counted every one.
    expect(gw.gateway.messageLayer.stats.requests - requestsBefore).toBe(Math.ceil(JSON.stringify(values).length / 64));
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect((telemetry!.json as Record<string, Array<{ values: unknown }>>)['Boiler-7']![0]!.values).toEqual(values);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(1);
  });

  it('takes a path sent as one Uri-Path option holding slashes, and feature names in any case', async () => {
    // -O 11,... adds a raw Uri-Path option; the URI itself then has no path.
    const result = await coapClient(gw.uri(''), ['-m', 'post', '-O', '11,api/v1/boiler-token-7/TELEMETRY', '-e', '{"x":1}']);
    expect(result.response?.code).toBe('2.01');
    await tb.waitFor('v1/gateway/telemetry');
  });

  it('serves IPv4 and IPv6 devices on the same socket', async () => {
    const v6 = await coapClient(`coap://[::1]:${gw.port}/api/v1/boiler-token-7/telemetry`, ['-m', 'post', '-e', '{"v6":1}']);
    const v4 = await coapClient(`coap://127.0.0.1:${gw.port}/api/v1/boiler-token-7/telemetry`, ['-m', 'post', '-e', '{"v4":1}']);
    expect(v6.response?.code).toBe('2.01');
    expect(v4.response?.code).toBe('2.01');
    await tb.waitFor('v1/gateway/telemetry', 2);
  });
});

describe('payload bytes and numbers', () => {
  const fileOf = (bytes: Buffer): string => {
    const file = join(mkdtempSync(join(tmpdir(), 'coap2mqtt-bytes-')), 'body.json');
    writeFileSync(file, bytes);
    return file;
  };

  it('answers 4.00 to a body that is not UTF-8, saying at which byte, and publishes nothing', async () => {
    const body = Buffer.concat([Buffer.from('{"label":"caf'), Buffer.from([0xe9]), Buffer.from('"}')]); // Latin-1 "é"
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-f', fileOf(body)]);
    expect(result.response?.code).toBe('4.00');
    expect(result.response?.payload).toMatch(/not valid UTF-8: byte 13 \(0xe9\)/);
    const key = Buffer.concat([Buffer.from('{"k'), Buffer.from([0xff]), Buffer.from('":1}')]);
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/attributes'), ['-m', 'post', '-f', fileOf(key)])).response?.code).toBe('4.00');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
    expect(tb.on('v1/gateway/attributes')).toHaveLength(0);
  });

  it('answers 4.02 to a Uri-Query that is not UTF-8 instead of asking ThingsBoard for a key the device never named', async () => {
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/attributes?sharedKeys=setpoint%FF'), ['-m', 'get', '-B', '3']);
    expect(result.response?.code).toBe('4.02');
    expect(result.response?.payload).toMatch(/Uri-Query .*not valid UTF-8/);
    expect(tb.on('v1/gateway/attributes/request')).toHaveLength(0);
  });

  it('takes every 64-bit integer to ThingsBoard digit for digit, and a large double as a double', async () => {
    const body = '{"max":9223372036854775807,"min":-9223372036854775808,"odd":9007199254740993,"huge":1.7e308}';
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', body]);
    expect(result.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect(telemetry!.text).toMatch(/"values":\{"max":9223372036854775807,"min":-9223372036854775808,"odd":9007199254740993,"huge":1\.7e\+308\}/);
    expect(gatewayApiViolations(tb.received)).toEqual([]);
    const beyond = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"n":9223372036854775808}']);
    expect(beyond.response?.code).toBe('4.00');
    expect(beyond.response?.payload).toMatch(/beyond the 64-bit range/);
  });
});

describe('client attributes', () => {
  it('publishes a JSON object on v1/gateway/attributes', async () => {
    const result = await coapClient(gw.uri('/api/v1/pump-token-2/attributes'), ['-m', 'post', '-e', '{"fw_version":"1.0","battery":87}']);
    expect(result.response?.code).toBe('2.01');
    const [attributes] = await tb.waitFor('v1/gateway/attributes');
    expect(attributes!.json).toEqual({ 'Pump-2': { fw_version: '1.0', battery: 87 } });
  });
});

describe('errors a device can cause', () => {
  const cases: Array<[string, string, string[], string, RegExp]> = [
    ['unknown token', '/api/v1/no-such-token/telemetry', ['-m', 'post', '-e', '{"t":1}'], '4.01', /unknown access token/],
    ['no token', '/api/v1/telemetry', ['-m', 'post', '-e', '{"t":1}'], '4.01', /no access token/],
    ['malformed JSON', '/api/v1/boiler-token-7/telemetry', ['-m', 'post', '-e', '{"t":'], '4.00', /malformed JSON/],
    ['empty body', '/api/v1/boiler-token-7/telemetry', ['-m', 'post'], '4.00', /empty payload/],
    ['array of primitives', '/api/v1/boiler-token-7/telemetry', ['-m', 'post', '-e', '[1,2]'], '4.00', /must be objects/],
    ['attributes not an object', '/api/v1/boiler-token-7/attributes', ['-m', 'post', '-e', '[{"a":1}]'], '4.00', /must be a JSON object/],
    ['bad ts', '/api/v1/boiler-token-7/telemetry', ['-m', 'post', '-e', '{"ts":"yesterday","values":{"a":1}}'], '4.00', /ts must be an integer/],
    ['GET on telemetry', '/api/v1/boiler-token-7/telemetry', ['-m', 'get'], '4.00', /POST only/],
    ['unknown feature', '/api/v1/boiler-token-7/telemetrie', ['-m', 'post', '-e', '{"t":1}'], '4.00', /unknown feature/],
    ['unknown top-level path', '/hello/world', ['-m', 'post', '-e', '{"t":1}'], '4.04', /no such path/],
    ['method other than GET/POST', '/api/v1/boiler-token-7/telemetry', ['-m', 'put', '-e', '{"t":1}'], '4.05', /only GET and POST/],
    ['unsupported Content-Format', '/api/v1/boiler-token-7/telemetry', ['-m', 'post', '-t', '60', '-e', '{"t":1}'], '4.15', /JSON \(50\)/],
    ['GET on provision', '/api/v1/provision', ['-m', 'get'], '4.00', /POST only/],
    ['provision with malformed JSON', '/api/v1/provision', ['-m', 'post', '-e', '{"provisionDeviceKey":'], '4.00', /"status":"FAILURE"/],
    ['firmware with a non-numeric chunk', '/fw/boiler-token-7?title=T&version=1&size=64&chunk=x', ['-m', 'get'], '4.00', /chunk must be a whole number/],
  ];

  it.each(cases)('%s', async (_name, path, args, code, diagnostic) => {
    const result = await coapClient(gw.uri(path), args);
    expect(result.response?.code).toBe(code);
    expect(result.response?.payload).toMatch(diagnostic);
  });

  it('answers an oversized single-datagram body with 4.13 and Size1', async () => {
    const body = JSON.stringify({ blob: 'x'.repeat(17_000) });
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', body]);
    expect(result.response?.code).toBe('4.13');
    expect(result.response?.options.get('Size1')).toEqual(['16384']);
  });

  it('answers an oversized Block1 upload with 4.13 and Size1', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'coap2mqtt-block1-')), 'big.json');
    writeFileSync(file, JSON.stringify({ blob: 'y'.repeat(20_000) }));
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-b', '1024', '-f', file]);
    expect(result.response?.code).toBe('4.13');
    expect(result.response?.options.get('Size1')).toEqual(['16384']);
  });

  it('publishes nothing for any of them and never logs a token', async () => {
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
    const logText = JSON.stringify(gw.logs);
    for (const token of ['boiler-token-7', 'pump-token-2', 'no-such-token', 'gateway-token']) expect(logText).not.toContain(token);
    expect(logText).toContain('unknown access token');
  });
});
