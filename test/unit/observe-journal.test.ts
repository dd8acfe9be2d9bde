// Observe numbers across restarts (coap/observe-journal.ts): the arithmetic, then a property check that
// drives the real ObserveRegistry through restarts and crashes against a model of the session store.
import { describe, expect, it } from 'vitest';
import { ResponseCode } from '../../src/coap/codes.js';
import { ConfirmableSender } from '../../src/coap/confirmable-sender.js';
import { MessageIdAllocator } from '../../src/coap/message-ids.js';
import { ObserveRegistry, type NotificationWire, type ObserveStats, type Relation } from '../../src/coap/observe.js';
import {
  OBSERVE_WINDOW,
  nextFloorAt,
  restoredSequence,
  type JournalEntry,
  type ObservationJournal,
  type SavedObservation,
} from '../../src/coap/observe-journal.js';
import type { CoapResponse } from '../../src/coap/request.js';
import type { Peer } from '../../src/coap/transport.js';
import { createLogger } from '../../src/log.js';
import { RestorableTransport } from '../helpers/memory-transport.js';
import { Random } from '../helpers/random.js';

const SEQUENCE_SPACE = 0x100_0000;
const HALF = 0x80_0000;

/** RFC 7641 §3.4: V2 is fresher than V1 (the 128-second escape aside). */
function fresher(v1: number, v2: number): boolean {
  return (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF);
}

describe('Observe numbers after a restart: arithmetic', () => {
  it('is the written floor plus one window per start since it was written', () => {
    expect(OBSERVE_WINDOW).toBe(0x1_0000);
    expect(restoredSequence({ sequence: 1000, generation: 7 }, 8)).toBe(1000 + OBSERVE_WINDOW);
    expect(restoredSequence({ sequence: 1000, generation: 7 }, 10)).toBe(1000 + 3 * OBSERVE_WINDOW);
    // Written in this very run (or the clock of generations went back): no jump.
    expect(restoredSequence({ sequence: 1000, generation: 7 }, 7)).toBe(1000);
    expect(restoredSequence({ sequence: 1000, generation: 7 }, 3)).toBe(1000);
  });

  it('wraps at 2^24', () => {
    expect(restoredSequence({ sequence: 0xff_ff00, generation: 1 }, 2)).toBe(0xff00);
    expect(restoredSequence({ sequence: 0xff_ffff, generation: 1 }, 2)).toBe(0xffff);
    // 256 starts without a new floor: exactly once around the sequence space.
    expect(restoredSequence({ sequence: 5, generation: 1 }, 257)).toBe(5);
    expect(restoredSequence({ sequence: 5, generation: 1 }, 1 + 255)).toBe(0xff_0005);
  });

  it('writes the next floor halfway through the window, wrapping at 2^24', () => {
    expect(nextFloorAt(0)).toBe(0x8000);
    expect(nextFloorAt(123)).toBe(123 + 0x8000);
    expect(nextFloorAt(0xff_c000)).toBe(0x4000);
    expect(nextFloorAt(0xff_ffff)).toBe(0x7fff);
  });

  it('is fresher than the floor and everything below floor + one window, also across the wrap', () => {
    for (const floor of [0, 1, 0x7f_ffff, 0x80_0000, 0xfe_0000, 0xff_8000, 0xff_ffff]) {
      const first = restoredSequence({ sequence: floor, generation: 1 }, 2);
      for (const sent of [floor, (floor + 1) & 0xff_ffff, (floor + OBSERVE_WINDOW - 1) & 0xff_ffff]) {
        expect(fresher(sent, first), `floor ${floor}, sent ${sent}, first ${first}`).toBe(true);
      }
      // One window past the floor is not fresher: the registry must write a new floor before it gets there.
      expect(fresher((floor + OBSERVE_WINDOW) & 0xff_ffff, first)).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// The property: whatever the device saw before a restart, the first Observe number after it is fresher.

/**
 * The session store as far as Observe numbers care: writes gather and are committed together after a
 * delay (COMMIT_DELAY_MS), measured here in notifications sent. The delay is always shorter than 2^15
 * notifications (50 ms against a floor written every 32,768): the realistic bound the design relies on.
 * A crash loses what is not committed yet.
 */
class ModelJournal implements ObservationJournal {
  private pending = new Map<number, SavedObservation | null>();
  private commitAt: number | undefined;
  private clock = 0;
  private crashed = false;
  private nextId: number;

  constructor(
    readonly generation: number,
    /** What is committed: the file. */
    readonly disk: Map<number, SavedObservation>,
    private readonly random: Random,
  ) {
    this.nextId = Math.max(0, ...disk.keys()) + 1;
  }

  add(saved: SavedObservation): JournalEntry {
    const id = this.nextId++;
    this.write(id, saved);
    return this.entry(id);
  }

  update(entry: JournalEntry, saved: SavedObservation): void {
    this.write((entry as unknown as { id: number }).id, saved);
  }

  remove(entry: JournalEntry): void {
    this.write((entry as unknown as { id: number }).id, null);
  }

  entry(id: number): JournalEntry {
    const pending = this.pending;
    const disk = this.disk;
    return {
      id,
      get kept() {
        return !pending.has(id) && disk.has(id);
      },
    } as JournalEntry;
  }

  /** One notification went out. */
  tick(): void {
    this.clock++;
    if (this.commitAt !== undefined && this.clock >= this.commitAt) this.commit();
  }

  /** A clean stop writes what waits. */
  commit(): void {
    if (this.crashed) return;
    for (const [id, saved] of this.pending) {
      if (saved === null) this.disk.delete(id);
      else this.disk.set(id, saved);
    }
    this.pending.clear();
    this.commitAt = undefined;
  }

  /** Power gone: what waits is lost, and nothing more is written. */
  crash(): void {
    this.crashed = true;
    this.pending.clear();
  }

  private write(id: number, saved: SavedObservation | null): void {
    if (this.crashed) return;
    this.pending.set(id, saved);
    this.commitAt ??= this.clock + this.random.int(0, 0x7fff);
  }
}


const CONTENT: CoapResponse = { code: ResponseCode.Content, payload: 'state' };
const OWNER = 'device-1';

/** One run of the gateway: a registry of its own, the model journal of its generation. */
class Run {
  readonly registry: ObserveRegistry;
  readonly confirmables = new ConfirmableSender({ ackTimeoutMs: 3_600_000, ackRandomFactor: 1, maxRetransmit: 0 });
  /** Observe numbers put on the wire in this run, first and last. */
  first: number | undefined;
  last: number | undefined;
  relation: Relation | undefined;

  constructor(
    readonly journal: ModelJournal,
    readonly transport: RestorableTransport,
  ) {
    const stats: ObserveStats = { observations: 0, notifications: 0, observationsEnded: 0, observationsRefused: 0, observationsMoved: 0, observationsRestored: 0 };
    const wire: NotificationWire = {
      messageIds: new MessageIdAllocator(100, 3_600_000),
      confirmables: this.confirmables,
      encode: (_relation, _type, _messageId, _response, observe) => {
        if (observe !== undefined) this.sent(observe);
        return Buffer.alloc(4);
      },
    };
    this.registry = new ObserveRegistry({ checkIntervalMs: 3_600_000, maxObservations: 10 }, wire, stats, createLogger('silent'));
    this.registry.useJournal(journal);
  }

  sent(observe: number): void {
    this.first ??= observe;
    this.last = observe;
  }

  /** A device registers, as the message layer does it: the answer takes the first number, then the relation is live. */
  register(peer: Peer): void {
    const offer = this.registry.offer(peer, { token: Buffer.from('tk'), confirmable: false, uriPath: ['rpc'], uriQuery: [] }, 'GET rpc?', 6);
    offer.accept({ owner: OWNER, current: () => CONTENT, onEnd: () => {} });
    const relation = this.registry.conclude(offer, CONTENT)!;
    this.sent(relation.nextSequence());
    this.registry.registered(relation);
    this.relation = relation;
  }

  /** What the store kept, replayed as at start: the confirmation takes the first number of this run. */
  restore(): void {
    for (const [id, saved] of this.journal.disk) {
      const peer = this.transport.restore(saved.peer);
      const offer = this.registry.offerRestored(peer, { token: saved.token, confirmable: saved.confirmable, uriPath: saved.uriPath, uriQuery: saved.uriQuery }, 'GET rpc?', this.journal.entry(id), saved);
      offer.accept({ owner: saved.owner, current: () => CONTENT, onEnd: () => {} });
      const relation = this.registry.conclude(offer, CONTENT)!;
      this.registry.confirmRestored(relation, CONTENT, false);
      this.relation = relation;
    }
  }

  /** `count` notifications: Relation.nextSequence() is what the registry's transmit() takes each number from. */
  notify(count: number): void {
    const relation = this.relation!;
    for (let i = 0; i < count; i++) {
      this.sent(relation.nextSequence());
      this.journal.tick();
    }
  }

  /** The device's old address went dead and it spoke from a new one: the relation follows at once. */
  move(toPort: number): void {
    const relation = this.relation!;
    this.transport.unreachable.add(relation.peer.key);
    this.registry.sighted(OWNER, this.transport.peer(toPort));
    expect(relation.peer.port).toBe(toPort);
  }

  end(how: 'crash' | 'clean stop'): void {
    if (how === 'crash') this.journal.crash();
    else this.journal.commit();
    void this.registry.stop();
    this.confirmables.stop();
  }
}

interface Scenario {
  readonly seed: number;
  readonly moves: boolean;
}

/** Notification counts that land on both sides of the floor writes, and far between. */
function burst(random: Random): number {
  switch (random.int(0, 3)) {
    case 0:
      return random.int(0, 20);
    case 1:
      return 0x8000 + random.int(-20, 20);
    case 2:
      return random.int(0, 0x8000);
    default:
      return random.int(0x8000, 0x2_0000);
  }
}

/** Returns the first violation found, or undefined. */
function play({ seed, moves }: Scenario): string | undefined {
  const random = new Random(seed);
  const transport = new RestorableTransport('model', '192.0.2.1', false);
  const disk = new Map<number, SavedObservation>();
  let generation = random.int(1, 1000);
  let port = 40000;
  let run = new Run(new ModelJournal(generation, disk, random), transport);
  if (random.chance(0.5)) run.register(transport.peer(port));
  else {
    // A relation an earlier run left just below the wrap at 2^24, some starts ago.
    disk.set(1, {
      peer: transport.record(transport.peer(port)),
      owner: OWNER,
      token: Buffer.from('tk'),
      confirmable: false,
      uriPath: ['rpc'],
      uriQuery: [],
      szx: 6,
      sequence: SEQUENCE_SPACE - random.int(1, 0x4_0000),
      generation: generation - random.int(1, 3),
    });
    run.restore();
  }
  const history: Array<{ first: number; last: number }> = [];
  const restarts = random.int(1, 5);
  for (let restart = 0; restart <= restarts; restart++) {
    const bursts = random.int(1, 6);
    for (let i = 0; i < bursts; i++) {
      if (moves && random.chance(0.5)) run.move(++port);
      run.notify(burst(random));
    }
    history.push({ first: run.first!, last: run.last! });
    const how = random.chance(0.7) ? 'crash' : 'clean stop';
    run.end(how);
    // A registration the crash caught before its first commit is simply gone: nothing to be fresh for.
    if (disk.size === 0) return undefined;
    // The next start: one generation more, and the relation replayed from what the file holds.
    generation++;
    transport.unreachable.clear();
    run = new Run(new ModelJournal(generation, disk, random), transport);
    run.restore();
    const first = run.first!;
    for (const before of history.slice(-2)) {
      for (const seen of [before.first, before.last]) {
        if (!fresher(seen, first)) {
          return `seed ${seed}, restart ${restart + 1} after a ${how}: first number ${first} is not fresher than ${seen} sent before (run sent ${before.first}..${before.last})`;
        }
      }
    }
  }
  run.end('clean stop');
  return undefined;
}

const seeds = (base: number, count: number): number[] => Array.from({ length: count }, (_, i) => base + i);

describe('Observe numbers after a restart: the registry against a model of the store', () => {
  const random = Random.fromEnv('OBSERVE_JOURNAL_SEED');

  it(`are fresher than any the device saw, through crashes with the last write committed or not (seed ${random.seed})`, () => {
    const violations = seeds(random.seed, 60)
      .map((seed) => play({ seed, moves: false }))
      .filter((violation) => violation !== undefined);
    expect(violations).toEqual([]);
  });

  // A move must not put off the next floor write: a device moving more often than every 32,768
  // notifications would otherwise send numbers beyond what is written, stale after a restart.
  it('are fresher than any the device saw when it also moves between addresses (fixed seeds)', () => {
    const violations = seeds(1, 60)
      .map((seed) => play({ seed, moves: true }))
      .filter((violation) => violation !== undefined);
    expect(violations).toEqual([]);
  });

  it('survive a device that moves every 30,000 notifications (the smallest case)', () => {
    const transport = new RestorableTransport('model', '192.0.2.1', false);
    const disk = new Map<number, SavedObservation>();
    const run = new Run(new ModelJournal(1, disk, new Random(1)), transport);
    run.register(transport.peer(40000));
    for (let port = 40001; port <= 40004; port++) {
      run.notify(30_000);
      run.move(port);
    }
    run.journal.commit(); // everything written; nothing is lost
    const last = run.last!;
    run.end('clean stop');
    const next = new Run(new ModelJournal(2, disk, new Random(1)), transport);
    next.restore();
    const first = next.first!;
    next.end('clean stop');
    expect({ last, first, fresher: fresher(last, first) }).toEqual({ last, first, fresher: true });
  });
});
