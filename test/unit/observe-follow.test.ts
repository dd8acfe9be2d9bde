// Observe relations that follow their device (ObserveRegistry.sighted), are written to a journal, and come
// back at start (CoapMessageLayer.restoreObservation): through the message layer, with hand-built
// datagrams and an in-memory transport that can say whether a peer is reachable.
import * as coapPacket from 'coap-packet';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ResponseCode } from '../../src/coap/codes.js';
import { CoapMessageLayer, type MessageLayerOptions } from '../../src/coap/message-layer.js';
import { encodeUint } from '../../src/coap/message.js';
import type { ObservationEndReason, ObserveRelation } from '../../src/coap/observe-api.js';
import { restoredSequence, type JournalEntry, type ObservationJournal, type SavedObservation } from '../../src/coap/observe-journal.js';
import type { CoapResponse, RequestHandler } from '../../src/coap/request.js';
import { createLogger } from '../../src/log.js';
import { RestorableTransport, ack, observeOf, reset, track } from '../helpers/memory-transport.js';

/** RFC 7641 §3.4 freshness, for numbers that went out within 128 s of each other. */
const fresher = (v1: number, v2: number): boolean => (v1 < v2 && v2 - v1 < 0x80_0000) || (v1 > v2 && v1 - v2 > 0x80_0000);

/** A journal that records what the registry tells it; an entry is kept when the test says so. */
class RecordingJournal implements ObservationJournal {
  readonly calls: Array<{ op: 'add' | 'update' | 'remove'; id: number; saved?: SavedObservation }> = [];
  readonly keptIds = new Set<number>();
  private nextId = 1;
  constructor(readonly generation = 5) {}
  add(saved: SavedObservation): JournalEntry {
    const id = this.nextId++;
    this.calls.push({ op: 'add', id, saved });
    return this.entry(id);
  }
  update(entry: JournalEntry, saved: SavedObservation): void {
    this.calls.push({ op: 'update', id: (entry as RecordedEntry).id, saved });
  }
  remove(entry: JournalEntry): void {
    this.calls.push({ op: 'remove', id: (entry as RecordedEntry).id });
  }
  entry(id: number): RecordedEntry {
    const kept = this.keptIds;
    return {
      id,
      get kept() {
        return kept.has(id);
      },
    };
  }
}
interface RecordedEntry extends JournalEntry {
  readonly id: number;
}

const CHECK_INTERVAL_MS = 3_600_000;
const MOVE_PROBE_MS = 4000; // the registry's default: MessageLayerOptions.moveProbeMs is left unset
const OPTIONS: MessageLayerOptions = {
  piggybackWindowMs: 500,
  maxBodyBytes: 1024,
  maxBlockTransfers: 10,
  blockTransferIdleMs: 60_000,
  dedupMaxEntries: 10_000,
  observeCheckIntervalMs: CHECK_INTERVAL_MS,
  // First retransmission after 1 s, then 3 s, 7 s, 15 s; given up at 31 s.
  retransmission: { ackTimeoutMs: 1000, ackRandomFactor: 1, maxRetransmit: 4 },
};
const TOKENS = new Map([
  ['T1', 'device-1'],
  ['T2', 'device-2'],
]);

let udp: RestorableTransport;
let other: RestorableTransport;
let layer: CoapMessageLayer;
let relations: ObserveRelation[];
let ends: ObservationEndReason[];
let refuseRestored: CoapResponse | undefined;
let messageId: number;

const content = (payload: string): CoapResponse => ({ code: ResponseCode.Content, payload: Buffer.from(payload), contentFormat: 0 });

/** Like the routes: /api/v1/{token}/rpc and /telemetry; a known token authenticates the request as its device. */
const handler: RequestHandler = (request) => {
  const [, , token, resource] = request.uriPath;
  const device = TOKENS.get(token ?? '');
  if (device === undefined) return { code: ResponseCode.Unauthorized, payload: 'unknown access token' };
  if (request.restored && refuseRestored) return refuseRestored;
  request.authenticatedAs = device;
  if (request.observation) {
    if (resource === 'anonymous') {
      relations.push(request.observation.accept({ current: () => content('current'), onEnd: (reason) => ends.push(reason) }));
      return content('observing');
    }
    relations.push(request.observation.accept({ owner: device, current: () => content('current'), onEnd: (reason) => ends.push(reason) }));
  }
  return resource === 'rpc' ? content('observing') : { code: ResponseCode.Changed };
};

beforeEach(() => {
  vi.useFakeTimers();
  udp = new RestorableTransport('udp');
  other = new RestorableTransport('dtls', '192.0.2.1');
  relations = [];
  ends = [];
  refuseRestored = undefined;
  messageId = 100;
  layer = new CoapMessageLayer(OPTIONS, handler, createLogger('silent'));
});

afterEach(() => {
  layer.stop();
  vi.useRealTimers();
});

const OBSERVE_TOKEN = Buffer.from([0x0b, 0x5e]);
const observe = (deviceToken: string, token = OBSERVE_TOKEN, resource = 'rpc', confirmable = true): Buffer =>
  coapPacket.generate({
    code: 'GET',
    confirmable,
    messageId: messageId++,
    token,
    options: [
      { name: 'Observe', value: encodeUint(0) },
      ...['api', 'v1', deviceToken, resource].map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })),
    ],
  });
const telemetry = (deviceToken: string): Buffer =>
  coapPacket.generate({
    code: 'POST',
    confirmable: true,
    messageId: messageId++,
    token: Buffer.from([0x77]),
    options: ['api', 'v1', deviceToken, 'telemetry'].map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })),
    payload: Buffer.from('{"t":21}'),
  });

const OLD = 40000;
const NEW = 40001;

/** device-1 observes /rpc from the old port; returns the relation and its registration's Observe number. */
function registerAtOld(): { relation: ObserveRelation; observe: number } {
  layer.receive(observe('T1'), udp.peer(OLD));
  const [answer] = udp.take();
  expect(answer).toMatchObject({ port: OLD, packet: { ack: true, code: '2.05' } });
  return { relation: relations.at(-1)!, observe: observeOf(answer!.packet)! };
}

/**
 * device-1 posts telemetry from the new port and gets its answer; returns what went to the old port meanwhile
 * (the probe). Anything else sent to the new port (a relation that moved at once) is left for udp.take().
 */
function postFromNew(deviceToken = 'T1'): Array<{ port: number; packet: coapPacket.ParsedPacket }> {
  layer.receive(telemetry(deviceToken), udp.peer(NEW));
  const sent = udp.take();
  const answers = sent.filter((each) => each.port === NEW && each.packet.ack);
  expect(answers.map((each) => each.packet.code)).toEqual([TOKENS.has(deviceToken) ? '2.04' : '4.01']);
  udp.sent.push(...sent.filter((each) => each.port === NEW && !each.packet.ack).map((each) => ({ peer: udp.peer(NEW), packet: each.packet })));
  return sent.filter((each) => each.port !== NEW);
}

describe('a relation follows its device', () => {
  it('probes the old address with a CON of the relation; an ACK keeps it there, and no new probe for 60 s', async () => {
    const { relation, observe: first } = registerAtOld();
    const [probe, ...rest] = postFromNew();
    expect(rest).toEqual([]);
    expect(probe).toMatchObject({ port: OLD, packet: { confirmable: true, code: '2.05', token: OBSERVE_TOKEN } });
    expect(observeOf(probe!.packet)).toBe(first + 1);
    layer.receive(ack(probe!.packet.messageId), udp.peer(OLD));
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS + 1000);
    expect(udp.take()).toEqual([]); // the probe is not retransmitted, nothing moved

    const notified = track(relation.notify(content('rpc 1')));
    const [notification] = udp.take();
    expect(notification).toMatchObject({ port: OLD, packet: { token: OBSERVE_TOKEN, payload: Buffer.from('rpc 1') } });
    layer.receive(ack(notification!.packet.messageId), udp.peer(OLD));
    await vi.advanceTimersByTimeAsync(0);
    expect(notified.outcome).toBe('acknowledged');

    // A second socket of the same device: within a minute of the ACK it is not asked again.
    await vi.advanceTimersByTimeAsync(50_000);
    expect(postFromNew()).toEqual([]);
    // Past the minute it is.
    await vi.advanceTimersByTimeAsync(11_000);
    const [again] = postFromNew();
    expect(again).toMatchObject({ port: OLD, packet: { confirmable: true, token: OBSERVE_TOKEN } });
    expect(layer.stats.observationsMoved).toBe(0);
    expect(ends).toEqual([]);
  });

  it('moves when the old address stays silent for moveProbeMs: same token, fresher Observe, nothing more to the old port', async () => {
    const { relation } = registerAtOld();
    const [probe] = postFromNew();
    const probeObserve = observeOf(probe!.packet)!;
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS - 100);
    expect(udp.take().every((each) => each.port === OLD)).toBe(true); // retransmissions of the probe
    await vi.advanceTimersByTimeAsync(200);
    expect(layer.stats.observationsMoved).toBe(1);
    // The probe (a check of the current state) is not repeated at the new address.
    expect(udp.take()).toEqual([]);

    const notified = track(relation.notify(content('rpc 1')));
    const [notification, ...rest] = udp.take();
    expect(rest).toEqual([]);
    expect(notification).toMatchObject({ port: NEW, packet: { confirmable: true, token: OBSERVE_TOKEN, payload: Buffer.from('rpc 1') } });
    expect(fresher(probeObserve, observeOf(notification!.packet)!)).toBe(true);
    layer.receive(ack(notification!.packet.messageId), udp.peer(NEW));
    await vi.advanceTimersByTimeAsync(0);
    expect(notified.outcome).toBe('acknowledged');
    expect(relation.peer.port).toBe(NEW);

    await vi.advanceTimersByTimeAsync(60_000);
    expect(udp.take()).toEqual([]);
    expect(ends).toEqual([]);
  });

  it('re-sends to the new address a notification that was in flight to the old one when the probe began', async () => {
    const { relation } = registerAtOld();
    const notified = track(relation.notify(content('rpc 1')));
    const waiting = track(relation.notify(content('rpc 2')));
    const [inFlight] = udp.take();
    expect(inFlight).toMatchObject({ port: OLD, packet: { payload: Buffer.from('rpc 1') } });
    // The CON in flight is the probe: nothing else goes to the old address.
    expect(postFromNew()).toEqual([]);
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS + 10);
    const sent = udp.take();
    const toNew = sent.filter((each) => each.port === NEW);
    expect(sent.filter((each) => each.port === OLD).map((each) => each.packet.messageId)).toEqual(
      Array(sent.length - toNew.length).fill(inFlight!.packet.messageId), // only retransmissions of it
    );
    expect(toNew).toHaveLength(1);
    expect(toNew[0]!.packet).toMatchObject({ confirmable: true, token: OBSERVE_TOKEN, payload: Buffer.from('rpc 1') });
    const resent = observeOf(toNew[0]!.packet)!;
    expect(fresher(observeOf(inFlight!.packet)!, resent)).toBe(true);

    layer.receive(ack(toNew[0]!.packet.messageId), udp.peer(NEW));
    await vi.advanceTimersByTimeAsync(0);
    expect(notified.outcome).toBe('acknowledged');
    const [second] = udp.take();
    expect(second).toMatchObject({ port: NEW, packet: { payload: Buffer.from('rpc 2') } });
    expect(observeOf(second!.packet)).toBe((resent + 1) & 0xff_ffff);
    layer.receive(ack(second!.packet.messageId), udp.peer(NEW));
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.outcome).toBe('acknowledged');
    // The old address's late ACK of the withdrawn CON changes nothing.
    layer.receive(ack(inFlight!.packet.messageId), udp.peer(OLD));
    expect(relation.peer.port).toBe(NEW);
  });

  it('moves at once when the old address resets the probe', async () => {
    const { relation } = registerAtOld();
    const [probe] = postFromNew();
    layer.receive(reset(probe!.packet.messageId), udp.peer(OLD));
    expect(layer.stats.observationsMoved).toBe(1);
    expect(relation.peer.port).toBe(NEW);
    expect(relation.active).toBe(true);
    expect(ends).toEqual([]);
    void relation.notify(content('rpc 1'));
    expect(udp.take()).toEqual([expect.objectContaining({ port: NEW, packet: expect.objectContaining({ token: OBSERVE_TOKEN }) })]);
  });

  it('moves nothing and probes nothing for a request not authenticated (an unknown token)', async () => {
    const { relation } = registerAtOld();
    expect(postFromNew('unknown-token')).toEqual([]);
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS * 3);
    expect(udp.take()).toEqual([]);
    expect(layer.stats.observationsMoved).toBe(0);
    void relation.notify(content('rpc 1'));
    expect(udp.take()).toEqual([expect.objectContaining({ port: OLD })]);
  });

  it("moves nothing for another device's token from the new address", async () => {
    const { relation } = registerAtOld();
    expect(postFromNew('T2')).toEqual([]);
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS * 3);
    expect(udp.take()).toEqual([]);
    expect(relation.peer.port).toBe(OLD);
  });

  it("never moves a relation to another transport's peer, even one authenticated as its device", async () => {
    const { relation } = registerAtOld();
    layer.receive(telemetry('T1'), other.peer(NEW));
    expect(other.take()).toEqual([expect.objectContaining({ port: NEW, packet: expect.objectContaining({ code: '2.04' }) })]);
    expect(udp.take()).toEqual([]);
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS * 3);
    expect(udp.take()).toEqual([]);
    expect(relation.peer.transport).toBe(udp);
    expect(layer.stats.observationsMoved).toBe(0);
  });

  it('moves both relations of a device (rpc and attributes), each with its own token', async () => {
    const rpc = registerAtOld().relation;
    layer.receive(observe('T1', Buffer.from([0xa7]), 'attributes'), udp.peer(OLD));
    udp.take();
    const attributes = relations.at(-1)!;
    const probes = postFromNew();
    expect(probes.map((each) => each.packet.token)).toEqual([OBSERVE_TOKEN, Buffer.from([0xa7])]);
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS + 10);
    udp.take();
    expect([rpc.peer.port, attributes.peer.port]).toEqual([NEW, NEW]);
    expect(layer.stats.observationsMoved).toBe(2);
  });

  it('moves a NON relation after its CON probe goes unanswered', async () => {
    layer.receive(observe('T1', OBSERVE_TOKEN, 'rpc', false), udp.peer(OLD));
    const [answer] = udp.take();
    expect(answer!.packet).toMatchObject({ confirmable: false, code: '2.05' });
    const relation = relations[0]!;
    const [probe] = postFromNew();
    expect(probe!.packet).toMatchObject({ confirmable: true, token: OBSERVE_TOKEN });
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS + 10);
    udp.take();
    void relation.notify(content('rpc 1'));
    expect(udp.take()).toEqual([expect.objectContaining({ port: NEW, packet: expect.objectContaining({ confirmable: false, token: OBSERVE_TOKEN }) })]);
  });

  it('moves to the newest address the device spoke from during the probe', async () => {
    const { relation } = registerAtOld();
    postFromNew();
    layer.receive(telemetry('T1'), udp.peer(NEW + 1));
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS + 10);
    expect(relation.peer.port).toBe(NEW + 1);
    expect(layer.stats.observationsMoved).toBe(1);
  });

  it('stays when the old address itself speaks during the probe', async () => {
    const { relation } = registerAtOld();
    const [probe] = postFromNew();
    layer.receive(telemetry('T1'), udp.peer(OLD));
    await vi.advanceTimersByTimeAsync(MOVE_PROBE_MS + 10);
    expect(relation.peer.port).toBe(OLD);
    layer.receive(ack(probe!.packet.messageId), udp.peer(OLD));
    expect(layer.stats.observationsMoved).toBe(0);
  });

  it('follows at once, without a probe, when the old address cannot be reached', async () => {
    const { relation } = registerAtOld();
    udp.unreachable.add(udp.peer(OLD).key);
    expect(postFromNew()).toEqual([]);
    expect(relation.peer.port).toBe(NEW);
  });
});

describe('what the journal hears', () => {
  it('add on registration, update on a move, remove on deregistration and nothing on stop', async () => {
    const journal = new RecordingJournal();
    layer.useJournal(journal);
    const { observe: first } = registerAtOld();
    expect(journal.calls).toEqual([
      {
        op: 'add',
        id: 1,
        saved: {
          peer: { transport: 'udp', address: '192.0.2.1', port: OLD },
          owner: 'device-1',
          token: OBSERVE_TOKEN,
          confirmable: true,
          uriPath: ['api', 'v1', 'T1', 'rpc'],
          uriQuery: [],
          szx: 6,
          sequence: first + 1,
          generation: 5,
        },
      },
    ]);
    const [probe] = postFromNew();
    layer.receive(reset(probe!.packet.messageId), udp.peer(OLD));
    expect(journal.calls.slice(1)).toEqual([
      { op: 'update', id: 1, saved: { ...journal.calls[0]!.saved!, peer: { transport: 'udp', address: '192.0.2.1', port: NEW } } },
    ]);

    // A second relation (another device) and a deregistration of the first from where it now is.
    layer.receive(observe('T2', Buffer.from([0x22])), udp.peer(41000));
    udp.take();
    expect(journal.calls.at(-1)).toMatchObject({ op: 'add', id: 2 });
    layer.receive(
      coapPacket.generate({
        code: 'GET',
        messageId: messageId++,
        token: OBSERVE_TOKEN,
        options: [{ name: 'Observe', value: encodeUint(1) }, ...['api', 'v1', 'T1', 'rpc'].map((s) => ({ name: 'Uri-Path' as const, value: Buffer.from(s) }))],
      }),
      udp.peer(NEW),
    );
    expect(journal.calls.at(-1)).toEqual({ op: 'remove', id: 1 });
    const before = journal.calls.length;
    await layer.endObservations({ code: ResponseCode.ServiceUnavailable, maxAge: 10 }, 0);
    layer.stop();
    expect(journal.calls.length).toBe(before);
    expect(ends).toEqual(['deregistered', 'stopped']);
  });

  it('removes on reset, on timeout and on end(), and writes nothing for a relation without owner', async () => {
    const journal = new RecordingJournal();
    layer.useJournal(journal);
    const { relation } = registerAtOld();
    void relation.notify(content('x'));
    const [notification] = udp.take();
    layer.receive(reset(notification!.packet.messageId), udp.peer(OLD));
    expect(journal.calls.map((call) => call.op)).toEqual(['add', 'remove']);

    const second = registerAtOld().relation;
    void second.notify(content('y'));
    await vi.advanceTimersByTimeAsync(40_000);
    expect(udp.take().map((each) => each.packet.payload.toString())).toEqual(Array(5).fill('y')); // sent and retransmitted 4 times
    expect(ends).toEqual(['reset', 'timed-out']);
    expect(journal.calls.map((call) => call.op)).toEqual(['add', 'remove', 'add', 'remove']);

    registerAtOld().relation.end();
    expect(journal.calls.map((call) => call.op)).toEqual(['add', 'remove', 'add', 'remove', 'add', 'remove']);

    const before = journal.calls.length;
    layer.receive(observe('T1', Buffer.from([0x01]), 'anonymous'), udp.peer(OLD));
    expect(udp.take().map((each) => observeOf(each.packet))).toEqual([expect.any(Number)]);
    relations.at(-1)!.end();
    expect(journal.calls.length).toBe(before);
  });
});

const RESTARTING: CoapResponse = { code: ResponseCode.ServiceUnavailable, payload: 'register again', maxAge: 10 };

describe('a clean stop (endObservations)', () => {
  it('sends the final only to relations whose entry is not kept, and waits for their ACK', async () => {
    const journal = new RecordingJournal();
    layer.useJournal(journal);
    layer.receive(observe('T1'), udp.peer(OLD));
    layer.receive(observe('T2', Buffer.from([0x22])), udp.peer(41000));
    udp.take();
    journal.keptIds.add(1); // device-1's relation is written; device-2's is not (yet)
    let done = false;
    const stopped = layer.endObservations(RESTARTING, 5000).then(() => (done = true));
    const sent = udp.take();
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ port: 41000, packet: { confirmable: true, code: '5.03', token: Buffer.from([0x22]) } });
    expect(observeOf(sent[0]!.packet)).toBeUndefined();
    expect(sent[0]!.packet.options.find((o) => o.name === 'Max-Age')?.value).toEqual(encodeUint(10));
    await vi.advanceTimersByTimeAsync(10);
    expect(done).toBe(false);
    layer.receive(ack(sent[0]!.packet.messageId), udp.peer(41000));
    await vi.advanceTimersByTimeAsync(0);
    expect(done).toBe(true);
    await stopped;
    expect(ends).toEqual(['stopped', 'stopped']);
    expect(journal.calls.filter((call) => call.op === 'remove')).toEqual([]);
  });

  it('tells every observer when there is no journal, and gives up waiting after waitMs', async () => {
    layer.receive(observe('T1'), udp.peer(OLD));
    layer.receive(observe('T2', Buffer.from([0x22])), udp.peer(41000));
    udp.take();
    let done = false;
    void layer.endObservations(RESTARTING, 1500).then(() => (done = true));
    expect(udp.take().map((each) => [each.port, each.packet.code])).toEqual([
      [OLD, '5.03'],
      [41000, '5.03'],
    ]);
    await vi.advanceTimersByTimeAsync(1400);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(200);
    expect(done).toBe(true);
  });
});

/** A relation as the store gives it back: device-1 on /rpc from the old port, written in generation 3. */
const savedAt = (port: number, overrides: Partial<SavedObservation> = {}): SavedObservation => ({
  peer: { transport: 'udp', address: '192.0.2.1', port },
  owner: 'device-1',
  token: OBSERVE_TOKEN,
  confirmable: true,
  uriPath: ['api', 'v1', 'T1', 'rpc'],
  uriQuery: [],
  szx: 6,
  sequence: 1234,
  generation: 3,
  ...overrides,
});

describe('a relation restored at start (restoreObservation)', () => {
  it('replays the registration through the handler and confirms it with a CON carrying the restored Observe number', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    const saved = savedAt(OLD);
    const outcome = await layer.restoreObservation(udp.peer(OLD), journal.entry(7), saved);
    expect(outcome).toBe('restored');
    const [confirmation, ...rest] = udp.take();
    expect(rest).toEqual([]);
    expect(confirmation).toMatchObject({ port: OLD, packet: { confirmable: true, code: '2.05', token: OBSERVE_TOKEN, payload: Buffer.from('observing') } });
    expect(observeOf(confirmation!.packet)).toBe(restoredSequence(saved, 5));
    expect(observeOf(confirmation!.packet)).toBe(1234 + 2 * 0x1_0000);
    expect(layer.stats).toMatchObject({ observations: 1, observationsRestored: 1 });
    expect(journal.calls).toEqual([]); // written already: nothing to add

    // Live again: the next notification waits for the confirmation's ACK, then follows it.
    const relation = relations[0]!;
    const notified = track(relation.notify(content('rpc 1')));
    expect(udp.take()).toEqual([]);
    layer.receive(ack(confirmation!.packet.messageId), udp.peer(OLD));
    const [notification] = udp.take();
    expect(observeOf(notification!.packet)).toBe(1234 + 2 * 0x1_0000 + 1);
    layer.receive(ack(notification!.packet.messageId), udp.peer(OLD));
    await vi.advanceTimersByTimeAsync(0);
    expect(notified.outcome).toBe('acknowledged');
  });

  it('ends a restored relation whose confirmation is reset, and removes it from the journal', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    await layer.restoreObservation(udp.peer(OLD), journal.entry(7), savedAt(OLD));
    const [confirmation] = udp.take();
    layer.receive(reset(confirmation!.packet.messageId), udp.peer(OLD));
    expect(ends).toEqual(['reset']);
    expect(journal.calls).toEqual([{ op: 'remove', id: 7 }]);
  });

  it('sends the refusal without Observe and removes the entry when the handler refuses it', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    refuseRestored = { code: ResponseCode.Unauthorized, payload: 'unknown access token' };
    const outcome = await layer.restoreObservation(udp.peer(OLD), journal.entry(7), savedAt(OLD));
    expect(outcome).toBe('refused');
    const [refusal, ...rest] = udp.take();
    expect(rest).toEqual([]);
    expect(refusal).toMatchObject({ port: OLD, packet: { confirmable: true, code: '4.01', token: OBSERVE_TOKEN } });
    expect(observeOf(refusal!.packet)).toBeUndefined();
    expect(journal.calls).toEqual([{ op: 'remove', id: 7 }]);
    expect(layer.stats).toMatchObject({ observations: 0, observationsRestored: 0 });
  });

  it('also removes the entry of a registration the handler answers without accepting it', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    // A token the handler does not know: 4.01 before any accept().
    const outcome = await layer.restoreObservation(udp.peer(OLD), journal.entry(7), savedAt(OLD, { uriPath: ['api', 'v1', 'gone', 'rpc'] }));
    expect(outcome).toBe('refused');
    expect(journal.calls).toEqual([{ op: 'remove', id: 7 }]);
    expect(udp.take().map((each) => each.packet.code)).toEqual(['4.01']);
  });

  it('waits silently for an unreachable peer, and confirms once its device is sighted from the same endpoint', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    const peer = udp.peer(OLD);
    udp.unreachable.add(peer.key);
    expect(await layer.restoreObservation(peer, journal.entry(7), savedAt(OLD))).toBe('restored');
    const relation = relations[0]!;
    void relation.notify(content('rpc 1'));
    await vi.advanceTimersByTimeAsync(5000);
    expect(udp.take()).toEqual([]);

    // The device's new session: reachable again, and its request is authenticated.
    udp.unreachable.delete(peer.key);
    layer.receive(telemetry('T1'), udp.peer(OLD));
    const sent = udp.take();
    // The request's own answer first: a client reusing tokens must not take the confirmation for it.
    expect(sent.map((each) => [each.port, each.packet.code, each.packet.confirmable])).toEqual([
      [OLD, '2.04', false],
      [OLD, '2.05', true],
    ]);
    expect(observeOf(sent[1]!.packet)).toBe(1234 + 2 * 0x1_0000);
    layer.receive(ack(sent[1]!.packet.messageId), udp.peer(OLD));
    const [notification] = udp.take();
    expect(notification).toMatchObject({ port: OLD, packet: { payload: Buffer.from('rpc 1') } });
  });

  it('moves an unreachable restored relation to where its device is sighted, without a probe', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    udp.unreachable.add(udp.peer(OLD).key);
    await layer.restoreObservation(udp.peer(OLD), journal.entry(7), savedAt(OLD));
    expect(postFromNew()).toEqual([]);
    const [confirmation] = udp.take();
    expect(confirmation).toMatchObject({ port: NEW, packet: { confirmable: true, token: OBSERVE_TOKEN } });
    expect(journal.calls).toEqual([{ op: 'update', id: 7, saved: savedAt(NEW) }]);
  });

  it('ends it as timed-out after checkIntervalMs when its device never comes back, and sends it nothing at stop', async () => {
    layer.stop();
    const checkIntervalMs = 10_000;
    layer = new CoapMessageLayer({ ...OPTIONS, observeCheckIntervalMs: checkIntervalMs }, handler, createLogger('silent'));
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    udp.unreachable.add(udp.peer(OLD).key);
    await layer.restoreObservation(udp.peer(OLD), journal.entry(7), savedAt(OLD));
    await vi.advanceTimersByTimeAsync(checkIntervalMs - 1000);
    expect(ends).toEqual([]);
    await vi.advanceTimersByTimeAsync(2500);
    expect(ends).toEqual(['timed-out']);
    expect(journal.calls).toEqual([{ op: 'remove', id: 7 }]);
    expect(udp.take()).toEqual([]);

    // Another one, still waiting at a clean stop: no final to a peer that cannot be reached, and it stays written.
    await layer.restoreObservation(udp.peer(OLD), journal.entry(8), savedAt(OLD));
    await layer.endObservations(RESTARTING, 100);
    expect(udp.take()).toEqual([]);
    expect(journal.calls).toEqual([{ op: 'remove', id: 7 }]);
  });

  it('sends nothing for a refused registration whose peer cannot be reached', async () => {
    const journal = new RecordingJournal(5);
    layer.useJournal(journal);
    udp.unreachable.add(udp.peer(OLD).key);
    refuseRestored = { code: ResponseCode.Unauthorized, payload: 'unknown access token' };
    expect(await layer.restoreObservation(udp.peer(OLD), journal.entry(7), savedAt(OLD))).toBe('refused');
    expect(udp.take()).toEqual([]);
    expect(journal.calls).toEqual([{ op: 'remove', id: 7 }]);
  });
});
