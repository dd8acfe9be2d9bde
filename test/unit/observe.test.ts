// RFC 7641 Observe through the message layer, against hand-built datagrams and an in-memory transport.
import * as coapPacket from 'coap-packet';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ResponseCode } from '../../src/coap/codes.js';
import { CoapMessageLayer, type MessageLayerOptions } from '../../src/coap/message-layer.js';
import { encodeUint } from '../../src/coap/message.js';
import type { ObservationEndReason, ObserveRelation } from '../../src/coap/observe-api.js';
import type { CoapRequest, CoapResponse, RequestHandler } from '../../src/coap/request.js';
import type { Peer } from '../../src/coap/transport.js';
import { createLogger } from '../../src/log.js';
import { MemoryTransport, ack, observeOf, reset, track } from '../helpers/memory-transport.js';

const CHECK_INTERVAL_MS = 10_000;
const OPTIONS: MessageLayerOptions = {
  piggybackWindowMs: 500,
  maxBodyBytes: 1024,
  maxBlockTransfers: 10,
  blockTransferIdleMs: 60_000,
  dedupMaxEntries: 10_000,
  observeCheckIntervalMs: CHECK_INTERVAL_MS,
};

let transport: MemoryTransport;
let layer: CoapMessageLayer;
let handled: CoapRequest[];
let relations: ObserveRelation[];
let ends: ObservationEndReason[];
let current: CoapResponse;
const peer = (port = 40000): Peer => ({ key: `192.0.2.1:${port}`, address: '192.0.2.1', port, transport });
const content = (payload: string): CoapResponse => ({ code: ResponseCode.Content, payload: Buffer.from(payload), contentFormat: 0 });

/** Accepts a registration offer the way a route would, recording the relation and how it ends. */
function accept(request: CoapRequest): ObserveRelation {
  const relation = request.observation!.accept({ current: () => current, onEnd: (reason) => ends.push(reason) });
  relations.push(relation);
  return relation;
}

/** A resource that accepts every registration, like a route serving /attributes would. */
const observable: RequestHandler = (request) => {
  handled.push(request);
  if (request.observation) accept(request);
  return content('state');
};

function setup(handler: RequestHandler = observable, options: Partial<MessageLayerOptions> = {}): void {
  transport = new MemoryTransport();
  handled = [];
  relations = [];
  ends = [];
  current = content('current');
  layer = new CoapMessageLayer({ ...OPTIONS, ...options }, handler, createLogger('silent'));
}

interface GetOptions {
  readonly messageId?: number;
  readonly token?: string;
  readonly observe?: number;
  readonly confirmable?: boolean;
}
const get = ({ messageId = 1, token = 'obs', observe, confirmable = true }: GetOptions = {}): Buffer =>
  coapPacket.generate({
    code: 'GET',
    confirmable,
    messageId,
    token: Buffer.from(token),
    options: [
      ...(observe === undefined ? [] : [{ name: 'Observe' as const, value: encodeUint(observe) }]),
      { name: 'Uri-Path', value: Buffer.from('obs') },
    ],
  });
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Registers with a CON (or NON) GET and returns the relation and the registration's answer. */
function register(options: GetOptions = {}): { relation: ObserveRelation; answer: coapPacket.ParsedPacket } {
  layer.receive(get({ observe: 0, ...options }), peer());
  const [answer] = transport.take();
  return { relation: relations.at(-1)!, answer: answer! };
}

afterEach(() => {
  layer.stop();
  vi.useRealTimers();
});

describe('registration', () => {
  it('establishes a relation: the piggybacked 2.05 carries Observe 0', () => {
    setup();
    const { relation, answer } = register({ messageId: 7, token: 'tk' });
    expect(answer).toMatchObject({ ack: true, code: '2.05', messageId: 7, token: Buffer.from('tk') });
    expect(observeOf(answer)).toBe(0);
    expect(relation).toMatchObject({ active: true, confirmable: true });
    expect(layer.stats.observations).toBe(1);
  });

  it('answers without Observe when the handler does not accept', () => {
    setup(() => content('plain'));
    layer.receive(get({ observe: 0 }), peer());
    const [answer] = transport.take();
    expect(answer).toMatchObject({ code: '2.05' });
    expect(observeOf(answer!)).toBeUndefined();
    expect(layer.stats.observations).toBe(0);
  });

  it('offers nothing on a GET without Observe, or on other methods', () => {
    setup();
    layer.receive(get({ messageId: 1 }), peer());
    layer.receive(coapPacket.generate({ code: 'POST', messageId: 2, options: [{ name: 'Observe', value: encodeUint(0) }] }), peer());
    expect(handled.map((r) => r.observation)).toEqual([undefined, undefined]);
    expect(transport.take().map(observeOf)).toEqual([undefined, undefined]);
  });

  it('refuses a relation when the accepted registration is answered with an error', () => {
    setup((request) => {
      accept(request);
      return { code: ResponseCode.NotFound, payload: 'no such device' };
    });
    const { relation, answer } = register();
    expect(answer).toMatchObject({ code: '4.04' });
    expect(observeOf(answer)).toBeUndefined();
    expect(ends).toEqual(['refused']);
    expect(relation.active).toBe(false);
    expect(layer.stats).toMatchObject({ observations: 0, observationsRefused: 1 });
  });

  it('answers beyond maxObservations without Observe and ends the offer as refused', () => {
    setup(observable, { maxObservations: 1 });
    register({ token: 'a' });
    const { answer } = register({ messageId: 2, token: 'b' });
    expect(observeOf(answer)).toBeUndefined();
    expect(answer.payload.toString()).toBe('state');
    expect(ends).toEqual(['refused']);
    expect(layer.stats.observations).toBe(1);
  });

  it('handles a retransmitted registration once and replays the same answer', () => {
    setup();
    const datagram = get({ observe: 0, messageId: 33 });
    layer.receive(datagram, peer());
    layer.receive(datagram, peer());
    expect(handled).toHaveLength(1);
    const [first, second] = transport.take();
    expect(second).toEqual(first);
    expect(observeOf(second!)).toBe(0);
    expect(layer.stats.observations).toBe(1);
  });

  it('replaces a relation registered again with the same token, continuing its sequence numbers', async () => {
    setup();
    const { relation: old } = register({ messageId: 1 });
    const inFlight = track(old.notify(content('n1'))); // a CON left unacknowledged
    const queued = track(old.notify(content('n2')));
    transport.take();
    const { relation, answer } = register({ messageId: 2 });
    await flush();
    expect(ends).toEqual(['reregistered']);
    expect(old.active).toBe(false);
    expect([inFlight.outcome, queued.outcome]).toEqual(['failed', 'failed']);
    expect(relation.active).toBe(true);
    expect(observeOf(answer)).toBe(2); // registration 0, n1 took 1; n2 never went out
    expect(layer.stats.observations).toBe(1);
  });

  it('keeps relations with different tokens apart', () => {
    setup();
    register({ messageId: 1, token: 'a' });
    register({ messageId: 2, token: 'b' });
    expect(layer.stats.observations).toBe(2);
    expect(relations.every((r) => r.active)).toBe(true);
  });

  it('deregisters on Observe 1 and still hands the GET to the handler', () => {
    setup();
    register({ messageId: 1 });
    layer.receive(get({ observe: 1, messageId: 2 }), peer());
    expect(ends).toEqual(['deregistered']);
    expect(handled).toHaveLength(2);
    expect(handled[1]).toMatchObject({ observe: 1, observation: undefined });
    const [answer] = transport.take();
    expect(answer).toMatchObject({ code: '2.05', messageId: 2 });
    expect(observeOf(answer!)).toBeUndefined();
    expect(layer.stats.observations).toBe(0);
  });
});

describe('notifications', () => {
  it('sends CON notifications one at a time, in order, each waiting for the ACK of the one before', async () => {
    setup();
    const { relation } = register({ token: 'tk' });
    const first = track(relation.notify(content('one')));
    const second = track(relation.notify(content('two')));
    const [n1, ...rest] = transport.take();
    expect(rest).toEqual([]);
    expect(n1).toMatchObject({ confirmable: true, code: '2.05', token: Buffer.from('tk') });
    expect(n1!.payload.toString()).toBe('one');
    expect(observeOf(n1!)).toBe(1);

    layer.receive(ack(n1!.messageId), peer());
    await flush();
    expect(first.outcome).toBe('acknowledged');
    expect(second.outcome).toBeUndefined();
    const [n2] = transport.take();
    expect(n2!.payload.toString()).toBe('two');
    expect(observeOf(n2!)).toBe(2);
    expect(n2!.messageId).not.toBe(n1!.messageId);

    layer.receive(ack(n2!.messageId), peer());
    await flush();
    expect(second.outcome).toBe('acknowledged');
    expect(layer.stats.notifications).toBe(2);
  });

  it('gives a NON registration NON notifications, all sent at once and in order', async () => {
    setup();
    const { relation, answer } = register({ confirmable: false });
    expect(answer).toMatchObject({ confirmable: false, ack: false, code: '2.05' });
    expect(observeOf(answer)).toBe(0);
    expect(relation.confirmable).toBe(false);
    const outcomes = [track(relation.notify(content('a'))), track(relation.notify(content('b')))];
    const sent = transport.take();
    expect(sent.map((p) => [p.confirmable, observeOf(p), p.payload.toString()])).toEqual([
      [false, 1, 'a'],
      [false, 2, 'b'],
    ]);
    await flush();
    expect(outcomes.map((o) => o.outcome)).toEqual(['sent', 'sent']);
  });

  it('holds a notify() made before the registration was answered until the answer is out', async () => {
    let answer: (response: CoapResponse) => void = () => {};
    setup((request) => {
      void accept(request).notify(content('early'));
      return new Promise<CoapResponse>((resolve) => (answer = resolve));
    });
    layer.receive(get({ observe: 0, confirmable: false }), peer());
    expect(transport.take()).toEqual([]);
    answer(content('state'));
    await flush();
    const sent = transport.take();
    expect(sent.map((p) => [p.payload.toString(), observeOf(p)])).toEqual([
      ['state', 0],
      ['early', 1],
    ]);
  });

  it('after a separate registration answer, waits for its ACK before notifying', async () => {
    vi.useFakeTimers();
    let answer: (response: CoapResponse) => void = () => {};
    setup((request) => {
      accept(request);
      return new Promise<CoapResponse>((resolve) => (answer = resolve));
    });
    layer.receive(get({ observe: 0, messageId: 9 }), peer());
    await vi.advanceTimersByTimeAsync(500);
    expect(transport.take()).toEqual([expect.objectContaining({ ack: true, code: '0.00', messageId: 9 })]);
    answer(content('state'));
    await vi.advanceTimersByTimeAsync(0);
    const [separate] = transport.take();
    expect(separate).toMatchObject({ confirmable: true, code: '2.05' });
    expect(observeOf(separate!)).toBe(0);

    const notified = track(relations[0]!.notify(content('next')));
    expect(transport.take()).toEqual([]);
    layer.receive(ack(separate!.messageId), peer());
    const [notification] = transport.take();
    expect(observeOf(notification!)).toBe(1);
    layer.receive(ack(notification!.messageId), peer());
    await vi.advanceTimersByTimeAsync(0);
    expect(notified.outcome).toBe('acknowledged');
  });

  it('ends the relation when the observer resets a CON notification', async () => {
    setup();
    const { relation } = register();
    const notified = track(relation.notify(content('x')));
    const queued = track(relation.notify(content('y')));
    const [notification] = transport.take();
    layer.receive(reset(notification!.messageId), peer());
    await flush();
    expect(ends).toEqual(['reset']);
    expect([notified.outcome, queued.outcome]).toEqual(['failed', 'failed']);
    expect(relation.active).toBe(false);
    expect(await relation.notify(content('z'))).toBe('failed');
    expect(transport.take()).toEqual([]);
    expect(layer.stats).toMatchObject({ observations: 0, observationsEnded: 1 });
  });

  it('ends the relation when the observer resets a NON notification', () => {
    setup();
    const { relation } = register({ confirmable: false });
    void relation.notify(content('x'));
    void relation.notify(content('y'));
    const [first] = transport.take();
    layer.receive(reset(first!.messageId), peer());
    expect(ends).toEqual(['reset']);
    expect(relation.active).toBe(false);
  });

  it('ignores a Reset that matches nothing', () => {
    setup();
    register({ confirmable: false });
    layer.receive(reset(0x4242), peer());
    expect(ends).toEqual([]);
  });

  it('ends the relation as timed-out when a CON notification is never acknowledged', async () => {
    vi.useFakeTimers();
    setup();
    const { relation } = register();
    const notified = track(relation.notify(content('x')));
    await vi.advanceTimersByTimeAsync(200_000);
    const sent = transport.take();
    expect(sent).toHaveLength(1 + 4); // MAX_RETRANSMIT
    expect(new Set(sent.map((p) => p.messageId)).size).toBe(1);
    expect(ends).toEqual(['timed-out']);
    expect(notified.outcome).toBe('failed');
  });

  it('drops the oldest queued notification when too many wait behind a CON', async () => {
    setup();
    const { relation } = register();
    track(relation.notify(content('in flight')));
    const queued = Array.from({ length: 101 }, (_, i) => track(relation.notify(content(`q${i}`))));
    await flush();
    expect(queued[0]!.outcome).toBe('failed');
    expect(queued.slice(1).every((q) => q.outcome === undefined)).toBe(true);
  });

  it('ends the relation when notified with an error, sending it without Observe', async () => {
    setup();
    const { relation } = register();
    expect(await relation.notify({ code: ResponseCode.NotFound, payload: 'gone' })).toBe('failed');
    const [sent] = transport.take();
    expect(sent).toMatchObject({ confirmable: true, code: '4.04' });
    expect(observeOf(sent!)).toBeUndefined();
    expect(ends).toEqual(['ended']);
  });
});

describe('ending', () => {
  it('end(final) sends the final response without Observe, as a retransmitted CON, and fails what waits', async () => {
    vi.useFakeTimers();
    setup();
    const { relation } = register();
    const inFlight = track(relation.notify(content('x')));
    const queued = track(relation.notify(content('y')));
    const [notification] = transport.take();
    relation.end({ code: ResponseCode.Deleted });
    await vi.advanceTimersByTimeAsync(0);
    expect(ends).toEqual(['ended']);
    expect([inFlight.outcome, queued.outcome]).toEqual(['failed', 'failed']);
    const [final] = transport.take();
    expect(final).toMatchObject({ confirmable: true, code: '2.02' });
    expect(observeOf(final!)).toBeUndefined();
    expect(final!.messageId).not.toBe(notification!.messageId);

    await vi.advanceTimersByTimeAsync(3000); // the final is retransmitted, the cancelled notification is not
    expect(transport.take().map((p) => p.messageId)).toEqual([final!.messageId]);
    layer.receive(ack(final!.messageId), peer());
    relation.end();
    expect(ends).toEqual(['ended']);
  });

  it('keeps retransmitting a separate registration answer when the relation ends before its ACK', async () => {
    vi.useFakeTimers();
    let answer: (response: CoapResponse) => void = () => {};
    setup((request) => {
      accept(request);
      return new Promise<CoapResponse>((resolve) => (answer = resolve));
    });
    layer.receive(get({ observe: 0 }), peer());
    await vi.advanceTimersByTimeAsync(500);
    answer(content('state'));
    await vi.advanceTimersByTimeAsync(0);
    const [, separate] = transport.take();
    relations[0]!.end();
    expect(ends).toEqual(['ended']);
    await vi.advanceTimersByTimeAsync(3000);
    expect(transport.take()).toEqual([expect.objectContaining({ messageId: separate!.messageId, code: '2.05' })]);
  });

  it('end() on a NON relation sends the final as a NON', () => {
    setup();
    const { relation } = register({ confirmable: false });
    relation.end({ code: ResponseCode.Deleted });
    expect(transport.take()).toEqual([expect.objectContaining({ confirmable: false, ack: false, code: '2.02' })]);
  });

  it('stop() ends every relation as stopped and fails pending notifications', async () => {
    setup();
    const { relation } = register({ token: 'a' });
    register({ messageId: 2, token: 'b', confirmable: false });
    const inFlight = track(relation.notify(content('x')));
    const queued = track(relation.notify(content('y')));
    transport.take();
    layer.stop();
    await flush();
    expect(ends).toEqual(['stopped', 'stopped']);
    expect([inFlight.outcome, queued.outcome]).toEqual(['failed', 'failed']);
    expect(transport.take()).toEqual([]);
    expect(layer.stats.observations).toBe(0);
  });
});

describe('RFC 7641 §4.5 liveness checks', () => {
  it('sends the current state as a CON to a relation quiet for the check interval', async () => {
    vi.useFakeTimers();
    setup();
    current = content('now');
    register({ confirmable: false });
    await vi.advanceTimersByTimeAsync(CHECK_INTERVAL_MS - 1000);
    expect(transport.take()).toEqual([]);
    await vi.advanceTimersByTimeAsync(2000);
    const [check] = transport.take();
    expect(check).toMatchObject({ confirmable: true, code: '2.05' });
    expect(check!.payload.toString()).toBe('now');
    expect(observeOf(check!)).toBe(1);

    layer.receive(ack(check!.messageId), peer());
    await vi.advanceTimersByTimeAsync(CHECK_INTERVAL_MS - 2000);
    expect(transport.take()).toEqual([]);
  });

  it('ends a quiet relation whose observer no longer answers', async () => {
    vi.useFakeTimers();
    setup();
    register();
    await vi.advanceTimersByTimeAsync(CHECK_INTERVAL_MS + 200_000);
    expect(ends).toEqual(['timed-out']);
  });

  it('sends a NON notification as CON once the relation has had no CON for the interval', async () => {
    vi.useFakeTimers();
    setup();
    const { relation } = register({ confirmable: false });
    const types: boolean[] = [];
    for (let i = 0; i < 6; i++) {
      await vi.advanceTimersByTimeAsync(2000);
      void relation.notify(content(`n${i}`));
      for (const packet of transport.take()) {
        types.push(packet.confirmable);
        if (packet.confirmable) layer.receive(ack(packet.messageId), peer());
      }
    }
    expect(types).toEqual([false, false, false, false, true, false]);
  });
});
