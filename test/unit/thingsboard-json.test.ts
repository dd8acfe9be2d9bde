import { describe, expect, it } from 'vitest';
import { parseAttributeKeys, parseAttributes, parseClaim, parseClientRpc, parseRpcReply, parseTelemetry } from '../../src/payload/thingsboard-json.js';

const NOW = 1_763_000_000_000;
const telemetry = (text: string) => parseTelemetry(Buffer.from(text), NOW);
const attributes = (text: string) => parseAttributes(Buffer.from(text));

describe('parseTelemetry', () => {
  it('stamps a plain key-value object with the receive time', () => {
    expect(telemetry('{"temperature":21.5,"on":true,"mode":"eco"}')).toEqual({
      ok: true,
      value: [{ ts: NOW, values: { temperature: 21.5, on: true, mode: 'eco' } }],
    });
  });

  it('keeps the device ts when both ts and values are present, ignoring siblings', () => {
    expect(telemetry('{"ts":1700000000000,"values":{"a":1},"extra":2}')).toEqual({ ok: true, value: [{ ts: 1700000000000, values: { a: 1 } }] });
    expect(telemetry('{"ts":"1700000000000","values":{"a":1}}')).toEqual({ ok: true, value: [{ ts: 1700000000000, values: { a: 1 } }] });
  });

  it('treats ts without values as an ordinary key, as ThingsBoard does', () => {
    expect(telemetry('{"ts":5,"a":1}')).toEqual({ ok: true, value: [{ ts: NOW, values: { ts: 5, a: 1 } }] });
  });

  it('accepts an array mixing both forms and keeps nested JSON values', () => {
    const result = telemetry('[{"ts":1,"values":{"a":{"b":[1,2,{"c":null}]}}},{"d":"x"}]');
    expect(result).toEqual({ ok: true, value: [{ ts: 1, values: { a: { b: [1, 2, { c: null }] } } }, { ts: NOW, values: { d: 'x' } }] });
  });

  it('drops null values, and records left empty', () => {
    expect(telemetry('{"a":null,"b":2}')).toEqual({ ok: true, value: [{ ts: NOW, values: { b: 2 } }] });
    expect(telemetry('{"a":null}')).toEqual({ ok: true, value: [] });
    expect(telemetry('[]')).toEqual({ ok: true, value: [] });
  });

  it('does not let a "__proto__" key change the prototype of the copy', () => {
    const result = telemetry('{"__proto__":{"polluted":1},"gone":null}');
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(JSON.stringify(result.value[0]!.values)).toBe('{"__proto__":{"polluted":1}}');
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    }
  });

  it.each([
    ['', /empty payload/],
    ['{"a":', /malformed JSON/],
    ['null', /not null/],
    ['42', /not number 42/],
    ['"text"', /not string/],
    ['[1,2]', /element 0: .*not number 1/],
    ['[{"a":1},null]', /element 1/],
    ['{"ts":1.5,"values":{"a":1}}', /ts must be an integer/],
    ['{"ts":-1,"values":{"a":1}}', /ts must be an integer/],
    ['{"ts":"soon","values":{"a":1}}', /ts must be an integer/],
    // Sixteen digits fit the string form but not a double exactly.
    ['{"ts":"9999999999999999","values":{"a":1}}', /ts must be an integer/],
    ['{"ts":1,"values":[1]}', /values must be an object, not an array/],
    ['{"ts":1,"values":null}', /values must be an object, not null/],
    ['{"":1}', /keys must not be empty/],
    [`{"${'k'.repeat(256)}":1}`, /longer than 255/],
    ['{"big":1e400}', /out of range/],
    ['{"big":10000000000000000000}', /beyond the 64-bit range/],
    ['{"n":{"x":[1e999]}}', /number out of range/],
    [`{"deep":${'['.repeat(40)}${']'.repeat(40)}}`, /nests deeper than 32/],
  ])('refuses %j', (text, error) => {
    const result = telemetry(text);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error).toMatch(error);
  });
});

describe('parseAttributes', () => {
  it('accepts one object, dropping nulls', () => {
    expect(attributes('{"fw":"1.0","battery":87,"gone":null}')).toEqual({ ok: true, value: { fw: '1.0', battery: 87 } });
  });

  it.each(['[{"a":1}]', '"x"', 'null', ''])('refuses %j', (text) => {
    expect(attributes(text).ok).toBe(false);
  });
});

describe('downlink-related device payloads', () => {
  const b = (text: string) => Buffer.from(text);

  it('takes any JSON as an RPC reply, but not an empty or malformed body', () => {
    expect(parseRpcReply(b('{"ok":true}'))).toEqual({ ok: true, value: { ok: true } });
    expect(parseRpcReply(b('42'))).toEqual({ ok: true, value: 42 });
    expect(parseRpcReply(b('')).ok).toBe(false);
    expect(parseRpcReply(b('{"ok":')).ok).toBe(false);
  });

  it('needs a method on a client-side RPC; params default to {}', () => {
    expect(parseClientRpc(b('{"method":"getTime"}'))).toEqual({ ok: true, value: { method: 'getTime', params: {} } });
    expect(parseClientRpc(b('{"method":"set","params":[1]}'))).toEqual({ ok: true, value: { method: 'set', params: [1] } });
    expect(parseClientRpc(b('{"params":{}}')).ok).toBe(false);
    expect(parseClientRpc(b('[]')).ok).toBe(false);
  });

  it('accepts an empty claim and checks the optional fields', () => {
    expect(parseClaim(b(''))).toEqual({ ok: true, value: {} });
    expect(parseClaim(b('{"secretKey":"s","durationMs":60000}'))).toEqual({ ok: true, value: { secretKey: 's', durationMs: 60000 } });
    expect(parseClaim(b('{"durationMs":-1}')).ok).toBe(false);
    expect(parseClaim(b('{"secretKey":5}')).ok).toBe(false);
  });

  it('splits attribute keys on commas across query options, ignoring others', () => {
    expect(parseAttributeKeys(['clientKeys=a,b', 'sharedKeys=c', 'clientKeys=b, d', 'other=x', 'sharedKeys='])).toEqual({
      client: ['a', 'b', 'd'],
      shared: ['c'],
    });
  });
});
