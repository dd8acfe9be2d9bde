import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge/index.js';
import type { Provisioner } from '../../src/bridge/provision.js';
import { DeviceRegistry } from '../../src/devices/registry.js';
import { RecentValues } from '../../src/devices/recent-values.js';
import { TokenCheck } from '../../src/devices/token-check.js';
import { createDeviceApis } from '../../src/device-api/index.js';
import { RequestLimits } from '../../src/device-api/limits.js';
import type { DeviceRequest } from '../../src/device-api/request.js';
import { createLogger } from '../../src/log.js';
import { parseActivation, parseResourceQuery, parseThingDate, parseThingWrite } from '../../src/payload/thethings-json.js';

const body = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const T = 1_700_000_000_000;

describe('thethings.io payloads', () => {
  it('groups a write into telemetry records by datetime, the rest at the receive time', () => {
    const parsed = parseThingWrite(
      body({ values: [{ key: 'a', value: 1 }, { key: 'b', value: 'x', datetime: '20261203120000' }, { key: 'c', value: true, datetime: '2026-12-03T12:00:00Z' }] }),
      T,
    );
    expect(parsed).toEqual({
      ok: true,
      value: [
        { ts: T, values: { a: 1 } },
        { ts: Date.UTC(2026, 11, 3, 12), values: { b: 'x', c: true } },
      ],
    });
  });

  it('refuses what is not a write, naming the entry', () => {
    expect(parseThingWrite(body({ values: [] }), T)).toMatchObject({ ok: false, error: expect.stringMatching(/at least one value/) });
    expect(parseThingWrite(body({ values: [{ key: 'a' }] }), T)).toMatchObject({ ok: false, error: 'values[0]: expected {"key":"...","value":...}' });
    expect(parseThingWrite(Buffer.from('{"values":'), T)).toMatchObject({ ok: false, error: expect.stringMatching(/malformed JSON/) });
    // thethings.io allows only letters, digits, '.', '-' and '_' in a key.
    expect(parseThingWrite(body({ values: [{ key: 'Room_1.temp-C', value: 1 }] }), T).ok).toBe(true);
    for (const key of ['room temp', 'a/b', 'ü', 'a+b', 'k"']) {
      expect(parseThingWrite(body({ values: [{ key: 'ok', value: 0 }, { key, value: 1 }] }), T)).toMatchObject({
        ok: false,
        error: "values[1].key may only hold letters, digits, '.', '-' and '_'",
      });
    }
    // ThingsBoard's own checks apply to the result.
    expect(parseThingWrite(body({ values: [{ key: 'big', value: 2 ** 64 }] }), T).ok).toBe(false);
  });

  it('reads compact and ISO dates, and only real ones', () => {
    expect(parseThingDate('20260229000000')).toBeUndefined();
    expect(parseThingDate('20280229235959')).toBe(Date.UTC(2028, 1, 29, 23, 59, 59));
    expect(parseThingDate('20261203246000')).toBeUndefined();
    expect(parseThingDate('yesterday')).toBeUndefined();
  });

  it('reads an activation and a resource query', () => {
    expect(parseActivation(body({ activationCode: 'X' }))).toEqual({ ok: true, value: 'X' });
    expect(parseActivation(body({ code: 'X' })).ok).toBe(false);
    expect(parseResourceQuery([])).toEqual({ ok: true, value: { limit: 1, startDate: undefined, endDate: undefined } });
    expect(parseResourceQuery(['limit=100', 'startDate=20261201000000'])).toEqual({
      ok: true,
      value: { limit: 100, startDate: Date.UTC(2026, 11, 1), endDate: undefined },
    });
    expect(parseResourceQuery(['limit=0']).ok).toBe(false);
    // An empty value is no value, for limit as for the dates.
    expect(parseResourceQuery(['limit=', 'startDate=', 'endDate='])).toEqual({ ok: true, value: { limit: 1, startDate: undefined, endDate: undefined } });
    expect(parseResourceQuery(['startDate=20261301000000'])).toMatchObject({ ok: false, error: expect.stringMatching(/startDate must be YYYYMMDDHHmmss/) });
    expect(parseResourceQuery(['endDate=soon'])).toMatchObject({ ok: false, error: expect.stringMatching(/endDate must be/) });
  });
});

describe('RecentValues', () => {
  it('keeps the last values per key in time order, newest first on read', () => {
    const store = new RecentValues(3, 100);
    store.record('A', [{ ts: 3, values: { t: 30 } }, { ts: 1, values: { t: 10 } }]);
    store.record('A', [{ ts: 2, values: { t: 20, h: 1 } }, { ts: 4, values: { t: 40 } }]);
    const all = { limit: 10, from: undefined, to: undefined };
    expect(store.read('A', 't', all)).toEqual([{ ts: 4, value: 40 }, { ts: 3, value: 30 }, { ts: 2, value: 20 }]);
    expect(store.read('A', 't', { limit: 10, from: 3, to: 3 })).toEqual([{ ts: 3, value: 30 }]);
    expect(store.read('A', 'h', all)).toEqual([{ ts: 2, value: 1 }]);
    expect(store.read('B', 't', all)).toEqual([]);
  });

  it('forgets the least recently written series beyond its bound', () => {
    const store = new RecentValues(5, 2);
    store.record('A', [{ ts: 1, values: { a: 1 } }]);
    store.record('B', [{ ts: 1, values: { b: 1 } }]);
    store.record('C', [{ ts: 1, values: { c: 1 } }]);
    const all = { limit: 10, from: undefined, to: undefined };
    expect(store.read('A', 'a', all)).toEqual([]);
    expect(store.read('C', 'c', all)).toHaveLength(1);
  });
});

describe("thethings.io's dialect refusals", () => {
  const log = createLogger('silent');
  const registry = new DeviceRegistry([{ name: 'Boiler-7', type: 'boiler', token: 'boiler-token', psk: undefined, cert: undefined }]);
  const limits = new RequestLimits(
    { requestsPerSecond: 0, burst: 0, deviceRequestsPerSecond: 0, deviceBurst: 10, unknownTokenFailures: 2, unknownTokenWindowMs: 60_000, unknownTokenBlockMs: 60_000 },
    log,
    T,
  );
  const apis = createDeviceApis({
    registry,
    // Nothing here reaches the bridge or the provisioner: any call would throw and fail the test.
    bridge: {} as Bridge,
    provisioner: {} as Provisioner,
    limits,
    tokens: new TokenCheck(registry, limits, log),
    thethings: { enabled: true, things: [], provisionKey: '', provisionSecret: '', valuesPerKey: 10, maxSeries: 10 },
    coapPackageWaitMs: 0,
    log: () => log,
  });
  const request = (method: string, path: string, payload: unknown): DeviceRequest => ({
    method,
    segments: path.split('/').filter(Boolean),
    query: [],
    body: body(payload),
    unsupportedFormat: undefined,
    peer: { address: '192.0.2.9' },
    receivedAt: T,
    updates: undefined,
    continuation: false,
    restored: false,
  });

  it('gives every refusal under /v2/things the JSON error body, and ThingsBoard paths none', async () => {
    expect(await apis.coap.handle(request('POST', '/v2/things', { activationCode: 'NOPE' })).outcome).toEqual({
      kind: 'refused',
      refusal: { problem: 'unauthorized', reason: 'unknown activation code', body: { status: 'error', message: 'unknown activation code' } },
    });
    // The second unknown credential from the address blocks it: 4.29 with a retry time, still JSON.
    await apis.coap.handle(request('POST', '/v2/things/guess', { values: [{ key: 'a', value: 1 }] })).outcome;
    const blocked = await apis.coap.handle(request('POST', '/v2/things/guess-2', { values: [{ key: 'a', value: 1 }] })).outcome;
    expect(blocked).toMatchObject({ kind: 'refused', refusal: { problem: 'too-many-requests', retryAfterSeconds: expect.any(Number), body: { status: 'error' } } });
    const thingsBoard = await apis.coap.handle(request('POST', '/api/v1/guess-3/telemetry', { a: 1 })).outcome;
    expect(thingsBoard).toMatchObject({ kind: 'refused', refusal: { problem: 'too-many-requests' } });
    expect(thingsBoard.kind === 'refused' && thingsBoard.refusal.body).toBeUndefined();
  });
});
