import { describe, expect, it } from 'vitest';
import { nextPublish } from '../../src/upstream/batch.js';
import {
  MessageTooLargeError,
  UplinkKind,
  type UplinkItem,
  attributesItem,
  connectMessage,
  gatewayJson,
  ownRpcRequestMessage,
  parseSessionLimits,
  rpcReplyItem,
  telemetryItems,
} from '../../src/upstream/gateway-api.js';
import { ExactInteger } from '../../src/model.js';
import { gatewayApiProblems } from '../helpers/gateway-api-validator.js';

/** All publishes for `rows`, as the direct path and the outbox build them. */
function publishAll(rows: readonly UplinkItem[], maxBytes: number, maxPoints?: number): Array<{ topic: string; payload: string; points: number }> {
  const out: Array<{ topic: string; payload: string; points: number }> = [];
  for (let start = 0; start < rows.length; ) {
    const publish = nextPublish(rows, start, maxBytes, maxPoints);
    if ('oversized' in publish) throw new Error(`row ${start} oversized`);
    out.push({ topic: publish.topic, payload: publish.payload, points: publish.points });
    start += publish.rows;
  }
  return out;
}

const rowsOf = (device: string, items: ReturnType<typeof telemetryItems>): UplinkItem[] => items.map((item) => ({ ...item, device }));

describe('gateway API messages', () => {
  it('builds connect with the device profile', () => {
    expect(JSON.parse(connectMessage({ name: 'Boiler-7', type: 'thermostat' }))).toEqual({ device: 'Boiler-7', type: 'thermostat' });
  });

  it('builds telemetry as an array of {ts, values} under the device name, counting data points', () => {
    const items = telemetryItems('Boiler "7"', [{ ts: 1, values: { a: 1 } }, { ts: 2, values: { b: 'x', c: true } }], 65536);
    expect(items).toHaveLength(1);
    expect(items[0]!.points).toBe(3);
    const [publish] = publishAll(rowsOf('Boiler "7"', items), 65536);
    expect(publish!.topic).toBe('v1/gateway/telemetry');
    expect(JSON.parse(publish!.payload)).toEqual({ 'Boiler "7"': [{ ts: 1, values: { a: 1 } }, { ts: 2, values: { b: 'x', c: true } }] });
  });

  it('splits many records into messages that each fit the limit, keeping order', () => {
    const records = Array.from({ length: 500 }, (_, i) => ({ ts: 1_700_000_000_000 + i, values: { sensor: i, label: 'é'.repeat(20) } }));
    const publishes = publishAll(rowsOf('Pump-2', telemetryItems('Pump-2', records, 4096)), 4096);
    expect(publishes.length).toBeGreaterThan(1);
    for (const { payload } of publishes) expect(Buffer.byteLength(payload)).toBeLessThanOrEqual(4096);
    const all = publishes.flatMap(({ payload }) => (JSON.parse(payload) as Record<string, unknown[]>)['Pump-2']!);
    expect(all).toEqual(records);
  });

  it('refuses a record that cannot fit even alone', () => {
    expect(() => telemetryItems('X', [{ ts: 1, values: { blob: 'x'.repeat(5000) } }], 4096)).toThrow(MessageTooLargeError);
    expect(() => attributesItem('X', { blob: 'x'.repeat(5000) }, 4096)).toThrow(MessageTooLargeError);
  });

  it('refuses shapes that would make ThingsBoard drop the session', () => {
    expect(() => telemetryItems('', [{ ts: 1, values: {} }], 4096)).toThrow(TypeError);
    expect(() => telemetryItems('X', [{ ts: 1.5, values: {} }], 4096)).toThrow(TypeError);
    expect(() => attributesItem('X', [] as unknown as Record<string, never>, 4096)).toThrow(TypeError);
  });
});

describe('batching several devices into one publish', () => {
  const telemetry = (device: string, n: number): UplinkItem => ({ kind: UplinkKind.telemetry, device, body: JSON.stringify({ ts: n, values: { n } }), points: 1 });
  const attributes = (device: string, value: number): UplinkItem => ({ kind: UplinkKind.attributes, device, body: JSON.stringify({ v: value }), points: 0 });

  it('puts many devices\' telemetry in one message, each device\'s records in order', () => {
    const rows = [telemetry('A', 1), telemetry('B', 2), telemetry('A', 3), telemetry('C', 4)];
    const [publish, ...rest] = publishAll(rows, 65536);
    expect(rest).toEqual([]);
    expect(JSON.parse(publish!.payload)).toEqual({
      A: [{ ts: 1, values: { n: 1 } }, { ts: 3, values: { n: 3 } }],
      B: [{ ts: 2, values: { n: 2 } }],
      C: [{ ts: 4, values: { n: 4 } }],
    });
    expect(publish!.points).toBe(4);
  });

  it('measures exactly: every message fits and none could have taken the next row', () => {
    const rows = Array.from({ length: 300 }, (_, i) => telemetry(`device-${i % 7}`, i));
    for (const limit of [200, 333, 1000, 4096]) {
      let start = 0;
      while (start < rows.length) {
        const publish = nextPublish(rows, start, limit);
        if ('oversized' in publish) throw new Error('oversized');
        expect(Buffer.byteLength(publish.payload)).toBeLessThanOrEqual(limit);
        const end = start + publish.rows;
        if (end < rows.length && rows[end]!.kind === UplinkKind.telemetry) {
          const bigger = nextPublish(rows.slice(start, end + 1), 0, 1_000_000);
          expect(Buffer.byteLength((bigger as { payload: string }).payload)).toBeGreaterThan(limit);
        }
        start = end;
      }
    }
  });

  it('keeps a run to one kind, names a device once per attributes message, and sends an RPC reply alone', () => {
    const rpc: UplinkItem = { kind: UplinkKind.rpcReply, device: 'A', body: JSON.stringify({ device: 'A', id: 7, data: 'ok' }), points: 0 };
    const rows = [telemetry('A', 1), attributes('A', 1), attributes('B', 2), attributes('A', 3), rpc, telemetry('B', 4)];
    const publishes = publishAll(rows, 65536);
    expect(publishes.map((p) => [p.topic, JSON.parse(p.payload)])).toEqual([
      ['v1/gateway/telemetry', { A: [{ ts: 1, values: { n: 1 } }] }],
      ['v1/gateway/attributes', { A: { v: 1 }, B: { v: 2 } }],
      ['v1/gateway/attributes', { A: { v: 3 } }],
      ['v1/gateway/rpc', { device: 'A', id: 7, data: 'ok' }],
      ['v1/gateway/telemetry', { B: [{ ts: 4, values: { n: 4 } }] }],
    ]);
  });

  it('stops at the data-point budget but always takes one row', () => {
    const rows = [telemetry('A', 1), telemetry('A', 2), telemetry('B', 3)];
    expect(publishAll(rows, 65536, 2).map((p) => p.points)).toEqual([2, 1]);
    const heavy: UplinkItem = { ...telemetry('A', 1), points: 10 };
    expect(nextPublish([heavy], 0, 65536, 2)).toMatchObject({ rows: 1, points: 10 });
  });

  it('reports a row too large for any message instead of building one', () => {
    const big: UplinkItem = { kind: UplinkKind.telemetry, device: 'A', body: 'x'.repeat(100), points: 1 };
    expect(nextPublish([big], 0, 100)).toEqual({ oversized: true, bytes: 100 + 8 });
  });
});

describe('session limits', () => {
  it('reads the gateway limits, which count all children together, over the device ones', () => {
    const limits = parseSessionLimits({
      maxPayloadSize: 32768,
      maxInflightMessages: 100,
      rateLimits: { messages: '10:1' },
      gatewayRateLimits: { messages: '100:1,3000:60', telemetryMessages: '50:1', telemetryDataPoints: ' 200 : 1 , junk, 0:5' },
    });
    expect(limits).toEqual({
      maxPayloadSize: 32768,
      maxInflightMessages: 100,
      messages: [
        { capacity: 100, seconds: 1 },
        { capacity: 3000, seconds: 60 },
      ],
      telemetryMessages: [{ capacity: 50, seconds: 1 }],
      telemetryDataPoints: [{ capacity: 200, seconds: 1 }],
    });
  });

  it('says nothing usable for an answer of another shape', () => {
    expect(parseSessionLimits('ok')).toBeUndefined();
    expect(parseSessionLimits({ error: 'unknown method' })).toBeUndefined();
    expect(parseSessionLimits({ maxPayloadSize: -1 })).toBeUndefined();
  });
});

describe('numbers as ThingsBoard reads them', () => {
  it('writes a tiny number with a "." so it is read as a double, not refused as a long', () => {
    expect(gatewayJson({ v: 0.0000001, w: 5e-324, x: 1.5e-7, y: 21.5, z: 42 })).toBe('{"v":1.0e-7,"w":5.0e-324,"x":1.5e-7,"y":21.5,"z":42}');
    expect(JSON.parse(gatewayJson({ v: 1e-7 })).v).toBe(1e-7);
  });

  it('leaves strings that merely look like exponents alone, and nested values too', () => {
    expect(gatewayJson({ s: '1e-7', nested: [{ a: 1e-9 }, 'x1e5'] })).toBe('{"s":"1e-7","nested":[{"a":1.0e-9},"x1e5"]}');
    expect(gatewayJson({ s: '2e5' })).toBe('{"s":"2e5"}');
  });

  it('applies to telemetry, attributes and RPC replies', () => {
    expect(telemetryItems('A', [{ ts: 1, values: { v: 1e-8 } }], 65536)[0]!.body).toBe('{"ts":1,"values":{"v":1.0e-8}}');
    expect(attributesItem('A', { v: 3e-10 }, 65536).body).toBe('{"v":3.0e-10}');
  });

  it('writes an integer kept exact with its own digits, read by ThingsBoard as the same long', () => {
    const values = { max: new ExactInteger('9223372036854775807'), min: new ExactInteger('-9223372036854775808'), near: new ExactInteger('9007199254740993') };
    const [item] = telemetryItems('A', [{ ts: 1, values }], 65536);
    expect(item!.body).toBe('{"ts":1,"values":{"max":9223372036854775807,"min":-9223372036854775808,"near":9007199254740993}}');
    expect(gatewayApiProblems('v1/gateway/telemetry', `{"A":[${item!.body}]}`)).toEqual([]);
    expect(attributesItem('A', { serial: new ExactInteger('1234567890123456789') }, 65536).body).toBe('{"serial":1234567890123456789}');
    expect(rpcReplyItem('A', 1, { n: [new ExactInteger('98765432109876543210')] }, 65536).body).toBe('{"device":"A","id":1,"data":{"n":[98765432109876543210]}}');
    expect(ownRpcRequestMessage('A', 'm', { id: new ExactInteger('-12345678901234567890') }, 65536)).toBe('{"method":"m","params":{"device":"A","params":{"id":-12345678901234567890}}}');
  });

  it('writes a double beyond 2^53 with a "." so ThingsBoard reads a double, not a long it cannot hold', () => {
    const body = telemetryItems('A', [{ ts: 1, values: { d: 1e19, e: 1.7e308, f: -(2 ** 60), g: 1e21, safe: 2 ** 53 - 1 } }], 65536)[0]!.body;
    expect(body).toBe('{"ts":1,"values":{"d":10000000000000000000.0,"e":1.7e+308,"f":-1152921504606847000.0,"g":1.0e+21,"safe":9007199254740991}}');
    expect(gatewayApiProblems('v1/gateway/telemetry', `{"A":[${body}]}`)).toEqual([]);
    expect(JSON.parse(body).values).toEqual({ d: 1e19, e: 1.7e308, f: -(2 ** 60), g: 1e21, safe: 2 ** 53 - 1 });
  });
});
