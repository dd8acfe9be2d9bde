// What the request and RPC metrics count: answers by transport, route (the operation, never the path) and
// code, including those the message layer gives before a route sees the request; RPC round trips.
import * as coapPacket from 'coap-packet';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RpcRoundTrips } from '../../src/bridge/rpc-round-trips.js';
import { ResponseCode } from '../../src/coap/codes.js';
import { RequestLimits } from '../../src/device-api/limits.js';
import { CoapMessageLayer } from '../../src/coap/message-layer.js';
import { ResponseCounts } from '../../src/coap/response-counts.js';
import type { Dialect } from '../../src/device-api/dialect.js';
import { operationOf, parseApiPath } from '../../src/device-api/dialects/thingsboard.js';
import { createDeviceApi } from '../../src/device-api/index.js';
import { Operation } from '../../src/device-api/operations.js';
import { coapAdmission, createCoapFrontEnd } from '../../src/front-ends/coap/router.js';
import type { Peer } from '../../src/coap/transport.js';
import { encodeBlock } from '../../src/coap/block.js';
import { createLogger } from '../../src/log.js';
import { MemoryTransport } from '../helpers/memory-transport.js';

const T0 = 1_800_000_000_000;

describe('requests by transport, route and code', () => {
  let udp: MemoryTransport;
  let dtls: MemoryTransport & { readonly name: string };
  let layer: CoapMessageLayer;
  const peer = (transport: MemoryTransport = udp): Peer => ({ key: `192.0.2.1:40000 ${transport.name}`, address: '192.0.2.1', port: 40000, transport });
  const con = (messageId: number, path: string, packet: Partial<coapPacket.Packet> = {}): Buffer =>
    coapPacket.generate({
      code: 'POST',
      confirmable: true,
      messageId,
      token: Buffer.from([messageId & 0xff]),
      options: path.split('/').filter(Boolean).map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })),
      ...packet,
    });

  beforeEach(() => {
    vi.useFakeTimers({ now: T0 });
    udp = new MemoryTransport();
    dtls = Object.assign(new MemoryTransport(), { name: 'dtls' });
    // A stand-in dialect: everything under /api/v1 is telemetry.
    const api: Dialect = {
      hint: 'the stand-in lives under /api/v1',
      claim: (segments) => (segments[0] === 'api' && segments[1] === 'v1' ? segments : undefined),
      handle: () => ({ operation: Operation.telemetry, outcome: { kind: 'accepted' } }),
      operationOf: () => Operation.telemetry,
    };
    const limits = new RequestLimits(
      { requestsPerSecond: 1, burst: 4, deviceRequestsPerSecond: 0, deviceBurst: 0, unknownTokenFailures: 0, unknownTokenWindowMs: 60_000, unknownTokenBlockMs: 60_000 },
      createLogger('silent'),
      T0,
    );
    layer = new CoapMessageLayer(
      { piggybackWindowMs: 500, maxBodyBytes: 64, maxBlockTransfers: 10, blockTransferIdleMs: 60_000, dedupMaxEntries: 10_000, limits: coapAdmission(limits) },
      createCoapFrontEnd(createDeviceApi({ dialects: [api] })),
      createLogger('silent'),
    );
  });

  afterEach(() => {
    layer.stop();
    vi.useRealTimers();
  });

  const counts = () =>
    Object.fromEntries(layer.responses.snapshot().map(({ transport, operation, code, count }) => [`${transport} ${operation} ${code}`, count]));

  it('labels what the route handled, what it refused and what the message layer answered first', () => {
    layer.receive(con(1, '/api/v1/secret-token/telemetry'), peer());
    layer.receive(con(1, '/api/v1/secret-token/telemetry'), peer()); // a retransmission: answered from the cache
    layer.receive(con(2, '/nowhere/secret-token'), peer());
    // An unsupported critical option (If-Match): refused before the path is read.
    layer.receive(con(3, '/api/v1/t/telemetry', { options: [{ name: 'If-Match', value: Buffer.from([1]) }] }), peer());
    layer.receive(con(4, '/api/v1/t/telemetry'), peer(dtls));
    // Too large: 4.13 before the route sees it, still labelled by its path.
    layer.receive(con(5, '/api/v1/t/telemetry', { payload: Buffer.alloc(100) }), peer());
    // Over the gateway-wide limit (burst 4): 4.29, likewise.
    layer.receive(con(6, '/api/v1/t/telemetry'), peer());
    expect(counts()).toEqual({
      'udp unknown 4.02': 1,
      'udp other 4.04': 1,
      'udp telemetry 2.01': 1,
      'udp telemetry 4.13': 1,
      'udp telemetry 4.29': 1,
      'dtls telemetry 2.01': 1,
    });
    expect(JSON.stringify(layer.responses.snapshot())).not.toContain('secret-token');
  });

  it('counts each Block1 block, its 2.31 included, under the route', () => {
    vi.setSystemTime(T0 + 10_000);
    const block = (num: number, more: boolean) => ({ name: 'Block1' as const, value: encodeBlock({ num, more, szx: 0 }) });
    for (let num = 0; num < 3; num++) {
      layer.receive(con(10 + num, '/api/v1/t/telemetry', { options: [{ name: 'Uri-Path', value: Buffer.from('api/v1/t/telemetry') }, block(num, num < 2)], payload: Buffer.alloc(16, 0x61) }), peer());
    }
    expect(counts()).toEqual({ 'udp telemetry 2.31': 2, 'udp telemetry 2.01': 1 });
  });

  it('labels ThingsBoard paths by operation', () => {
    const of = (method: 'GET' | 'POST', path: string, observe?: number) =>
      operationOf({ method, updates: observe === 0 ? 'open' : observe === 1 ? 'close' : undefined }, parseApiPath(['api', 'v1', ...path.split('/')]));
    expect(of('POST', 'tok/telemetry')).toBe(Operation.telemetry);
    expect(of('POST', 'tok/attributes')).toBe(Operation.attributes);
    expect(of('GET', 'tok/attributes')).toBe(Operation.attributes_read);
    expect(of('GET', 'tok/attributes', 0)).toBe(Operation.attributes_observe);
    expect(of('GET', 'rpc', 0)).toBe(Operation.rpc_observe);
    expect(of('POST', 'tok/rpc/12')).toBe(Operation.rpc_reply);
    expect(of('POST', 'rpc')).toBe(Operation.client_rpc);
    expect(of('POST', 'tok/claim')).toBe(Operation.claim);
    expect(of('POST', 'tok/firmware')).toBe(Operation.firmware);
    expect(of('POST', 'tok/whatever')).toBe(Operation.unknown);
  });

  it('counts unlabelled handlers as "unknown"', () => {
    const counts = new ResponseCounts();
    counts.count(udp, 5, ResponseCode.Created);
    expect(counts.snapshot()).toEqual([{ transport: 'udp', operation: 'unknown', code: '2.01', count: 1 }]);
  });
});

describe('server-side RPC round trips', () => {
  it('times arrival to reply or drop, once per RPC', () => {
    let now = 1000;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    const trips = new RpcRoundTrips(60_000);
    const ends: Array<[string, number]> = [];
    trips.onEnd((end, seconds) => ends.push([end, seconds]));
    trips.arrived('Boiler-7', 1);
    trips.arrived('Pump-2', 1);
    now += 250;
    trips.arrived('Boiler-7', 1); // sent again by ThingsBoard: the clock keeps running
    now += 250;
    trips.ended('Boiler-7', 1, 'replied');
    trips.ended('Boiler-7', 1, 'replied'); // a second reply counts once
    trips.ended('Pump-2', 1, 'dropped');
    trips.ended('Nobody', 9, 'replied');
    expect(ends).toEqual([
      ['replied', 0.5],
      ['dropped', 0.5],
    ]);
    expect(trips.stats()).toEqual({ received: 3, pending: 0, unanswered: 0 });
    vi.restoreAllMocks();
  });

  it('forgets RPCs nobody answers, after the horizon or beyond its size', () => {
    let now = 0;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    const trips = new RpcRoundTrips(10_000, 2);
    trips.arrived('a', 1);
    now = 5_000;
    trips.arrived('a', 2);
    now = 8_000;
    trips.arrived('a', 3); // the table holds 2: the oldest goes
    expect(trips.stats()).toEqual({ received: 3, pending: 2, unanswered: 1 });
    now = 15_500;
    trips.expire();
    expect(trips.stats()).toEqual({ received: 3, pending: 1, unanswered: 2 });
    vi.restoreAllMocks();
  });
});
