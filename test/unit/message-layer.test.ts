// The message layer against hand-built datagrams and an in-memory transport.
import * as coapPacket from 'coap-packet';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ResponseCode } from '../../src/coap/codes.js';
import { CoapMessageLayer, type MessageLayerOptions } from '../../src/coap/message-layer.js';
import type { CoapRequest, CoapResponse, RequestHandler } from '../../src/coap/request.js';
import type { Peer } from '../../src/coap/transport.js';
import { createLogger } from '../../src/log.js';
import { MemoryTransport } from '../helpers/memory-transport.js';

const OPTIONS: MessageLayerOptions = {
  piggybackWindowMs: 500,
  maxBodyBytes: 64,
  maxBlockTransfers: 10,
  blockTransferIdleMs: 60_000,
  dedupMaxEntries: 10_000,
};

let transport: MemoryTransport;
let handled: CoapRequest[];
let layer: CoapMessageLayer;
const peer = (port = 40000): Peer => ({ key: `192.0.2.1:${port}`, address: '192.0.2.1', port, transport });

function setup(handler: RequestHandler = (request) => (handled.push(request), { code: ResponseCode.Created })): void {
  transport = new MemoryTransport();
  handled = [];
  layer = new CoapMessageLayer(OPTIONS, handler, createLogger('silent'));
}

const request = (packet: coapPacket.Packet): Buffer =>
  coapPacket.generate({ code: 'POST', confirmable: true, messageId: 1, token: Buffer.from('t'), ...packet });
const path = (...segments: string[]) => segments.map((s) => ({ name: 'Uri-Path' as const, value: Buffer.from(s) }));

afterEach(() => {
  layer.stop();
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('requests and responses', () => {
  beforeEach(() => setup());

  it('answers a CON with a piggybacked ACK carrying the token and message id', () => {
    layer.receive(request({ messageId: 0x0102, token: Buffer.from('tok'), options: path('a', 'b'), payload: Buffer.from('x') }), peer());
    expect(handled).toHaveLength(1);
    expect(handled[0]!.uriPath).toEqual(['a', 'b']);
    expect(handled[0]!.payload.toString()).toBe('x');
    const [answer] = transport.take();
    expect(answer).toMatchObject({ ack: true, code: '2.01', messageId: 0x0102, token: Buffer.from('tok') });
  });

  it('answers a NON with a NON', () => {
    layer.receive(request({ confirmable: false, messageId: 9 }), peer());
    const [answer] = transport.take();
    expect(answer).toMatchObject({ ack: false, confirmable: false, reset: false, code: '2.01' });
  });

  it('handles a duplicate CON once and replays the same answer', () => {
    const datagram = request({ messageId: 77 });
    layer.receive(datagram, peer());
    layer.receive(datagram, peer());
    expect(handled).toHaveLength(1);
    const [first, second] = transport.take();
    expect(second).toEqual(first);
    expect(layer.stats.duplicates).toBe(1);
  });

  it('tells peers apart: the same message id from another port is a new message', () => {
    layer.receive(request({ messageId: 77 }), peer(1));
    layer.receive(request({ messageId: 77 }), peer(2));
    expect(handled).toHaveLength(2);
  });

  it('answers a CoAP ping (empty CON) with a Reset and ignores an empty NON', () => {
    layer.receive(Buffer.from([0x40, 0x00, 0x12, 0x34]), peer());
    layer.receive(Buffer.from([0x50, 0x00, 0x12, 0x35]), peer());
    const sent = transport.take();
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ reset: true, messageId: 0x1234 });
  });

  it('resets a malformed CON and silently drops a malformed NON, ACK or RST', () => {
    layer.receive(Buffer.from('4902000101020304050607080900', 'hex'), peer()); // CON, token length 9
    layer.receive(Buffer.from('5902000201020304050607080900', 'hex'), peer()); // NON, same fault
    layer.receive(Buffer.from('6902000301020304050607080900', 'hex'), peer()); // ACK, same fault
    expect(transport.take()).toEqual([expect.objectContaining({ reset: true, messageId: 1 })]);
    expect(layer.stats.malformed).toBe(3);
    expect(handled).toHaveLength(0);
  });

  it('resets a CON carrying a response code, and one with a reserved code class', () => {
    layer.receive(coapPacket.generate({ code: '2.05', confirmable: true, messageId: 5 }), peer());
    layer.receive(coapPacket.generate({ code: '7.01', confirmable: true, messageId: 6 }), peer());
    expect(transport.take().map((p) => [p.reset, p.messageId])).toEqual([
      [true, 5],
      [true, 6],
    ]);
  });

  it('refuses an unknown critical option with 4.02 and ignores an unknown elective one', () => {
    layer.receive(request({ messageId: 1, options: [{ name: '2049', value: Buffer.from('x') }] }), peer());
    layer.receive(request({ messageId: 2, options: [{ name: '2048', value: Buffer.from('x') }] }), peer());
    const [bad, fine] = transport.take();
    expect(bad).toMatchObject({ code: '4.02', messageId: 1 });
    expect(bad!.payload.toString()).toMatch(/unknown critical option 2049/);
    expect(fine).toMatchObject({ code: '2.01', messageId: 2 });
    expect(handled).toHaveLength(1);
  });

  it('rejects a NON with an unknown critical option with a Reset', () => {
    layer.receive(request({ confirmable: false, messageId: 3, options: [{ name: 'If-Match', value: Buffer.from('x') }] }), peer());
    expect(transport.take()).toEqual([expect.objectContaining({ reset: true, messageId: 3 })]);
  });

  it('refuses a repeated non-repeatable critical option and an over-long Content-Format', () => {
    layer.receive(request({ messageId: 1, options: [{ name: 'Block1', value: Buffer.from([0x08]) }, { name: 'Block1', value: Buffer.from([0x18]) }] }), peer());
    layer.receive(request({ messageId: 2, options: [{ name: 'Accept', value: Buffer.from([1, 2, 3]) }] }), peer());
    expect(transport.take().map((p) => p.code)).toEqual(['4.02', '4.02']);
  });

  it('answers a proxy request with 5.05', () => {
    layer.receive(request({ options: [{ name: 'Proxy-Uri', value: Buffer.from('coap://elsewhere/') }] }), peer());
    expect(transport.take()[0]).toMatchObject({ code: '5.05' });
  });

  it('answers 4.13 with Size1 to a body over the limit without handling it', () => {
    layer.receive(request({ payload: Buffer.alloc(65, 0x61) }), peer());
    const [answer] = transport.take();
    expect(answer!.code).toBe('4.13');
    expect(answer!.options).toContainEqual({ name: 'Size1', value: Buffer.from([64]) });
    expect(handled).toHaveLength(0);
  });

  it('sends error diagnostics as text without a Content-Format, per RFC 7252 §5.5.2', () => {
    setup(() => ({ code: ResponseCode.BadRequest, payload: 'bad JSON' }));
    layer.receive(request({}), peer());
    const [answer] = transport.take();
    expect(answer!.payload.toString()).toBe('bad JSON');
    expect(answer!.options).toEqual([]);
  });

  it('answers 5.00 when a handler throws or rejects, and keeps serving', async () => {
    setup(() => {
      throw new Error('boom');
    });
    layer.receive(request({ messageId: 1 }), peer());
    setup(() => Promise.reject(new Error('boom')));
    layer.receive(request({ messageId: 2 }), peer());
    await vi.waitFor(() => expect(transport.sent).toHaveLength(1));
    expect(transport.take()[0]).toMatchObject({ code: '5.00' });
    expect(layer.stats.handlerErrors).toBe(1);
  });
});

describe('Block1', () => {
  beforeEach(() => setup());

  it('acknowledges each block with 2.31, hands the whole body to the handler, echoes the last block', () => {
    const body = Buffer.from('0123456789abcdef0123456789abcdef0123');
    const blocks = [body.subarray(0, 16), body.subarray(16, 32), body.subarray(32)];
    blocks.forEach((chunk, num) => {
      const more = num < blocks.length - 1;
      layer.receive(request({ messageId: 100 + num, token: Buffer.from([num]), options: [...path('up'), { name: 'Block1', value: Buffer.from([(num << 4) | (more ? 8 : 0)]) }], payload: chunk }), peer());
    });
    const answers = transport.take();
    expect(answers.map((a) => a.code)).toEqual(['2.31', '2.31', '2.01']);
    expect(answers[0]!.options).toContainEqual({ name: 'Block1', value: Buffer.from([0x08]) });
    expect(answers[2]!.options).toContainEqual({ name: 'Block1', value: Buffer.from([0x20]) });
    expect(handled).toHaveLength(1);
    expect(handled[0]!.payload).toEqual(body);
  });

  it('answers 4.08 to a block out of order', () => {
    layer.receive(request({ options: [...path('up'), { name: 'Block1', value: Buffer.from([0x18]) }], payload: Buffer.alloc(16) }), peer());
    expect(transport.take()[0]).toMatchObject({ code: '4.08' });
  });
});

describe('separate responses', () => {
  it('sends an empty ACK after the piggyback window and the answer as a CON retransmitted until ACKed', async () => {
    vi.useFakeTimers();
    let answer: (response: CoapResponse) => void = () => {};
    setup(() => new Promise<CoapResponse>((resolve) => (answer = resolve)));
    const datagram = request({ messageId: 500, token: Buffer.from('slow') });
    layer.receive(datagram, peer());
    expect(transport.take()).toEqual([]);
    layer.receive(datagram, peer()); // a retransmission while still being handled is not answered twice
    expect(transport.take()).toEqual([]);

    await vi.advanceTimersByTimeAsync(500);
    expect(transport.take()).toEqual([expect.objectContaining({ ack: true, code: '0.00', messageId: 500 })]);
    layer.receive(datagram, peer()); // the empty ACK was lost: repeat it
    expect(transport.take()).toEqual([expect.objectContaining({ ack: true, code: '0.00', messageId: 500 })]);

    answer({ code: ResponseCode.Created });
    await vi.advanceTimersByTimeAsync(0);
    const [separate] = transport.take();
    expect(separate).toMatchObject({ confirmable: true, code: '2.01', token: Buffer.from('slow') });
    expect(separate!.messageId).not.toBe(500);

    await vi.advanceTimersByTimeAsync(3000); // ACK_TIMEOUT × up to ACK_RANDOM_FACTOR
    expect(transport.take()).toEqual([expect.objectContaining({ messageId: separate!.messageId, code: '2.01' })]);
    layer.receive(Buffer.from([0x60, 0x00, separate!.messageId >> 8, separate!.messageId & 0xff]), peer());
    await vi.advanceTimersByTimeAsync(60_000);
    expect(transport.take()).toEqual([]);
  });

  it('gives up after MAX_RETRANSMIT retransmissions', async () => {
    vi.useFakeTimers();
    setup(() => new Promise<CoapResponse>((resolve) => setTimeout(() => resolve({ code: ResponseCode.Created }), 1000)));
    layer.receive(request({ messageId: 1 }), peer());
    await vi.advanceTimersByTimeAsync(200_000);
    const sent = transport.take();
    expect(sent[0]).toMatchObject({ ack: true, code: '0.00' });
    const separate = sent.slice(1);
    expect(separate).toHaveLength(1 + 4);
    expect(new Set(separate.map((p) => p.messageId)).size).toBe(1);
  });

  it('stops retransmitting when the device answers with a Reset', async () => {
    vi.useFakeTimers();
    setup(() => new Promise<CoapResponse>((resolve) => setTimeout(() => resolve({ code: ResponseCode.Created }), 1000)));
    layer.receive(request({ messageId: 1 }), peer());
    await vi.advanceTimersByTimeAsync(1000);
    const separate = transport.take()[1]!;
    layer.receive(Buffer.from([0x70, 0x00, separate.messageId >> 8, separate.messageId & 0xff]), peer());
    await vi.advanceTimersByTimeAsync(200_000);
    expect(transport.take()).toEqual([]);
  });
});

describe('message ids and options', () => {
  it('keeps counting message ids for a peer that stays busy past EXCHANGE_LIFETIME', async () => {
    // lru-cache measures ttl with the real performance object, so its clock follows the fake Date.
    vi.spyOn(performance, 'now').mockImplementation(() => Date.now());
    vi.useFakeTimers();
    setup();
    const ids: number[] = [];
    for (let i = 0; i < 4; i++) {
      layer.receive(request({ confirmable: false, messageId: i }), peer());
      ids.push(transport.take()[0]!.messageId);
      await vi.advanceTimersByTimeAsync(100_000);
    }
    expect(ids.map((id) => (id - ids[0]! + 0x10000) & 0xffff)).toEqual([0, 1, 2, 3]);
  });

  it('refuses a block size RFC 7959 does not have', () => {
    setup();
    expect(() => new CoapMessageLayer({ ...OPTIONS, maxBlockSize: 100 }, () => ({ code: ResponseCode.Content }), createLogger('silent'))).toThrow(
      /block size 100/,
    );
  });
});

describe('shutdown', () => {
  it('answers new requests 5.03 while draining and waits for those in progress', async () => {
    let answer: (response: CoapResponse) => void = () => {};
    setup(() => new Promise<CoapResponse>((resolve) => (answer = resolve)));
    layer.receive(request({ messageId: 1 }), peer());
    const drained = layer.drain(5000);
    layer.receive(request({ messageId: 2 }), peer());
    expect(transport.take()).toEqual([expect.objectContaining({ code: '5.03', messageId: 2 })]);
    answer({ code: ResponseCode.Created });
    await drained;
    expect(transport.take()).toEqual([expect.objectContaining({ code: '2.01', messageId: 1 })]);
  });
});
