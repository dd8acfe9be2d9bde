// Device-facing protection as pure logic with an injected clock, then the gateway-wide limit inside the
// message layer against hand-built datagrams: what counts, what never does, and what a refusal looks like.
import * as coapPacket from 'coap-packet';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { encodeBlock } from '../../src/coap/block.js';
import { ResponseCode } from '../../src/coap/codes.js';
import { RequestLimits, tooManyRequests, type RequestLimitsOptions } from '../../src/device-api/limits.js';
import { coapAdmission } from '../../src/front-ends/coap/router.js';
import { refusal } from '../../src/front-ends/coap/render.js';
import { sourceKey } from '../../src/net/source-key.js';
import { CoapMessageLayer } from '../../src/coap/message-layer.js';
import type { CoapRequest } from '../../src/coap/request.js';
import type { Peer } from '../../src/coap/transport.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { MemoryTransport } from '../helpers/memory-transport.js';

const OFF: RequestLimitsOptions = {
  requestsPerSecond: 0,
  burst: 0,
  deviceRequestsPerSecond: 0,
  deviceBurst: 1,
  unknownTokenFailures: 0,
  unknownTokenWindowMs: 60_000,
  unknownTokenBlockMs: 300_000,
};
const T0 = 1_700_000_000_000;

let logs: Array<Record<string, unknown>>;
const capture = () =>
  createLogger('debug', {
    write(line: string) {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    },
  });
const limitsWith = (options: Partial<RequestLimitsOptions>) => new RequestLimits({ ...OFF, ...options }, capture(), T0);
const warnings = () => logs.filter((line) => line.level === 'warn');

beforeEach(() => {
  logs = [];
});

describe('the limits configuration', () => {
  it('has defaults that leave sane devices alone and a gateway-wide limit off', () => {
    const result = loadConfig({ env: {} });
    expect(result.ok && result.config.limits).toEqual({
      requestsPerSecond: 0,
      burst: 0,
      deviceRequestsPerSecond: 50,
      deviceBurst: 100,
      unknownTokenFailures: 20,
      unknownTokenWindowMs: 60_000,
      unknownTokenBlockMs: 300_000,
    });
  });

  it('takes COAP2MQTT_LIMITS_* from the environment and names the key of a bad value', () => {
    const result = loadConfig({ env: { COAP2MQTT_LIMITS_DEVICE_REQUESTS_PER_SECOND: '0', COAP2MQTT_LIMITS_REQUESTS_PER_SECOND: '2000' } });
    expect(result.ok && result.config.limits).toMatchObject({ deviceRequestsPerSecond: 0, requestsPerSecond: 2000 });
    const bad = loadConfig({ env: { COAP2MQTT_LIMITS_DEVICE_BURST: '0' } });
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.errors.join('\n')).toMatch(/limits\.deviceBurst: must be a whole number from 1 to 1000000, e\.g\. 100 \(got "0" from COAP2MQTT_LIMITS_DEVICE_BURST\)/);
  });
});

describe('too-many-requests refusals', () => {
  it('say when to retry in whole seconds, at least 1, rounded up; CoAP renders them as 4.29 with Max-Age', () => {
    expect(tooManyRequests(0, 'x').retryAfterSeconds).toBe(1);
    expect(tooManyRequests(1, 'x').retryAfterSeconds).toBe(1);
    expect(tooManyRequests(1000, 'x').retryAfterSeconds).toBe(1);
    expect(tooManyRequests(1001, 'x').retryAfterSeconds).toBe(2);
    expect(tooManyRequests(299_500, 'x')).toEqual({ problem: 'too-many-requests', retryAfterSeconds: 300, reason: 'x; retry in 300 s' });
    expect(refusal(tooManyRequests(299_500, 'x'))).toEqual({ code: ResponseCode.TooManyRequests, maxAge: 300, payload: 'x; retry in 300 s' });
  });
});

describe('the gateway-wide limit', () => {
  it('admits the burst, refuses beyond it with 4.29, and admits again as the bucket refills', () => {
    const limits = limitsWith({ requestsPerSecond: 2, burst: 3 });
    expect([1, 2, 3].map(() => limits.admitRequest(T0))).toEqual([undefined, undefined, undefined]);
    const refused = limits.admitRequest(T0);
    expect(refused).toMatchObject({ problem: 'too-many-requests', retryAfterSeconds: 1 });
    expect(refused?.reason).toMatch(/too many requests from all devices together/);
    expect(limits.admitRequest(T0 + 499)).toBeDefined();
    expect(limits.admitRequest(T0 + 500)).toBeUndefined();
    expect(limits.stats(T0)).toMatchObject({ refusedGlobal: 2, refusedDevice: 0 });
  });

  it('takes one second\'s worth as the burst when burst is 0, and logs the overload once', () => {
    const limits = limitsWith({ requestsPerSecond: 5 });
    for (let i = 0; i < 5; i++) expect(limits.admitRequest(T0)).toBeUndefined();
    expect(limits.admitRequest(T0)).toBeDefined();
    expect(limits.admitRequest(T0)).toBeDefined();
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toMatch(/limits\.requestsPerSecond/);
  });

  it('admits everything when off', () => {
    const limits = limitsWith({});
    for (let i = 0; i < 10_000; i++) expect(limits.admitRequest(T0)).toBeUndefined();
  });
});

describe('per-device limits', () => {
  it('keep a bucket per device, so one device over its limit does not slow another', () => {
    const limits = limitsWith({ deviceRequestsPerSecond: 1, deviceBurst: 2 });
    expect(limits.admitDevice('Boiler-7', T0)).toBeUndefined();
    expect(limits.admitDevice('Boiler-7', T0)).toBeUndefined();
    const refused = limits.admitDevice('Boiler-7', T0 + 10);
    expect(refused).toMatchObject({ problem: 'too-many-requests', retryAfterSeconds: 1 });
    expect(refused?.reason).toMatch(/too many requests from this device \(limit 1\/s, burst 2\)/);
    expect(limits.admitDevice('Pump-2', T0 + 10)).toBeUndefined();
    expect(limits.admitDevice('Boiler-7', T0 + 1000)).toBeUndefined();
    expect(limits.stats(T0)).toMatchObject({ refusedDevice: 1, refusedGlobal: 0 });
  });

  it('says in Max-Age how long until the next request would be accepted', () => {
    const limits = limitsWith({ deviceRequestsPerSecond: 1, deviceBurst: 1 });
    limits.admitDevice('Boiler-7', T0);
    expect(limits.admitDevice('Boiler-7', T0)?.retryAfterSeconds).toBe(1);
    expect(limits.admitDevice('Boiler-7', T0 + 999)?.retryAfterSeconds).toBe(1);
  });

  it('warns once per device, naming it, then only at debug', () => {
    const limits = limitsWith({ deviceRequestsPerSecond: 1, deviceBurst: 1 });
    for (let i = 0; i < 5; i++) limits.admitDevice('Boiler-7', T0);
    limits.admitDevice('Pump-2', T0);
    limits.admitDevice('Pump-2', T0);
    expect(warnings().map((line) => line.device)).toEqual(['Boiler-7', 'Pump-2']);
  });
});

describe('unknown-token blocks', () => {
  const guard = () => limitsWith({ unknownTokenFailures: 3, unknownTokenWindowMs: 10_000, unknownTokenBlockMs: 60_000 });

  it('blocks an address after that many different unknown tokens, for the block time, with Max-Age', () => {
    const limits = guard();
    limits.unknownToken('192.0.2.7', 'guess-1', T0);
    limits.unknownToken('192.0.2.7', 'guess-2', T0 + 1000);
    expect(limits.refuseBlockedSource('192.0.2.7', T0 + 1000)).toBeUndefined();
    limits.unknownToken('192.0.2.7', 'guess-3', T0 + 2000);
    const refused = limits.refuseBlockedSource('192.0.2.7', T0 + 2000);
    expect(refused).toMatchObject({ problem: 'too-many-requests', retryAfterSeconds: 60 });
    expect(refused?.reason).toMatch(/too many unknown access tokens from this address/);
    expect(limits.refuseBlockedSource('192.0.2.7', T0 + 31_500)?.retryAfterSeconds).toBe(31);
    expect(limits.refuseBlockedSource('192.0.2.8', T0 + 2000)).toBeUndefined();
    expect(limits.stats(T0 + 2000)).toMatchObject({ refusedBlockedAddress: 2, addressesBlocked: 1, addressBlocks: 1 });
    expect(limits.refuseBlockedSource('192.0.2.7', T0 + 62_000)).toBeUndefined();
    expect(limits.stats(T0 + 62_000)).toMatchObject({ addressesBlocked: 0, addressBlocks: 1 });
  });

  it('logs one warning per block with the address and the count, never a token', () => {
    const limits = guard();
    for (const token of ['secret-guess-a', 'secret-guess-b', 'secret-guess-c']) limits.unknownToken('192.0.2.7', token, T0);
    for (let i = 0; i < 5; i++) limits.refuseBlockedSource('192.0.2.7', T0 + i);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ peer: '192.0.2.7', blocked: '192.0.2.7', unknownTokens: 3, blockMs: 60_000 });
    expect(JSON.stringify(logs)).not.toMatch(/secret-guess/);
    expect(logs.filter((line) => line.level !== 'debug' && line.level !== 'warn')).toEqual([]);
  });

  it('counts a repeated wrong token once, so a device retrying a stale token is never blocked', () => {
    const limits = guard();
    for (let i = 0; i < 100; i++) limits.unknownToken('192.0.2.7', 'stale-token', T0 + i);
    limits.unknownToken('192.0.2.7', 'another', T0 + 100);
    expect(limits.refuseBlockedSource('192.0.2.7', T0 + 100)).toBeUndefined();
  });

  it('forgets failures once the window has passed', () => {
    const limits = guard();
    limits.unknownToken('192.0.2.7', 'a', T0);
    limits.unknownToken('192.0.2.7', 'b', T0 + 5000);
    limits.unknownToken('192.0.2.7', 'c', T0 + 10_000);
    expect(limits.refuseBlockedSource('192.0.2.7', T0 + 10_000)).toBeUndefined();
    limits.unknownToken('192.0.2.7', 'd', T0 + 11_000);
    limits.unknownToken('192.0.2.7', 'e', T0 + 12_000);
    expect(limits.refuseBlockedSource('192.0.2.7', T0 + 12_000)).toBeDefined();
  });

  it('starts counting afresh after a block ends', () => {
    const limits = guard();
    for (const token of ['a', 'b', 'c']) limits.unknownToken('192.0.2.7', token, T0);
    const after = T0 + 60_000;
    limits.unknownToken('192.0.2.7', 'd', after);
    limits.unknownToken('192.0.2.7', 'e', after);
    expect(limits.refuseBlockedSource('192.0.2.7', after)).toBeUndefined();
    limits.unknownToken('192.0.2.7', 'f', after);
    expect(limits.refuseBlockedSource('192.0.2.7', after)).toBeDefined();
    expect(limits.stats(after)).toMatchObject({ addressBlocks: 2, addressesBlocked: 1 });
  });

  it('counts an IPv6 /64 as one address, and an IPv4-mapped address as its IPv4 one', () => {
    const limits = guard();
    limits.unknownToken('2001:db8:1:2::a', 'a', T0);
    limits.unknownToken('2001:db8:1:2:ffff::1', 'b', T0);
    limits.unknownToken('2001:0db8:0001:0002:1:2:3:4', 'c', T0);
    expect(limits.refuseBlockedSource('2001:db8:1:2::99', T0)).toBeDefined();
    expect(limits.refuseBlockedSource('2001:db8:1:3::a', T0)).toBeUndefined();

    for (const token of ['a', 'b', 'c']) limits.unknownToken('::ffff:192.0.2.9', token, T0);
    expect(limits.refuseBlockedSource('192.0.2.9', T0)).toBeDefined();
  });

  it('never blocks when off', () => {
    const limits = limitsWith({ unknownTokenFailures: 0 });
    for (let i = 0; i < 1000; i++) limits.unknownToken('192.0.2.7', `guess-${i}`, T0);
    expect(limits.refuseBlockedSource('192.0.2.7', T0)).toBeUndefined();
    expect(limits.stats(T0)).toMatchObject({ addressesBlocked: 0, addressBlocks: 0 });
  });
});

describe('source keys', () => {
  it.each([
    ['192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64%eth0'],
    ['2001:db8::', '2001:db8:0:0::/64'],
    ['2001:db8:a:b:c:d:e:f', '2001:db8:a:b::/64'],
    ['2001:DB8:A:B::1.2.3.4', '2001:db8:a:b::/64'],
    ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
  ])('%s → %s', (address, key) => {
    expect(sourceKey(address)).toBe(key);
  });
});

describe('the gateway-wide limit in the message layer', () => {
  let transport: MemoryTransport;
  let handled: CoapRequest[];
  let layer: CoapMessageLayer;
  let limits: RequestLimits;
  const peer = (): Peer => ({ key: '192.0.2.1:40000', address: '192.0.2.1', port: 40000, transport });
  const path = [{ name: 'Uri-Path' as const, value: Buffer.from('x') }];
  const con = (messageId: number, packet: Partial<coapPacket.Packet> = {}): Buffer =>
    coapPacket.generate({ code: 'POST', confirmable: true, messageId, token: Buffer.from([messageId & 0xff]), options: path, ...packet });

  beforeEach(() => {
    // The layer reads the wall clock for each request; a frozen one keeps the bucket from refilling.
    vi.useFakeTimers({ now: T0 });
    transport = new MemoryTransport();
    handled = [];
    limits = limitsWith({ requestsPerSecond: 1, burst: 2 });
    layer = new CoapMessageLayer(
      { piggybackWindowMs: 500, maxBodyBytes: 1024, maxBlockTransfers: 10, blockTransferIdleMs: 60_000, dedupMaxEntries: 10_000, limits: coapAdmission(limits) },
      (request) => (handled.push(request), { code: ResponseCode.Created }),
      createLogger('silent'),
    );
  });

  afterEach(() => {
    layer.stop();
    vi.useRealTimers();
  });

  it('answers a new request beyond the limit 4.29 with Max-Age, before the handler runs', () => {
    layer.receive(con(1), peer());
    layer.receive(con(2), peer());
    layer.receive(con(3), peer());
    expect(handled).toHaveLength(2);
    const answers = transport.take();
    expect(answers.map((answer) => answer.code)).toEqual(['2.01', '2.01', '4.29']);
    expect(answers[2]).toMatchObject({ ack: true, messageId: 3 });
    expect(answers[2]!.options.find((option) => option.name === 'Max-Age')?.value).toEqual(Buffer.from([1]));
    expect(limits.stats().refusedGlobal).toBe(1);
  });

  it('answers retransmissions from the cache without counting them, admitted or refused', () => {
    layer.receive(con(1), peer());
    for (let i = 0; i < 5; i++) layer.receive(con(1), peer());
    layer.receive(con(2), peer());
    layer.receive(con(3), peer());
    layer.receive(con(3), peer());
    expect(transport.take().map((answer) => answer.code)).toEqual(['2.01', '2.01', '2.01', '2.01', '2.01', '2.01', '2.01', '4.29', '4.29']);
    expect(handled).toHaveLength(2);
    expect(limits.stats().refusedGlobal).toBe(1);
  });

  it('counts a Block1 upload once, at its first block', () => {
    const block = (num: number, more: boolean) => ({ name: 'Block1' as const, value: encodeBlock({ num, more, szx: 0 }) });
    for (let num = 0; num < 4; num++) {
      layer.receive(con(10 + num, { options: [...path, block(num, num < 3)], payload: Buffer.alloc(16, 0x61) }), peer());
    }
    expect(transport.take().map((answer) => answer.code)).toEqual(['2.31', '2.31', '2.31', '2.01']);
    expect(handled).toHaveLength(1);
    layer.receive(con(20), peer());
    layer.receive(con(21), peer());
    expect(transport.take().map((answer) => answer.code)).toEqual(['2.01', '4.29']);
  });

  it('never refuses an Observe deregistration', () => {
    layer.receive(con(1), peer());
    layer.receive(con(2), peer());
    const deregister = coapPacket.generate({
      code: 'GET',
      confirmable: true,
      messageId: 3,
      token: Buffer.from('o'),
      options: [{ name: 'Observe', value: Buffer.from([1]) }, ...path],
    });
    layer.receive(deregister, peer());
    expect(transport.take().map((answer) => answer.code)).toEqual(['2.01', '2.01', '2.01']);
    expect(limits.stats().refusedGlobal).toBe(0);
  });
});
