import { describe, expect, it } from 'vitest';
import { RecentValues } from '../../src/devices/recent-values.js';
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
