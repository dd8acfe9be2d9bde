// The downlink half of the Gateway API: what the gateway asks, and how it reads what ThingsBoard sends.
import { describe, expect, it } from 'vitest';
import {
  DOWNLINK_TOPICS,
  MessageTooLargeError,
  UplinkKind,
  attributeRequestMessage,
  claimItem,
  ownRpcRequestMessage,
  parseDownlink,
  rpcReplyItem,
} from '../../src/upstream/gateway-api.js';

const BOUNDS = { maxBytes: 65_536, maxDepth: 32 };
const parse = (topic: string, body: unknown, bounds = BOUNDS) =>
  parseDownlink(topic, Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), bounds);
/** `depth` arrays inside one another, as text. */
const nested = (depth: number): string => `${'['.repeat(depth)}${']'.repeat(depth)}`;

describe('requests the gateway sends', () => {
  it('asks one scope per request with a boolean client flag, key for one and keys for several', () => {
    expect(JSON.parse(attributeRequestMessage(1, 'Boiler-7', false, ['setpoint', 'mode']))).toEqual({
      id: 1,
      device: 'Boiler-7',
      client: false,
      keys: ['setpoint', 'mode'],
    });
    expect(JSON.parse(attributeRequestMessage(2, 'Boiler-7', true, ['serial']))).toEqual({ id: 2, device: 'Boiler-7', client: true, key: 'serial' });
    expect(() => attributeRequestMessage(3, 'Boiler-7', true, [])).toThrow(TypeError);
    expect(JSON.parse(attributeRequestMessage(4, 'Boiler-7', false, 'all'))).toEqual({ id: 4, device: 'Boiler-7', client: false, keys: [] });
  });

  it('replies to an RPC with all three mandatory fields, and measures it', () => {
    const reply = rpcReplyItem('Boiler-7', 5, { ok: true }, 1000);
    expect(reply.kind).toBe(UplinkKind.rpcReply);
    expect(JSON.parse(reply.body)).toEqual({ device: 'Boiler-7', id: 5, data: { ok: true } });
    expect(() => rpcReplyItem('Boiler-7', 5, 'x'.repeat(2000), 1000)).toThrow(MessageTooLargeError);
  });

  it('relays a client-side RPC as the gateway\'s own, naming the device inside params', () => {
    expect(JSON.parse(ownRpcRequestMessage('Pump-2', 'getTime', { tz: 'UTC' }, 1000))).toEqual({
      method: 'getTime',
      params: { device: 'Pump-2', params: { tz: 'UTC' } },
    });
  });

  it('claims with the secret and duration (the device name wraps it when batched)', () => {
    expect(claimItem('Pump-2', { secretKey: 's', durationMs: 60000 })).toEqual({ kind: UplinkKind.claim, device: 'Pump-2', body: '{"secretKey":"s","durationMs":60000}', points: 0 });
    expect(JSON.parse(claimItem('Pump-2', {}).body)).toEqual({});
  });

  it('subscribes to exactly the three server→gateway topics and its own RPC responses, no gateway wildcard', () => {
    expect([...DOWNLINK_TOPICS]).toEqual(['v1/gateway/attributes', 'v1/gateway/attributes/response', 'v1/gateway/rpc', 'v1/devices/me/rpc/response/+']);
  });
});

describe('what ThingsBoard sends', () => {
  it('reads a shared-attribute push, changes and deletions', () => {
    expect(parse('v1/gateway/attributes', { device: 'Boiler-7', data: { setpoint: 22 } })).toEqual({
      kind: 'shared-attributes',
      device: 'Boiler-7',
      update: { changed: { setpoint: 22 }, deleted: [] },
    });
    expect(parse('v1/gateway/attributes', { device: 'Boiler-7', data: { deleted: ['mode'] } })).toEqual({
      kind: 'shared-attributes',
      device: 'Boiler-7',
      update: { changed: {}, deleted: ['mode'] },
    });
  });

  it('reads an RPC request, keeping the id as sent and defaulting params', () => {
    expect(parse('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 5, method: 'setGpio', params: { pin: 1 } } })).toEqual({
      kind: 'rpc',
      device: 'Boiler-7',
      call: { id: 5, method: 'setGpio', params: { pin: 1 } },
    });
    expect(parse('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 6, method: 'reboot' } })).toMatchObject({ call: { params: {} } });
  });

  it('reads the three forms of an attribute response', () => {
    expect(parse('v1/gateway/attributes/response', { id: 2, device: 'B', value: 'SN-001' })).toEqual({
      kind: 'attribute-response',
      id: 2,
      device: 'B',
      found: { form: 'value', value: 'SN-001' },
    });
    expect(parse('v1/gateway/attributes/response', { id: 1, device: 'B', values: { a: 1 } })).toMatchObject({ found: { form: 'values', values: { a: 1 } } });
    expect(parse('v1/gateway/attributes/response', { id: 3, device: 'B' })).toMatchObject({ found: { form: 'none' } });
  });

  it('reads the answer to the gateway\'s own RPC by the id in the topic; any JSON body', () => {
    expect(parse('v1/devices/me/rpc/response/17', [1, 2])).toEqual({ kind: 'own-rpc-response', requestId: 17, body: [1, 2] });
  });

  it('recognises the gateway\'s own uplinks, which a plain MQTT broker sends back to it', () => {
    const reply = JSON.parse(rpcReplyItem('Pump-2', 7, { ok: true }, 65536).body) as unknown;
    expect(parse('v1/gateway/rpc', reply)).toEqual({ kind: 'echo' });
    expect(parse('v1/gateway/attributes', { 'Pump-2': { firmware: '1.2' }, 'Boiler-7': { mode: 'eco' } })).toEqual({ kind: 'echo' });
  });

  it.each([
    ['v1/gateway/rpc', 'not json'],
    ['v1/gateway/rpc', { device: 'B', data: { method: 'x' } }],
    ['v1/gateway/rpc', { data: { id: 1, method: 'x' } }],
    ['v1/gateway/attributes', { device: 'B', data: 'x' }],
    ['v1/gateway/attributes/response', { id: 'one', device: 'B' }],
    ['v1/gateway/attributes', [1]],
    ['v1/devices/me/rpc/response/abc', {}],
  ])('refuses a malformed message on %s (%j) as invalid, not a crash', (topic, body) => {
    expect(parse(topic, body).kind).toBe('invalid');
  });

  it.each([
    ['-1', '-1'],
    ['fractional', '1.5'],
    ['beyond a Java int', '2147483648'],
    ['a string', '"5"'],
  ])('refuses an RPC id that is %s: ThingsBoard could not read the reply\'s id back', (_, id) => {
    expect(parse('v1/gateway/rpc', `{"device":"B","data":{"id":${id},"method":"m"}}`)).toMatchObject({ kind: 'invalid', refusal: 'malformed' });
  });

  it('takes the largest RPC id ThingsBoard makes', () => {
    expect(parse('v1/gateway/rpc', { device: 'B', data: { id: 2_147_483_647, method: 'm' } })).toMatchObject({ kind: 'rpc', call: { id: 2_147_483_647 } });
  });
});

describe('bounds on what ThingsBoard sends', () => {
  it('measures depth on the whole message and refuses beyond upstream.maxDownlinkDepth, naming the RPC to answer', () => {
    // {"device","data":{"params":X}}: X's outermost array is level 3.
    const at = (depth: number) => `{"device":"B","data":{"id":7,"method":"m","params":${nested(depth - 2)}}}`;
    expect(parse('v1/gateway/rpc', at(32)).kind).toBe('rpc');
    expect(parse('v1/gateway/rpc', at(33))).toEqual({
      kind: 'invalid',
      refusal: 'too_deep',
      reason: 'JSON nests deeper than upstream.maxDownlinkDepth (32 levels)',
      rpc: { device: 'B', id: 7 },
    });
    // Far deeper than JSON.stringify survives (about 5,000), within a generous size bound.
    expect(parse('v1/gateway/rpc', at(100_000), { maxBytes: 1 << 20, maxDepth: 32 })).toMatchObject({ refusal: 'too_deep', rpc: { device: 'B', id: 7 } });
  });

  it('refuses deep values on every topic, without an RPC to answer where there is none', () => {
    const deep = nested(40);
    for (const [topic, text] of [
      ['v1/gateway/attributes', `{"device":"B","data":{"k":${deep}}}`],
      ['v1/gateway/attributes/response', `{"id":1,"device":"B","value":${deep}}`],
      ['v1/devices/me/rpc/response/3', deep],
      ['v1/gateway/rpc', `{"device":"B","data":{"id":-1,"method":"m","params":${deep}}}`],
    ] as const) {
      const parsed = parse(topic, text);
      expect(parsed).toMatchObject({ kind: 'invalid', refusal: 'too_deep' });
      expect(parsed).not.toHaveProperty('rpc');
    }
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    const text = `{"device":"B","data":{"k":"${'[{'.repeat(100)}\\\"${'['.repeat(100)}"}}`;
    expect(JSON.parse(text)).toBeDefined();
    expect(parse('v1/gateway/attributes', text).kind).toBe('shared-attributes');
  });

  it('refuses a message larger than upstream.maxDownlinkBytes before reading it', () => {
    const body = { device: 'B', data: { id: 1, method: 'm', params: 'x'.repeat(2000) } };
    expect(parse('v1/gateway/rpc', body, { maxBytes: 1024, maxDepth: 32 })).toMatchObject({ kind: 'invalid', refusal: 'too_large' });
    expect(parse('v1/gateway/rpc', body, { maxBytes: 4096, maxDepth: 32 }).kind).toBe('rpc');
  });

  it('refuses bytes that are not UTF-8 rather than reading them with replacement characters', () => {
    const bytes = Buffer.concat([Buffer.from('{"device":"B","data":{"k":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}')]);
    expect(parseDownlink('v1/gateway/attributes', bytes, BOUNDS)).toMatchObject({ kind: 'invalid', refusal: 'not_utf8' });
  });

  it('keeps __proto__ as an ordinary key of a push, without touching any prototype', () => {
    const parsed = parse('v1/gateway/attributes', '{"device":"B","data":{"__proto__":{"polluted":1},"b":2}}');
    if (parsed.kind !== 'shared-attributes') throw new Error(parsed.kind);
    expect(Object.keys(parsed.update.changed)).toEqual(['__proto__', 'b']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});
