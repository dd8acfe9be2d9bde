// ThingsBoard's HTTP device API on the gateway (deviceHttp.*): curl and Node's fetch as Wi-Fi devices, a real
// mosquitto, and a ThingsBoard double that only publishes and subscribes on it.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { gatewayApiViolations } from '../helpers/gateway-api-validator.js';
import { HeldConnections } from '../helpers/held-connections.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, freeTcpPort, sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

const run = promisify(execFile);

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway;
let base: string;
const images = mkdtempSync(join(tmpdir(), 'coap2mqtt-http-images-'));
const attributes: Record<string, { client?: Record<string, unknown>; shared?: Record<string, unknown> }> = {
  'Boiler-7': { shared: { setpoint: 21.5 }, client: { firmware: '1.0' } },
};

function http(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${base}${path}`, init);
}

const post = (path: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<Response> =>
  http(path, { method: 'POST', body, headers });

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  tb.answerAttributeRequests(attributes);
  tb.answerOwnRpcs((request) => ({ echoed: request.params }));
  await tb.answerProvisioning((request) =>
    request['provisionDeviceSecret'] === 'right'
      ? { status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN', credentialsValue: 'http-issued-token' }
      : { status: 'NOT_FOUND', errorMsg: 'Provision data was not found!' },
  );
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    deviceHttp: { enabled: true, host: '127.0.0.1', port: 0, maxBodyBytes: 1024 },
    sessions: { attributeRequestTimeoutMs: 1000, clientRpcTimeoutMs: 1000 },
    firmware: { dir: images },
  });
  await gw.upstreamConnected();
  const address = gw.gateway.deviceHttpAddress!;
  base = `http://${address.address}:${address.port}`;
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
  rmSync(images, { recursive: true, force: true });
});

beforeEach(() => tb.clear());

describe('HTTP device API: uplinks', () => {
  it('takes curl\'s telemetry (the done-when command) to v1/gateway/telemetry under the device', async () => {
    const { stdout } = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-d', '{"t":1}', `${base}/api/v1/boiler-token-7/telemetry`]);
    expect(stdout).toBe('200');
    const [reading] = await tb.waitForReadings('Boiler-7', 1);
    expect((reading as { values: unknown }).values).toEqual({ t: 1 });
  });

  it('publishes client attributes and claims', async () => {
    expect((await post('/api/v1/pump-token-2/attributes', '{"fw":"2.1"}')).status).toBe(200);
    const [message] = await tb.waitFor('v1/gateway/attributes');
    expect(message!.json).toEqual({ 'Pump-2': { fw: '2.1' } });
    expect((await post('/api/v1/pump-token-2/claim', '{"secretKey":"k","durationMs":60000}')).status).toBe(200);
    expect((await tb.waitFor('v1/gateway/claim'))[0]!.json).toEqual({ 'Pump-2': { secretKey: 'k', durationMs: 60000 } });
  });

  it('answers each mistake with the status a ThingsBoard HTTP client expects, and a diagnostic', async () => {
    const cases: Array<[string, Promise<Response>, number, RegExp]> = [
      ['unknown token', post('/api/v1/no-such-token/telemetry', '{"t":1}'), 401, /unknown access token/],
      ['bad JSON', post('/api/v1/boiler-token-7/telemetry', '{"t":'), 400, /JSON/],
      ['unknown path', http('/api/v2/x'), 404, /no such path/],
      ['unknown feature', post('/api/v1/boiler-token-7/nothing', '{}'), 404, /no such path/],
      ['wrong method', http('/api/v1/boiler-token-7/telemetry'), 405, /use POST/],
      ['oversized body', post('/api/v1/boiler-token-7/telemetry', JSON.stringify({ blob: 'x'.repeat(2000) })), 413, /deviceHttp\.maxBodyBytes/],
      ['unsupported content type', post('/api/v1/boiler-token-7/telemetry', '<t/>', { 'content-type': 'application/xml' }), 415, /send JSON/],
      ['bad poll timeout', http('/api/v1/boiler-token-7/rpc?timeout=soon'), 400, /timeout must be a whole number/],
    ];
    for (const [name, pending, status, diagnostic] of cases) {
      const response = await pending;
      expect({ name, status: response.status }).toEqual({ name, status });
      expect(await response.text()).toMatch(diagnostic);
    }
    expect((await http('/api/v1/boiler-token-7/telemetry')).headers.get('allow')).toBe('POST');
    await sleep(200);
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
  });
});

describe('HTTP device API: payload bytes and numbers', () => {
  it('answers 400 to a body that is not UTF-8, saying at which byte, and publishes nothing', async () => {
    const body = Buffer.concat([Buffer.from('{"label":"caf'), Buffer.from([0xe9]), Buffer.from('"}')]);
    const response = await http('/api/v1/boiler-token-7/telemetry', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    expect(response.status).toBe(400);
    expect(await response.text()).toMatch(/not valid UTF-8: byte 13 \(0xe9\)/);
    await sleep(200);
    expect(tb.on('v1/gateway/telemetry')).toHaveLength(0);
  });

  it('answers 400 to a query that is not percent-encoded UTF-8 instead of asking ThingsBoard for a key the device never named', async () => {
    const response = await http('/api/v1/boiler-token-7/attributes?sharedKeys=setpoint%FF');
    expect(response.status).toBe(400);
    expect(await response.text()).toMatch(/query is not valid percent-encoded UTF-8/);
    expect(tb.on('v1/gateway/attributes/request')).toHaveLength(0);
  });

  it('takes the largest 64-bit integer to ThingsBoard digit for digit', async () => {
    expect((await post('/api/v1/boiler-token-7/telemetry', '{"max":9223372036854775807,"huge":1.7e308}')).status).toBe(200);
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect(telemetry!.text).toMatch(/"values":\{"max":9223372036854775807,"huge":1\.7e\+308\}/);
    expect((await post('/api/v1/boiler-token-7/attributes', '{"serial":9223372036854775807}')).status).toBe(200);
    expect((await tb.waitFor('v1/gateway/attributes'))[0]!.text).toBe('{"Boiler-7":{"serial":9223372036854775807}}');
    expect(gatewayApiViolations(tb.received)).toEqual([]);
  });
});

describe('HTTP device API: reads and RPC', () => {
  it('reads attributes as ThingsBoard answers them', async () => {
    const response = await http('/api/v1/boiler-token-7/attributes?clientKeys=firmware&sharedKeys=setpoint');
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ client: { firmware: '1.0' }, shared: { setpoint: 21.5 } });
    expect((await http('/api/v1/boiler-token-7/attributes?sharedKeys=nothing')).status).toBe(404);
  });

  it('returns a server-side RPC to a long-poll, and takes the reply back upstream', async () => {
    const poll = http('/api/v1/boiler-token-7/rpc?timeout=20000');
    await sleep(300);
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 41, method: 'setValve', params: { open: true } } });
    const response = await poll;
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ id: 41, method: 'setValve', params: { open: true } });
    expect((await post('/api/v1/boiler-token-7/rpc/41', '{"done":true}')).status).toBe(200);
    // The double hears its own RPC on the topic too; the reply is the second message.
    expect((await tb.waitFor('v1/gateway/rpc', 2))[1]!.json).toEqual({ device: 'Boiler-7', id: 41, data: { done: true } });
  });

  it('keeps RPCs that arrive between polls, one per poll, oldest first', async () => {
    await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 1, method: 'a', params: {} } });
    await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 2, method: 'b', params: {} } });
    await sleep(300);
    expect(await (await http('/api/v1/pump-token-2/rpc?timeout=2000')).json()).toMatchObject({ id: 1, method: 'a' });
    expect(await (await http('/api/v1/pump-token-2/rpc?timeout=2000')).json()).toMatchObject({ id: 2, method: 'b' });
  });

  it('keeps an RPC for the next poll when the client gave up its poll before it came', async () => {
    const abandoned = new AbortController();
    const poll = http('/api/v1/pump-token-2/rpc?timeout=20000', { signal: abandoned.signal }).catch((error: Error) => error.name);
    await sleep(200);
    abandoned.abort();
    expect(await poll).toBe('AbortError');
    await sleep(200);
    await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 9, method: 'late', params: { at: 1 } } });
    await sleep(200);
    expect(await (await http('/api/v1/pump-token-2/rpc?timeout=2000')).json()).toEqual({ id: 9, method: 'late', params: { at: 1 } });
  });

  it('ends a long-poll with 408 and an empty body when nothing comes', async () => {
    const response = await http('/api/v1/pump-token-2/rpc?timeout=300');
    expect(response.status).toBe(408);
    expect(await response.text()).toBe('');
  });

  it('returns one shared-attribute push to /attributes/updates', async () => {
    const poll = http('/api/v1/boiler-token-7/attributes/updates?timeout=20000');
    await sleep(300);
    await tb.publish('v1/gateway/attributes', { device: 'Boiler-7', data: { setpoint: 23 } });
    const response = await poll;
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ setpoint: 23 });
  });

  it('answers a client-side RPC with the rule chain\'s reply', async () => {
    const response = await post('/api/v1/boiler-token-7/rpc', '{"method":"getTime","params":{"tz":"UTC"}}');
    expect(response.status).toBe(200);
    // The gateway asks for the device on its own RPC connection: {"device", "params"} (docs/thingsboard.md).
    expect(await response.json()).toEqual({ echoed: { device: 'Boiler-7', params: { tz: 'UTC' } } });
  });

  it('provisions a device whose token then works for telemetry', async () => {
    const refused = await post('/api/v1/provision', JSON.stringify({ deviceName: 'Http-1', provisionDeviceKey: 'k', provisionDeviceSecret: 'wrong' }));
    expect(refused.status).toBe(200);
    expect(await refused.json()).toMatchObject({ status: 'NOT_FOUND' });
    const answer = await post('/api/v1/provision', JSON.stringify({ deviceName: 'Http-1', provisionDeviceKey: 'k', provisionDeviceSecret: 'right' }));
    expect(await answer.json()).toMatchObject({ status: 'SUCCESS', credentialsValue: 'http-issued-token' });
    expect((await post('/api/v1/http-issued-token/telemetry', '{"t":2}')).status).toBe(200);
    await tb.waitForReadings('Http-1', 1);
  });

  it('serves an assigned firmware image, whole or one chunk', async () => {
    const image = randomBytes(3000);
    writeFileSync(join(images, 'pump-fw-4.bin'), image);
    const data = { fw_title: 'pump-fw', fw_version: '4', fw_size: 3000, fw_checksum_algorithm: 'SHA256', fw_checksum: createHash('sha256').update(image).digest('hex') };
    attributes['Pump-2'] = { shared: data };
    await tb.publish('v1/gateway/attributes', { device: 'Pump-2', data });
    const whole = await http('/api/v1/pump-token-2/firmware?title=pump-fw&version=4');
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-type')).toBe('application/octet-stream');
    expect(Buffer.from(await whole.arrayBuffer()).equals(image)).toBe(true);
    const chunk = await http('/api/v1/pump-token-2/firmware?title=pump-fw&version=4&size=1000&chunk=2');
    expect(Buffer.from(await chunk.arrayBuffer()).equals(image.subarray(2000))).toBe(true);
    expect((await http('/api/v1/pump-token-2/firmware?title=pump-fw&version=3')).status).toBe(400);
    expect((await http('/api/v1/pump-token-2/software?title=x&version=1')).status).toBe(404);
  });
});

describe('HTTP device API: limits and metrics', () => {
  it('answers 429 with Retry-After over the device\'s rate limit, and counts answers by status', async () => {
    const limited = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token' },
      deviceHttp: { enabled: true, host: '127.0.0.1', port: 0 },
      limits: { deviceRequestsPerSecond: 1, deviceBurst: 2 },
    });
    try {
      const address = limited.gateway.deviceHttpAddress!;
      const url = `http://${address.address}:${address.port}/api/v1/boiler-token-7/telemetry`;
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await fetch(url, { method: 'POST', body: '{"n":1}' })).status);
      expect(statuses).toEqual([200, 200, 429]);
      const refused = await fetch(url, { method: 'POST', body: '{"n":2}' });
      expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
      const metrics = limited.gateway.httpAddress!;
      const text = await (await fetch(`http://${metrics.address}:${metrics.port}/metrics`)).text();
      expect(text).toMatch(/^coap2mqtt_device_http_requests_total\{status="200"\} 2$/m);
      expect(text).toMatch(/^coap2mqtt_device_http_requests_total\{status="429"\} 2$/m);
      expect(text).toMatch(/^coap2mqtt_device_http_polls 0$/m);
    } finally {
      await limited.stop();
    }
  });

  it('answers 503 with Retry-After while ThingsBoard is unreachable and there is no outbox, keeping nothing', async () => {
    const deadBroker = `mqtt://127.0.0.1:${await freeTcpPort()}`;
    const cut = await startTestGateway({
      upstream: { url: deadBroker, accessToken: 'gateway-token' },
      outbox: { enabled: false },
      deviceHttp: { enabled: true, host: '127.0.0.1', port: 0 },
    });
    try {
      const address = cut.gateway.deviceHttpAddress!;
      const response = await fetch(`http://${address.address}:${address.port}/api/v1/boiler-token-7/telemetry`, { method: 'POST', body: '{"t":1}' });
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).toMatch(/^\d+$/);
      expect(await response.text()).toMatch(/not connected to ThingsBoard/);
    } finally {
      await cut.stop();
    }
  });
});


describe('HTTP device API: connection floods', () => {
  const scrape = async (gateway: TestGateway): Promise<string> => {
    const address = gateway.gateway.httpAddress!;
    return (await fetch(`http://${address.address}:${address.port}/metrics`)).text();
  };
  const closedFor = (metrics: string, reason: string): number =>
    Number(new RegExp(`^coap2mqtt_device_http_connections_closed_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? NaN);
  const curlPost = async (url: string, body: string, from?: string): Promise<string> =>
    (await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...(from ? ['--interface', from] : []), '-X', 'POST', '-d', body, url]).catch((error: { stdout: string }) => error)).stdout;

  it('keeps room for a real POST while more idle and slowloris connections than deviceHttp.maxConnections are open', async () => {
    const flooded = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token' },
      deviceHttp: { enabled: true, host: '127.0.0.1', port: 0, maxConnections: 20 },
    });
    const floods: HeldConnections[] = [];
    try {
      await flooded.upstreamConnected();
      const { address, port } = flooded.gateway.deviceHttpAddress!;
      floods.push(await HeldConnections.open(port, address, 15, { kind: 'silent' }));
      floods.push(await HeldConnections.open(port, address, 15, { kind: 'dribble', everyMs: 100 }));
      expect(await curlPost(`http://${address}:${port}/api/v1/boiler-token-7/telemetry`, '{"flooded":1}')).toBe('200');
      const [reading] = await tb.waitForReadings('Boiler-7', 1);
      expect((reading as { values: unknown }).values).toEqual({ flooded: 1 });
      // The flood made room by closing its own oldest connections, never more than the bound at once.
      expect(floods.reduce((open, flood) => open + flood.open, 0)).toBeLessThanOrEqual(20);
      const metrics = await scrape(flooded);
      expect(closedFor(metrics, 'evicted')).toBeGreaterThanOrEqual(10);
      expect(metrics).toMatch(/^coap2mqtt_device_http_connections \d+$/m);
      const warnings = flooded.logs.filter((line) => line.level === 'warn' && line.component === 'device-http');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.msg).toMatch(/deviceHttp\.maxConnections/);
    } finally {
      for (const flood of floods) flood.close();
      await flooded.stop();
    }
  });

  it('closes connections that have not sent a whole request head within 5 s, silent or dribbling', async () => {
    const { address, port } = gw.gateway.deviceHttpAddress!;
    const silent = await HeldConnections.open(port, address, 5, { kind: 'silent' });
    const dribbling = await HeldConnections.open(port, address, 5, { kind: 'dribble', everyMs: 200 });
    try {
      await sleep(3000);
      expect(silent.open + dribbling.open).toBe(10);
      await eventually(() => silent.closed === 5 && dribbling.closed === 5, 4000, 'the gateway to close the stalled connections');
      expect(closedFor(await scrape(gw), 'timeout')).toBeGreaterThanOrEqual(10);
    } finally {
      silent.close();
      dribbling.close();
    }
  });

  it('bounds connections per address (deviceHttp.maxConnectionsPerAddress): one address holding requests open cannot keep another out', async () => {
    const flooded = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token' },
      deviceHttp: { enabled: true, host: '127.0.0.1', port: 0, maxConnections: 30, maxConnectionsPerAddress: 5 },
    });
    let hog: HeldConnections | undefined;
    try {
      await flooded.upstreamConnected();
      const { address, port } = flooded.gateway.deviceHttpAddress!;
      // Whole request heads announcing a body that never comes: requests in progress, not idle.
      const head = 'POST /api/v1/boiler-token-7/telemetry HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\n';
      hog = await HeldConnections.open(port, address, 40, { kind: 'head', bytes: head });
      await eventually(() => hog!.open === 5, 3000, 'the connections over the address\'s bound to be refused');
      expect(await curlPost(`http://${address}:${port}/api/v1/pump-token-2/telemetry`, '{"other":1}', '127.0.0.2')).toBe('200');
      await tb.waitForReadings('Pump-2', 1);
      // Refused, or evicted when a newcomer came before the server had read a held connection's head.
      const metrics = await scrape(flooded);
      expect(closedFor(metrics, 'refused') + closedFor(metrics, 'evicted')).toBeGreaterThanOrEqual(35);
    } finally {
      hog?.close();
      await flooded.stop();
    }
  });
});
