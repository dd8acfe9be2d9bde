// Device provisioning through CoAP (docs/device-api-coap.md): forwarded to a ThingsBoard double on a real
// mosquitto over the separate provisioning connection, or decided by the gateway itself (local mode); the
// issued token must work on the very next request, and survive a restart through the devices file.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

let broker: Mosquitto;
let tb: ThingsBoardDouble;
const provisionRequests: Array<Record<string, unknown>> = [];

/** ThingsBoard's provisioning as the double plays it: one key/secret pair, tokens derived from names. */
function thingsBoardAnswer(request: Record<string, unknown>): unknown {
  provisionRequests.push(request);
  if (request.provisionDeviceKey !== 'tb-key') return { errorMsg: 'Failed to find provision device key!', status: 'NOT_FOUND' };
  if (request.provisionDeviceSecret !== 'tb-secret') return { errorMsg: 'Failed to validate provision device secret!', status: 'NOT_FOUND' };
  return { credentialsType: 'ACCESS_TOKEN', credentialsValue: `tb-issued-${String(request.deviceName)}`, status: 'SUCCESS' };
}

const post = (gw: TestGateway, path: string, body: unknown) =>
  coapClient(gw.uri(path), ['-m', 'post', '-e', typeof body === 'string' ? body : JSON.stringify(body)]);

const json = (payload: string | undefined): Record<string, unknown> => JSON.parse(payload ?? 'null') as Record<string, unknown>;

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  await tb.answerProvisioning(thingsBoardAnswer);
});

afterAll(async () => {
  await tb?.close();
  await broker?.dispose();
});

beforeEach(() => {
  tb.silent = false;
  tb.clear();
  provisionRequests.length = 0;
});

describe('provisioning through ThingsBoard (provision.mode "upstream")', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token' },
      provision: { timeoutMs: 1500 },
    });
    await gw.upstreamConnected();
  });
  afterAll(() => gw?.stop());

  it('answers 2.01 with ThingsBoard\'s JSON, and the token works for telemetry on the next request', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Sensor-A', provisionDeviceKey: 'tb-key', provisionDeviceSecret: 'tb-secret' });
    expect(result.response?.code).toBe('2.01');
    const answer = json(result.response?.payload);
    expect(answer).toEqual({ credentialsType: 'ACCESS_TOKEN', credentialsValue: 'tb-issued-Sensor-A', status: 'SUCCESS' });
    expect(provisionRequests).toEqual([{ deviceName: 'Sensor-A', provisionDeviceKey: 'tb-key', provisionDeviceSecret: 'tb-secret' }]);

    const telemetry = await post(gw, `/api/v1/${String(answer.credentialsValue)}/telemetry`, { temperature: 21 });
    expect(telemetry.response?.code).toBe('2.01');
    const [reading] = await tb.waitForReadings('Sensor-A', 1);
    expect((reading as { values: unknown }).values).toEqual({ temperature: 21 });

    // Persisted where the technician and the next start find it, with how it came.
    const file = JSON.parse(readFileSync(gw.config.devicesFile, 'utf8')) as Array<Record<string, unknown>>;
    expect(file).toContainEqual(
      expect.objectContaining({ name: 'Sensor-A', token: 'tb-issued-Sensor-A', provisioned: expect.objectContaining({ via: 'upstream', key: 'tb-key' }) }),
    );
  });

  it('passes a refusal on as 4.00 with ThingsBoard\'s JSON and registers nothing', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Sensor-B', provisionDeviceKey: 'tb-key', provisionDeviceSecret: 'wrong' });
    expect(result.response?.code).toBe('4.00');
    expect(json(result.response?.payload)).toEqual({ errorMsg: 'Failed to validate provision device secret!', status: 'NOT_FOUND' });
    const telemetry = await post(gw, '/api/v1/tb-issued-Sensor-B/telemetry', { t: 1 });
    expect(telemetry.response?.code).toBe('4.01');
  });

  it('names a device that sent no deviceName, and registers it under that name', async () => {
    const result = await post(gw, '/api/v1/provision', { provisionDeviceKey: 'tb-key', provisionDeviceSecret: 'tb-secret' });
    expect(result.response?.code).toBe('2.01');
    const name = provisionRequests[0]?.deviceName;
    expect(name).toMatch(/^coap-[0-9a-f]{8}$/);
    const token = json(result.response?.payload).credentialsValue;
    expect(token).toBe(`tb-issued-${String(name)}`);
    expect((await post(gw, `/api/v1/${String(token)}/telemetry`, { t: 2 })).response?.code).toBe('2.01');
    await tb.waitForReadings(String(name), 1);
  });

  it('answers 5.04 when ThingsBoard does not answer in time', async () => {
    tb.silent = true;
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Sensor-C', provisionDeviceKey: 'tb-key', provisionDeviceSecret: 'tb-secret' });
    expect(result.response?.code).toBe('5.04');
    expect(result.response?.payload).toMatch(/did not answer the provisioning request in time/);
  });

  it('refuses a request that is not a provisioning request with 4.00 and ThingsBoard-shaped JSON, without asking upstream', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Sensor-D', provisionDeviceKey: 'tb-key' });
    expect(result.response?.code).toBe('4.00');
    expect(json(result.response?.payload)).toEqual({ errorMsg: 'provisionDeviceSecret must be a non-empty string', status: 'FAILURE' });
    await sleep(200);
    expect(provisionRequests).toHaveLength(0);
  });

  it('does not let provisioning take over a device from the configuration file', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Boiler-7', provisionDeviceKey: 'tb-key', provisionDeviceSecret: 'tb-secret' });
    expect(result.response?.code).toBe('4.00');
    expect(json(result.response?.payload)).toMatchObject({ status: 'FAILURE', errorMsg: expect.stringMatching(/configured in the gateway's configuration file/) });
    expect(provisionRequests).toHaveLength(0);
  });
});

describe('provisioning at the edge (provision.mode "local")', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token' },
      provision: { mode: 'local', keys: [{ key: 'site-key', secret: 'site-secret', type: 'air-sensor' }] },
    });
    await gw.upstreamConnected();
  });
  afterAll(() => gw?.stop());

  it('issues a token, announces the device with its profile, and the token works at once', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Air-1', provisionDeviceKey: 'site-key', provisionDeviceSecret: 'site-secret' });
    expect(result.response?.code).toBe('2.01');
    const answer = json(result.response?.payload);
    expect(answer).toMatchObject({ credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' });
    expect(answer.credentialsValue).toMatch(/^[\w-]{20}$/);
    const [connect] = await tb.waitFor('v1/gateway/connect');
    expect(connect!.json).toEqual({ device: 'Air-1', type: 'air-sensor' });

    expect((await post(gw, `/api/v1/${String(answer.credentialsValue)}/telemetry`, { pm25: 7 })).response?.code).toBe('2.01');
    await tb.waitForReadings('Air-1', 1);

    // The same device asking again (its answer was lost) gets the same token.
    const again = await post(gw, '/api/v1/provision', { deviceName: 'Air-1', provisionDeviceKey: 'site-key', provisionDeviceSecret: 'site-secret' });
    expect(again.response?.code).toBe('2.01');
    expect(json(again.response?.payload).credentialsValue).toBe(answer.credentialsValue);
  });

  it('refuses a wrong secret with 4.00 NOT_FOUND and never contacts ThingsBoard', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Air-2', provisionDeviceKey: 'site-key', provisionDeviceSecret: 'guess' });
    expect(result.response?.code).toBe('4.00');
    expect(json(result.response?.payload)).toEqual({ errorMsg: 'unknown provision key or wrong secret', status: 'NOT_FOUND' });
    await sleep(200);
    expect(provisionRequests).toHaveLength(0);
    expect(tb.on('v1/gateway/connect')).toHaveLength(0);
  });

  it('keeps provisioned devices across a restart (devices file)', async () => {
    const result = await post(gw, '/api/v1/provision', { deviceName: 'Air-3', provisionDeviceKey: 'site-key', provisionDeviceSecret: 'site-secret' });
    const token = String(json(result.response?.payload).credentialsValue);
    const restarted = await startTestGateway({
      upstream: { url: broker.url, accessToken: 'gateway-token-2' },
      devicesFile: gw.config.devicesFile,
      provision: { mode: 'local', keys: [{ key: 'site-key', secret: 'site-secret' }] },
    });
    try {
      await restarted.upstreamConnected();
      expect((await post(restarted, `/api/v1/${token}/telemetry`, { pm25: 9 })).response?.code).toBe('2.01');
    } finally {
      await restarted.stop();
    }
  });
});
