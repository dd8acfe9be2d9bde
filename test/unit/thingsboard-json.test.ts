import { describe, expect, it } from 'vitest';
import { ExactInteger } from '../../src/model.js';
import { parseProvisionRequest } from '../../src/payload/provision.js';
import { parseActivation, parseThingWrite } from '../../src/payload/thethings-json.js';
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
    ['{"big":1e400}', /beyond the range of a double/],
    ['{"big":10000000000000000000}', /beyond the 64-bit range/],
    ['{"n":{"x":[1e999]}}', /number out of range/],
    [`{"deep":${'['.repeat(40)}${']'.repeat(40)}}`, /nests deeper than 32/],
    // Read exactly (a 17-digit integer), so by the gateway's own reader, which stops at 512 levels.
    [`{"deep":${'['.repeat(5000)}12345678901234567${']'.repeat(5000)}}`, /nests deeper than 512 levels/],
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

describe('bytes that are not UTF-8', () => {
  const bytes = (...parts: Array<string | number[]>): Buffer => Buffer.concat(parts.map((part) => Buffer.from(part)));

  it.each([
    ['in a string value', bytes('{"a":"', [0xff], '"}'), 6, 'ff'],
    ['in a key', bytes('{"k', [0xc3], '":1}'), 3, 'c3'],
    ['as an overlong encoding of "/"', bytes('{"a":"', [0xc0, 0xaf], '"}'), 6, 'c0'],
    ['as an encoded UTF-16 surrogate', bytes('{"a":"x', [0xed, 0xa0, 0x80], '"}'), 7, 'ed'],
    ['as a sequence cut short by the end', bytes('{"a":1}', [0xe2, 0x82]), 7, 'e2'],
  ])('refuses invalid UTF-8 %s, saying at which byte', (_name, body, offset, byte) => {
    const result = parseTelemetry(body, NOW);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error).toMatch(new RegExp(`not valid UTF-8: byte ${offset} \\(0x${byte}\\)`));
  });

  it('refuses it on every path that reads JSON from a device', () => {
    const body = bytes('{"secretKey":"', [0xfe], '","method":"m","activationCode":"c","provisionDeviceKey":"k","provisionDeviceSecret":"s"}');
    for (const result of [parseAttributes(body), parseClaim(body), parseClientRpc(body), parseRpcReply(body), parseThingWrite(body, NOW), parseActivation(body), parseProvisionRequest(body)]) {
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error).toMatch(/not valid UTF-8: byte 14/);
    }
  });

  it('takes valid multi-byte UTF-8 in keys and values', () => {
    expect(telemetry('{"température":"ü 日本 🌡"}')).toEqual({ ok: true, value: [{ ts: NOW, values: { température: 'ü 日本 🌡' } }] });
  });
});

describe('numbers as ThingsBoard stores them', () => {
  const valuesOf = (text: string): Record<string, unknown> => {
    const result = telemetry(text);
    if (!result.ok) throw new Error(result.error);
    return result.value[0]!.values;
  };

  it('takes a literal with a fraction or an exponent as a double, however large', () => {
    expect(valuesOf('{"a":1.7e308,"b":1e19,"c":-1.5E300,"d":12345678901234567890.5}')).toEqual({ a: 1.7e308, b: 1e19, c: -1.5e300, d: 12345678901234567890.5 });
  });

  it('keeps every integer of the 64-bit range to the digit', () => {
    expect(valuesOf('{"max":9223372036854775807,"min":-9223372036854775808,"above53":9007199254740993,"safe":9007199254740991}')).toEqual({
      max: new ExactInteger('9223372036854775807'),
      min: new ExactInteger('-9223372036854775808'),
      above53: new ExactInteger('9007199254740993'),
      safe: 9007199254740991,
    });
    expect(valuesOf('{"ts":1700000000000,"values":{"n":1234567890123456789}}')).toEqual({ n: new ExactInteger('1234567890123456789') });
    expect(valuesOf('{ "n" :\n\t -9223372036854775807 }')).toEqual({ n: new ExactInteger('-9223372036854775807') });
    expect(parseRpcReply(Buffer.from('[9223372036854775807, 1]'))).toEqual({ ok: true, value: [new ExactInteger('9223372036854775807'), 1] });
    expect(parseRpcReply(Buffer.from('9223372036854775807'))).toEqual({ ok: true, value: new ExactInteger('9223372036854775807') });
  });

  it.each(['9223372036854775808', '-9223372036854775809', '123456789012345678901234567890'])('refuses the integer %s, beyond the 64-bit range', (literal) => {
    const result = telemetry(`{"n":${literal}}`);
    expect(result).toEqual({ ok: false, error: 'value of "n" is an integer beyond the 64-bit range ThingsBoard stores (-9223372036854775808 to 9223372036854775807); send it as a string, or as a double with a decimal point' });
  });

  it('refuses a number beyond the range of a double, as ThingsBoard would', () => {
    expect(telemetry('{"n":1e400}')).toEqual({ ok: false, error: 'value of "n" is beyond the range of a double (±1.8e308)' });
    expect(telemetry('{"n":-1.0e309}')).toEqual({ ok: false, error: 'value of "n" is beyond the range of a double (±1.8e308)' });
  });

  it('keeps large integers inside JSON values exactly (ThingsBoard stores those as JSON text)', () => {
    expect(valuesOf('{"j":{"id":123456789012345678901234567890,"list":[18446744073709551615]}}')).toEqual({
      j: { id: new ExactInteger('123456789012345678901234567890'), list: [new ExactInteger('18446744073709551615')] },
    });
    expect(parseRpcReply(Buffer.from('{"serial":98765432109876543210}'))).toEqual({ ok: true, value: { serial: new ExactInteger('98765432109876543210') } });
  });

  it('reads a key that looks like a number, and strings of digits, as they are', () => {
    expect(valuesOf('{"12345678901234567890":"98765432109876543210","s":"\\u0031234567890123456789"}')).toEqual({
      '12345678901234567890': '98765432109876543210',
      s: '1234567890123456789',
    });
  });

  it('names a large integer where a timestamp should be', () => {
    expect(telemetry('{"ts":9223372036854775807,"values":{"a":1}}')).toEqual({
      ok: false,
      error: 'ts must be an integer number of milliseconds since 1970, not number 9223372036854775807',
    });
  });
});
