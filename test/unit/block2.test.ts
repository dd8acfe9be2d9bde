// Block2 (RFC 7959): the slicer on its own, then large responses and notifications through the message layer.
import * as coapPacket from 'coap-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeBlock, encodeBlock, type BlockOption } from '../../src/coap/block.js';
import { BEYOND_THE_END, Block2Responder, exceedsBlock, sizeExponent } from '../../src/coap/block2.js';
import { OptionNumber, ResponseCode } from '../../src/coap/codes.js';
import { CoapMessageLayer, type MessageLayerOptions } from '../../src/coap/message-layer.js';
import { decodeUint, encodeUint } from '../../src/coap/message.js';
import type { ObserveRelation } from '../../src/coap/observe-api.js';
import type { CoapRequest, CoapResponse, RequestHandler } from '../../src/coap/request.js';
import type { Peer } from '../../src/coap/transport.js';
import { createLogger } from '../../src/log.js';
import { MemoryTransport } from '../helpers/memory-transport.js';

// 150 distinct bytes, so a block from the wrong offset shows.
const BODY = Buffer.from(Array.from({ length: 150 }, (_, i) => 0x21 + (i % 90)));
const large = (payload: Buffer = BODY): CoapResponse => ({ code: ResponseCode.Content, payload, contentFormat: 50 });
const option = (response: CoapResponse, number: number): Buffer | undefined => response.options?.find((o) => o.number === number)?.value;
const blockOf = (response: CoapResponse): BlockOption | undefined => {
  const value = option(response, OptionNumber.Block2);
  return value && decodeBlock(value);
};

describe('Block2Responder', () => {
  const responder = () => new Block2Responder({ maxBlockSize: 64, maxEntries: 10, maxBytes: 100_000, ttlMs: 60_000 });

  it('accepts only the RFC 7959 block sizes', () => {
    expect([16, 64, 1024].map(sizeExponent)).toEqual([0, 2, 6]);
    for (const size of [0, 8, 48, 2048]) expect(() => sizeExponent(size)).toThrow(RangeError);
  });

  it('measures payloads in bytes, strings included', () => {
    expect(exceedsBlock({ code: ResponseCode.Content }, 0)).toBe(false);
    expect(exceedsBlock({ code: ResponseCode.Content, payload: Buffer.alloc(16) }, 0)).toBe(false);
    expect(exceedsBlock({ code: ResponseCode.Content, payload: Buffer.alloc(17) }, 0)).toBe(true);
    expect(exceedsBlock({ code: ResponseCode.Content, payload: 'é'.repeat(8) }, 0)).toBe(false); // 16 bytes
    expect(exceedsBlock({ code: ResponseCode.Content, payload: 'é'.repeat(9) }, 0)).toBe(true); // 18 bytes
  });

  it('keeps the smaller of its own and the asked block size', () => {
    const r = responder();
    expect(r.szxFor(undefined)).toBe(2);
    expect(r.szxFor({ num: 0, more: false, szx: 1 })).toBe(1);
    expect(r.szxFor({ num: 0, more: false, szx: 6 })).toBe(2);
  });

  it('slices block 0 with Size2, ETag, Observe and the response options, then serves the rest from the cache', () => {
    const r = responder();
    const echo = { number: OptionNumber.Block1, value: encodeBlock({ num: 3, more: false, szx: 2 }) };
    const first = r.slice('k', { ...large(), options: [echo] }, 2, undefined, 5);
    expect(blockOf(first)).toEqual({ num: 0, more: true, szx: 2 });
    expect(first.payload).toEqual(BODY.subarray(0, 64));
    expect(decodeUint(option(first, OptionNumber.Size2)!)).toBe(150);
    expect(decodeUint(option(first, OptionNumber.Observe)!)).toBe(5);
    expect(option(first, OptionNumber.Block1)).toEqual(echo.value);
    const etag = option(first, OptionNumber.ETag)!;
    expect(etag).toHaveLength(4);

    const second = r.followUp('k', { num: 1, more: false, szx: 2 })!;
    const third = r.followUp('k', { num: 2, more: false, szx: 2 })!;
    expect([blockOf(second), blockOf(third)]).toEqual([
      { num: 1, more: true, szx: 2 },
      { num: 2, more: false, szx: 2 },
    ]);
    expect(Buffer.concat([first.payload as Buffer, second.payload as Buffer, third.payload as Buffer])).toEqual(BODY);
    for (const block of [second, third]) {
      expect(option(block, OptionNumber.ETag)).toEqual(etag);
      expect(block.contentFormat).toBe(50);
      expect(option(block, OptionNumber.Observe)).toBeUndefined();
      expect(option(block, OptionNumber.Block1)).toBeUndefined();
    }
    expect(r.followUp('other', { num: 1, more: false, szx: 2 })).toBeUndefined();
  });

  it('answers a smaller asked size at the same offset, and a block past the end with 4.02', () => {
    const r = responder();
    r.slice('k', large(), 2, undefined, undefined);
    const small = r.followUp('k', { num: 5, more: false, szx: 0 })!; // bytes 80..96
    expect(blockOf(small)).toEqual({ num: 5, more: true, szx: 0 });
    expect(small.payload).toEqual(BODY.subarray(80, 96));
    const big = r.followUp('k', { num: 1, more: false, szx: 6 })!; // asks 1024..: past the end
    expect(big).toBe(BEYOND_THE_END);
    const scaled = r.followUp('k', { num: 1, more: false, szx: 3 })!; // 128-byte units: offset 128 at 64 bytes
    expect(blockOf(scaled)).toEqual({ num: 2, more: false, szx: 2 });
    expect(scaled.payload).toEqual(BODY.subarray(128));
    expect(r.followUp('k', { num: 3, more: false, szx: 2 })).toMatchObject({ code: ResponseCode.BadOption, payload: 'block number beyond the end' });
  });

  it('tags equal representations alike and different ones apart, and keeps a handler ETag', () => {
    const r = responder();
    const etag = (response: CoapResponse) => option(r.slice('k', response, 2, undefined, undefined), OptionNumber.ETag);
    expect(etag(large())).toEqual(etag(large()));
    expect(etag(large())).not.toEqual(etag(large(Buffer.concat([BODY, Buffer.from('!')]))));
    const own = Buffer.from([1, 2, 3]);
    expect(etag({ ...large(), options: [{ number: OptionNumber.ETag, value: own }] })).toEqual(own);
  });
});

const OPTIONS: MessageLayerOptions = {
  piggybackWindowMs: 500,
  maxBodyBytes: 1024,
  maxBlockTransfers: 10,
  blockTransferIdleMs: 60_000,
  dedupMaxEntries: 10_000,
  maxBlockSize: 64,
};

let transport: MemoryTransport;
let layer: CoapMessageLayer;
let handled: CoapRequest[];
const peer = (port = 40000): Peer => ({ key: `192.0.2.1:${port}`, address: '192.0.2.1', port, transport });

function setup(handler: RequestHandler = () => large()): void {
  transport = new MemoryTransport();
  handled = [];
  layer = new CoapMessageLayer(OPTIONS, (request) => (handled.push(request), handler(request)), createLogger('silent'));
}

interface GetOptions {
  readonly messageId?: number;
  readonly block2?: BlockOption;
  readonly observe?: number;
  readonly query?: string;
}
const get = ({ messageId = 1, block2, observe, query }: GetOptions = {}): Buffer =>
  coapPacket.generate({
    code: 'GET',
    confirmable: true,
    messageId,
    token: Buffer.from([messageId]),
    options: [
      { name: 'Uri-Path', value: Buffer.from('big') },
      ...(query === undefined ? [] : [{ name: 'Uri-Query' as const, value: Buffer.from(query) }]),
      ...(observe === undefined ? [] : [{ name: 'Observe' as const, value: encodeUint(observe) }]),
      ...(block2 === undefined ? [] : [{ name: 'Block2' as const, value: encodeBlock(block2) }]),
    ],
  });
const named = (packet: coapPacket.ParsedPacket, name: string): Buffer | undefined => packet.options.find((o) => o.name === name)?.value;
const block2Of = (packet: coapPacket.ParsedPacket): BlockOption | undefined => {
  const value = named(packet, 'Block2');
  return value && decodeBlock(value);
};
const block = (num: number, szx = 2): BlockOption => ({ num, more: false, szx });

/** Fetches blocks 1.. with follow-ups until the last, returning every block answer. */
function fetchRest(first: coapPacket.ParsedPacket, from = 10): coapPacket.ParsedPacket[] {
  const answers = [first];
  for (let num = 1; block2Of(answers.at(-1)!)?.more; num++) {
    layer.receive(get({ messageId: from + num, block2: block(num, block2Of(first)!.szx) }), peer());
    answers.push(...transport.take());
  }
  return answers;
}

describe('Block2 through the message layer', () => {
  afterEach(() => layer.stop());

  it('leaves a response that fits one block alone', () => {
    setup(() => large(BODY.subarray(0, 64)));
    layer.receive(get(), peer());
    const [answer] = transport.take();
    expect(answer!.options.map((o) => o.name)).toEqual(['Content-Format']);
    expect(layer.stats.blockResponses).toBe(0);
  });

  it('slices a large response and answers follow-ups from the cache without the handler', () => {
    setup();
    layer.receive(get(), peer());
    const [first] = transport.take();
    expect(first).toMatchObject({ ack: true, code: '2.05' });
    expect(block2Of(first!)).toEqual({ num: 0, more: true, szx: 2 });
    expect(decodeUint(named(first!, 'Size2')!)).toBe(150);
    expect(decodeUint(named(first!, 'Content-Format')!)).toBe(50);

    const answers = fetchRest(first!);
    expect(answers).toHaveLength(3);
    expect(handled).toHaveLength(1);
    expect(Buffer.concat(answers.map((a) => a.payload))).toEqual(BODY);
    expect(new Set(answers.map((a) => named(a, 'ETag')!.toString('hex'))).size).toBe(1);
    expect(answers.map((a) => [a.code, decodeUint(named(a, 'Content-Format')!)])).toEqual([
      ['2.05', 50],
      ['2.05', 50],
      ['2.05', 50],
    ]);
    expect(layer.stats.blockResponses).toBe(3);
  });

  it('uses the smaller block size a request asks for (early negotiation)', () => {
    setup();
    layer.receive(get({ block2: { num: 0, more: false, szx: 0 } }), peer());
    const [first] = transport.take();
    expect(block2Of(first!)).toEqual({ num: 0, more: true, szx: 0 });
    expect(first!.payload).toHaveLength(16);
    const answers = fetchRest(first!);
    expect(answers).toHaveLength(10);
    expect(Buffer.concat(answers.map((a) => a.payload))).toEqual(BODY);
    expect(handled).toHaveLength(1);
  });

  it('answers 4.02 to a block beyond the end', () => {
    setup();
    layer.receive(get(), peer());
    transport.take();
    layer.receive(get({ messageId: 2, block2: block(3) }), peer());
    const [answer] = transport.take();
    expect(answer).toMatchObject({ code: '4.02' });
    expect(answer!.payload.toString()).toBe('block number beyond the end');
  });

  it('keeps representations apart by peer and query, and on a miss asks the handler for the block', () => {
    setup();
    layer.receive(get(), peer());
    transport.take();
    layer.receive(get({ messageId: 2, block2: block(1), query: 'x=1' }), peer());
    layer.receive(get({ messageId: 3, block2: block(2) }), peer(40001));
    const [other, elsewhere] = transport.take();
    expect(handled).toHaveLength(3);
    expect(block2Of(other!)).toEqual({ num: 1, more: true, szx: 2 });
    expect(other!.payload).toEqual(BODY.subarray(64, 128));
    expect(elsewhere!.payload).toEqual(BODY.subarray(128));
    // The miss cached the representation: the next block needs no handler.
    layer.receive(get({ messageId: 4, block2: block(2), query: 'x=1' }), peer());
    expect(transport.take()[0]!.payload).toEqual(BODY.subarray(128));
    expect(handled).toHaveLength(3);
  });

  it('keeps nothing of a reproducible response: every block comes from the handler, with its ETag', () => {
    const etag = Buffer.from('0123456789abcdef', 'hex');
    setup(() => ({ ...large(), options: [{ number: OptionNumber.ETag, value: etag }], reproducible: true }));
    layer.receive(get(), peer());
    const [first] = transport.take();
    expect(block2Of(first!)).toEqual({ num: 0, more: true, szx: 2 });
    const answers = fetchRest(first!);
    expect(Buffer.concat(answers.map((a) => a.payload))).toEqual(BODY);
    // One handler call per block, since no copy was kept for this peer.
    expect(handled).toHaveLength(3);
    expect(answers.map((a) => named(a, 'ETag'))).toEqual([etag, etag, etag]);
  });

  it('handles a retransmission of a reproducible block again, answering the same bytes, instead of keeping a copy', () => {
    setup(() => ({ ...large(), options: [{ number: OptionNumber.ETag, value: Buffer.from('e7a9') }], reproducible: true }));
    const request = get({ messageId: 9, block2: block(1) });
    layer.receive(request, peer());
    const [answer] = transport.take();
    layer.receive(request, peer());
    const [again] = transport.take();
    expect(again).toEqual(answer);
    expect(again!.payload).toEqual(BODY.subarray(64, 128));
    expect(handled).toHaveLength(2);
    expect(layer.stats.duplicates).toBe(1);
  });

  it('slices the body of a Block1 upload answer and serves its other blocks', () => {
    setup(() => ({ code: ResponseCode.Changed, payload: BODY }));
    const post = (messageId: number, options: coapPacket.Option[], payload?: Buffer) =>
      coapPacket.generate({ code: 'POST', confirmable: true, messageId, token: Buffer.from([messageId]), options: [{ name: 'Uri-Path', value: Buffer.from('rpc') }, ...options], ...(payload ? { payload } : {}) });
    layer.receive(post(1, [{ name: 'Block1', value: encodeBlock({ num: 0, more: true, szx: 0 }) }], Buffer.alloc(16, 0x61)), peer());
    layer.receive(post(2, [{ name: 'Block1', value: encodeBlock({ num: 1, more: false, szx: 0 }) }], Buffer.from('end')), peer());
    const [, last] = transport.take();
    expect(last).toMatchObject({ code: '2.04' });
    expect(named(last!, 'Block1')).toBeDefined();
    expect(block2Of(last!)).toEqual({ num: 0, more: true, szx: 2 });
    layer.receive(post(3, [{ name: 'Block2', value: encodeBlock(block(1)) }]), peer());
    const [next] = transport.take();
    expect(next!.payload).toEqual(BODY.subarray(64, 128));
    expect(handled).toHaveLength(1);
  });
});

describe('Block2 with Observe', () => {
  afterEach(() => layer.stop());
  let relation: ObserveRelation | undefined;
  const observable: RequestHandler = (request) => {
    if (request.observation) relation = request.observation.accept({ current: () => large(), onEnd: () => {} });
    return large();
  };

  it('sends a large registration answer as block 0 with Observe and serves the rest', () => {
    setup(observable);
    layer.receive(get({ observe: 0 }), peer());
    const [first] = transport.take();
    expect(decodeUint(named(first!, 'Observe')!)).toBe(0);
    expect(block2Of(first!)).toMatchObject({ num: 0, more: true });
    // Some clients repeat Observe on follow-ups: still a plain block fetch, not a registration.
    layer.receive(get({ messageId: 2, block2: block(1), observe: 0 }), peer());
    const [second] = transport.take();
    expect(named(second!, 'Observe')).toBeUndefined();
    expect(second!.payload).toEqual(BODY.subarray(64, 128));
    expect(handled).toHaveLength(1);
    expect(layer.stats.observations).toBe(1);
  });

  it('sends a large notification as block 0 with Observe, the rest fetched like any response', async () => {
    setup(observable);
    layer.receive(get({ observe: 0, block2: { num: 0, more: false, szx: 1 } }), peer());
    transport.take();
    const changed = Buffer.concat([BODY, Buffer.from('changed')]);
    const outcome = relation!.notify(large(changed));
    const [notification] = transport.take();
    expect(notification).toMatchObject({ confirmable: true, code: '2.05' });
    expect(decodeUint(named(notification!, 'Observe')!)).toBe(1);
    expect(block2Of(notification!)).toEqual({ num: 0, more: true, szx: 1 }); // the size asked at registration
    expect(decodeUint(named(notification!, 'Size2')!)).toBe(changed.length);
    layer.receive(Buffer.from([0x60, 0x00, notification!.messageId >> 8, notification!.messageId & 0xff]), peer());
    expect(await outcome).toBe('acknowledged');

    const answers = fetchRest(notification!);
    expect(Buffer.concat(answers.map((a) => a.payload))).toEqual(changed);
    expect(new Set(answers.map((a) => named(a, 'ETag')!.toString('hex'))).size).toBe(1);
    expect(handled).toHaveLength(1);
  });
});
