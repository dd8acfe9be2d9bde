// The device API without a transport: the same requests through ThingsBoard's CoAP and HTTP dialects, the
// refusals they word differently, and who a request speaks for. The front ends' renderings are covered
// end to end (test/e2e/uplink, device-http, thethings).
import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge/index.js';
import type { Provisioner } from '../../src/bridge/provision.js';
import { DeviceRegistry } from '../../src/devices/registry.js';
import { TokenCheck } from '../../src/devices/token-check.js';
import { createDeviceApis, type DeviceApi } from '../../src/device-api/index.js';
import { RequestLimits } from '../../src/device-api/limits.js';
import { Operation } from '../../src/device-api/operations.js';
import type { Outcome } from '../../src/device-api/outcome.js';
import type { DeviceRequest } from '../../src/device-api/request.js';
import { createLogger } from '../../src/log.js';
import type { TelemetryRecord, UplinkOutcome } from '../../src/model.js';

const T0 = 1_700_000_000_000;
const log = createLogger('silent');

function setUp(limitOptions: Partial<ConstructorParameters<typeof RequestLimits>[0]> = {}) {
  const registry = new DeviceRegistry([
    { name: 'Boiler-7', type: 'boiler', token: 'boiler-token', psk: { identity: 'boiler', key: Buffer.from('k') }, cert: undefined },
    { name: 'Pump-2', type: 'pump', token: 'pump-token', psk: undefined, cert: undefined },
  ]);
  const limits = new RequestLimits(
    { requestsPerSecond: 0, burst: 0, deviceRequestsPerSecond: 0, deviceBurst: 1, unknownTokenFailures: 2, unknownTokenWindowMs: 60_000, unknownTokenBlockMs: 60_000, ...limitOptions },
    log,
    T0,
  );
  const telemetry: Array<{ device: string; records: readonly TelemetryRecord[] }> = [];
  // Only what these requests reach; anything else would throw and fail the test.
  const bridge = {
    telemetry: (device, records) => {
      telemetry.push({ device: device.name, records });
      return Promise.resolve<UplinkOutcome>({ status: 'accepted' });
    },
  } as Partial<Bridge> as Bridge;
  const apis = createDeviceApis({
    registry,
    bridge,
    provisioner: {} as Provisioner,
    limits,
    tokens: new TokenCheck(registry, limits, log),
    thethings: undefined,
    coapPackageWaitMs: 0,
    log: () => log,
  });
  return { apis, telemetry, registry };
}

function request(method: string, path: string, extra: Partial<DeviceRequest> = {}): DeviceRequest {
  return {
    method,
    segments: path.split('/').filter(Boolean),
    query: [],
    body: Buffer.from('{"t":21}'),
    unsupportedFormat: undefined,
    peer: { address: '192.0.2.7' },
    receivedAt: T0,
    updates: undefined,
    continuation: false,
    restored: false,
    ...extra,
  };
}

async function outcomeOf(api: DeviceApi, req: DeviceRequest): Promise<Outcome> {
  return api.handle(req).outcome;
}

describe('the device API', () => {
  it('runs one telemetry operation for both transports, labelled and authenticated alike', async () => {
    const { apis, telemetry } = setUp();
    for (const api of [apis.coap, apis.http]) {
      const handled = api.handle(request('POST', '/api/v1/boiler-token/telemetry'));
      expect(handled.operation).toBe(Operation.telemetry);
      expect(handled.device?.name).toBe('Boiler-7');
      expect(await handled.outcome).toEqual({ kind: 'accepted' });
    }
    expect(telemetry.map((entry) => [entry.device, entry.records[0]?.values])).toEqual([
      ['Boiler-7', { t: 21 }],
      ['Boiler-7', { t: 21 }],
    ]);
  });

  it('words a wrong method as each transport of ThingsBoard does: CoAP 4.00, HTTP 405 with the methods allowed', async () => {
    const { apis } = setUp();
    expect(await outcomeOf(apis.coap, request('GET', '/api/v1/boiler-token/telemetry'))).toEqual({
      kind: 'refused',
      refusal: { problem: 'bad-request', reason: 'telemetry accepts POST only' },
    });
    expect(await outcomeOf(apis.http, request('GET', '/api/v1/boiler-token/telemetry'))).toEqual({
      kind: 'refused',
      refusal: { problem: 'method-not-allowed', reason: 'method not allowed here: use POST', allowed: ['POST'] },
    });
  });

  it('answers a path no dialect claims with where the API lives, never echoing a long path', async () => {
    const { apis } = setUp();
    const outcome = await outcomeOf(apis.coap, request('POST', `/x/${'b'.repeat(100)}`));
    expect(outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'not-found' } });
    const reason = outcome.kind === 'refused' ? outcome.refusal.reason : '';
    expect(reason).toMatch(/^no such path \/x\/b{60}…; the device API lives under \/api\/v1\/\{token\}\//);
    expect(apis.coap.handle(request('POST', '/x')).operation).toBe(Operation.other);
  });

  it('refuses an unsupported body format only where a body is read', async () => {
    const { apis } = setUp();
    const unsupportedFormat = 'Content-Format 60 (application/cbor) is not supported; send JSON (50)';
    expect(await outcomeOf(apis.coap, request('POST', '/api/v1/boiler-token/telemetry', { unsupportedFormat }))).toEqual({
      kind: 'refused',
      refusal: { problem: 'unsupported-format', reason: unsupportedFormat },
    });
  });

  it('blocks an address after different unknown tokens, and a credential-authenticated peer is never blocked', async () => {
    const { apis } = setUp();
    for (const token of ['guess-1', 'guess-2']) {
      expect(await outcomeOf(apis.coap, request('POST', `/api/v1/${token}/telemetry`))).toMatchObject({ refusal: { problem: 'unauthorized' } });
    }
    expect(await outcomeOf(apis.coap, request('POST', '/api/v1/boiler-token/telemetry'))).toMatchObject({
      refusal: { problem: 'too-many-requests', retryAfterSeconds: 60 },
    });
    const dtls = { address: '192.0.2.7', credential: { kind: 'psk' as const, identity: 'boiler' } };
    expect(await outcomeOf(apis.coap, request('POST', '/api/v1/telemetry', { peer: dtls }))).toEqual({ kind: 'accepted' });
  });

  it('takes a device a connection authenticated, and refuses a path token of another device', async () => {
    const { apis, registry } = setUp();
    const peer = { address: '192.0.2.9', device: registry.findByName('Pump-2')! };
    const own = apis.coap.handle(request('POST', '/api/v1/telemetry', { peer }));
    expect(own.device?.name).toBe('Pump-2');
    expect(await own.outcome).toEqual({ kind: 'accepted' });
    expect(await outcomeOf(apis.coap, request('POST', '/api/v1/boiler-token/telemetry', { peer }))).toEqual({
      kind: 'refused',
      refusal: { problem: 'unauthorized', reason: 'the token in the path belongs to another device than this connection' },
    });
  });

  it('applies the gateway-wide limit on HTTP (the CoAP message layer applies it before Block1 reassembly)', async () => {
    const { apis } = setUp({ requestsPerSecond: 1, burst: 1 });
    expect(await outcomeOf(apis.http, request('POST', '/api/v1/boiler-token/telemetry'))).toEqual({ kind: 'accepted' });
    expect(await outcomeOf(apis.http, request('POST', '/api/v1/boiler-token/telemetry'))).toMatchObject({ refusal: { problem: 'too-many-requests' } });
    expect(await outcomeOf(apis.coap, request('POST', '/api/v1/boiler-token/telemetry'))).toEqual({ kind: 'accepted' });
  });
});
