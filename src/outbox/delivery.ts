// Publishing what the outbox holds: rows in sequence order, many per publish, a window of publishes in
// flight, and after a lost connection everything unacknowledged again from the oldest. Rows are read ahead
// from the store into a buffer; fresh rows right behind the reader join it directly.
import type { Logger } from 'pino';
import { calledOrTimedOut } from '../called-or-timed-out.js';
import type { Device } from '../model.js';
import { nextPublish, type Publish } from '../upstream/batch.js';
import type { PublishOptions } from '../upstream/connection.js';
import type { AcknowledgedRows } from './acknowledged-rows.js';
import type { OutboxCounters } from './counters.js';
import type { NewRecord, OutboxStore, StoredRecord } from './store.js';

/** What the outbox needs of the upstream connection. */
export interface OutboxUpstream {
  /** Connected, and the session limits are settled. */
  readonly ready: boolean;
  readonly inflightLimit: number;
  readonly maxMessageBytes: number;
  readonly maxPointsPerPublish: number;
  onReady(listener: () => void): void;
  publish(topic: string, payload: string, options: PublishOptions): Promise<void>;
}

/**
 * A reading stored after it was already published straight upstream (its PUBACK was late, see
 * spilling-uplink.ts), and how that publish went. While it is `waiting`, the stored copy is not sent: on the
 * same connection the copy could not be acknowledged sooner. `acknowledged`: ThingsBoard has it, the copy is
 * dropped. `lost`: the connection went before the PUBACK, the copy is sent.
 */
export interface DirectDelivery {
  state: 'waiting' | 'acknowledged' | 'lost';
}

/** Rows in memory may know of their direct publish; the store never sees that. */
export type Pending = NewRecord & { readonly delivered?: DirectDelivery };
type Buffered = StoredRecord & { readonly delivered?: DirectDelivery };

interface InFlight {
  readonly rows: readonly StoredRecord[];
  readonly sentAt: number;
}

/** What delivery tells the outbox. */
export interface DeliveryHooks {
  /** Rows were acknowledged (or found delivered already): their deletion waits for a commit. */
  acknowledged(): void;
  /** A stored row is larger than ThingsBoard now accepts: it was dropped, and its deletion waits for a commit. */
  oversized(): void;
}

/** Rows read from the store at a time. */
const READ_ROWS = 512;
/** Rows kept in memory ahead of publishing; beyond, they are read back from the store when their turn comes. */
const MAX_BUFFERED_ROWS = 4096;
/** An unacknowledged publish older than this is worth a warning: the broker takes data but does not answer. */
const STALL_WARNING_MS = 60_000;

export class Delivery {
  /** Rows read ahead, in sequence order; `next` is the first not yet published. */
  private buffer: Buffered[] = [];
  /** Some buffered row may carry a DirectDelivery (rows read back from the store never do). */
  private mayHoldDirect = false;
  private next = 0;
  /** Highest sequence number taken into the buffer (or published). */
  private cursor = 0;
  private readonly inflight = new Set<InFlight>();
  /** Set after a failed publish: once nothing is in flight, reading restarts after this sequence number. */
  private rewindTo: number | undefined;
  private idle: (() => void) | undefined;
  private stallWarned = false;
  private halted = false;

  constructor(
    private readonly store: OutboxStore,
    private readonly upstream: OutboxUpstream,
    /** Makes sure ThingsBoard knows the device on this session before its data (v1/gateway/connect). */
    private readonly announce: (device: Device) => void,
    private readonly acknowledged: AcknowledgedRows,
    private readonly counters: OutboxCounters,
    private readonly hooks: DeliveryHooks,
    private readonly log: Logger,
  ) {}

  /** Publishes waiting for their PUBACK. */
  get inflightCount(): number {
    return this.inflight.size;
  }

  /** Everything committed has been read: rows committed now may join the buffer instead of being read back. */
  get caughtUp(): boolean {
    return this.rewindTo === undefined && this.cursor === this.store.lastSeq;
  }

  /** No more publishes (shutting down); those in flight still settle. */
  halt(): void {
    this.halted = true;
  }

  /** Publishes from the oldest unsent row while the window has room. */
  pump(): void {
    if (this.halted || !this.upstream.ready) return;
    if (this.rewindTo !== undefined) {
      // Restart from the oldest unacknowledged row only once nothing is outstanding, or order would break.
      if (this.inflight.size > 0) return;
      this.cursor = this.rewindTo;
      this.rewindTo = undefined;
      this.buffer = [];
      this.next = 0;
    }
    while (this.inflight.size < this.upstream.inflightLimit) {
      if (this.next >= this.buffer.length && !this.refill()) return;
      const end = this.sendableEnd();
      if (end === this.next) return; // the next row waits for its direct publish (directSettled)
      const maxBytes = this.upstream.maxMessageBytes;
      const publish = nextPublish(this.buffer, this.next, maxBytes, this.upstream.maxPointsPerPublish, end);
      if ('oversized' in publish) {
        this.dropOversized(this.buffer[this.next++]!, publish.bytes, maxBytes);
        continue;
      }
      const rows = this.buffer.slice(this.next, this.next + publish.rows);
      this.next += publish.rows;
      this.dispatch(publish, rows);
    }
  }

  /**
   * A direct publish whose readings were stored meanwhile has settled (its DirectDelivery says how): copies
   * of acknowledged readings are dropped as delivered, those of lost ones go out in their turn.
   */
  directSettled(): void {
    let kept = this.next;
    for (let i = this.next; i < this.buffer.length; i++) {
      const row = this.buffer[i]!;
      if (row.delivered?.state === 'acknowledged') this.forgetDelivered(row);
      else this.buffer[kept++] = row;
    }
    this.buffer.length = kept;
    this.hooks.acknowledged();
    this.pump();
  }

  /** Fresh rows right behind the reader join the buffer directly instead of being read back (when caughtUp). */
  committed(records: readonly Pending[], seqs: readonly number[]): void {
    if (seqs.length === 0 || this.buffer.length - this.next + seqs.length > MAX_BUFFERED_ROWS) return;
    if (this.next > 0) {
      this.buffer = this.buffer.slice(this.next);
      this.next = 0;
    }
    for (let i = 0; i < seqs.length; i++) {
      const { kind, device, type, body, points, createdAt, bytes, delivered } = records[i]!;
      const row: Buffered = { kind, device, type, body, points, createdAt, bytes, seq: seqs[i]!, delivered };
      // Its direct publish was acknowledged while it was being stored: nothing left to send.
      if (delivered?.state === 'acknowledged') this.forgetDelivered(row);
      else {
        this.buffer.push(row);
        if (delivered) this.mayHoldDirect = true;
      }
    }
    this.cursor = seqs[seqs.length - 1]!;
  }

  /** Rows up to `lastSeq` were dropped from the store (quota, age): those read ahead are not sent. */
  dropped(lastSeq: number): void {
    const remaining = this.buffer.slice(this.next).filter((row) => row.seq > lastSeq);
    this.buffer = remaining;
    this.next = 0;
    this.cursor = Math.max(this.cursor, remaining.length === 0 ? lastSeq : this.cursor);
  }

  /** Resolves once nothing is in flight, or after `timeoutMs`. */
  async settle(timeoutMs: number): Promise<void> {
    if (this.inflight.size === 0 || timeoutMs <= 0) return;
    await calledOrTimedOut(timeoutMs, (called) => (this.idle = called));
    this.idle = undefined;
  }

  /** Warns once when the broker has left a publish unacknowledged for a minute; again after it recovered. */
  checkStall(now: number): void {
    let oldestSent = Infinity;
    for (const entry of this.inflight) oldestSent = Math.min(oldestSent, entry.sentAt);
    if (now - oldestSent >= STALL_WARNING_MS) {
      if (!this.stallWarned) {
        this.stallWarned = true;
        this.log.warn({ waitingMs: now - oldestSent, inflight: this.inflight.size }, 'the broker has not acknowledged outbox publishes for a minute; delivery is stalled');
      }
    } else {
      this.stallWarned = false;
    }
  }

  /** Where the rows that may be sent now end: at the first one whose direct publish is still waiting. */
  private sendableEnd(): number {
    if (!this.mayHoldDirect) return this.buffer.length;
    for (let i = this.next; i < this.buffer.length; i++) if (this.buffer[i]!.delivered?.state === 'waiting') return i;
    return this.buffer.length;
  }

  /** Reads the next rows after the cursor; false when there are none. */
  private refill(): boolean {
    this.buffer = [];
    this.next = 0;
    this.mayHoldDirect = false;
    // Caught up: fresh rows join the buffer as they are committed, nothing to read.
    if (this.cursor >= this.store.lastSeq) return false;
    const rows = this.store.after(this.cursor, READ_ROWS);
    if (rows.length < READ_ROWS) {
      // Everything committed so far has been read: from here on fresh rows can join the buffer directly.
      this.cursor = Math.max(this.cursor, this.store.lastSeq);
    }
    if (rows.length === 0) return false;
    if (rows.length === READ_ROWS) this.cursor = rows[rows.length - 1]!.seq;
    this.buffer = this.acknowledged.withoutAcknowledged(rows);
    return this.buffer.length > 0 || this.refill();
  }

  private dispatch(publish: Publish, rows: readonly StoredRecord[]): void {
    const entry: InFlight = { rows, sentAt: Date.now() };
    this.inflight.add(entry);
    let previous: string | undefined;
    for (const row of rows) {
      // Rows of one device usually sit together; announcing is idempotent anyway.
      if (row.device !== previous) this.announce({ name: row.device, type: row.type });
      previous = row.device;
    }
    this.counters.publishes++;
    this.upstream.publish(publish.topic, publish.payload, { dataPoints: publish.points, untimed: true }).then(
      () => {
        this.inflight.delete(entry);
        for (const row of rows) this.acknowledged.add(row);
        this.counters.delivered += rows.length;
        this.settled();
      },
      () => {
        // Connection lost before the PUBACK: everything from this publish's first row goes again.
        this.inflight.delete(entry);
        this.rewindTo = Math.min(this.rewindTo ?? Infinity, rows[0]!.seq - 1);
        this.counters.resent += rows.length;
        this.settled();
      },
    );
  }

  private settled(): void {
    if (this.inflight.size === 0) this.idle?.();
    this.hooks.acknowledged();
    this.pump();
  }

  /** A stored row ThingsBoard already has (through its direct publish): deleted with the next commit, never sent. */
  private forgetDelivered(row: StoredRecord): void {
    this.acknowledged.add(row);
    this.counters.delivered++;
  }

  private dropOversized(row: StoredRecord, bytes: number, maxBytes: number): void {
    this.cursor = Math.max(this.cursor, row.seq);
    this.acknowledged.add(row);
    this.hooks.oversized();
    this.log.warn({ device: row.device, bytes, maxMessageBytes: maxBytes }, 'a stored reading is larger than ThingsBoard now accepts (maxPayloadSize); dropped');
  }
}
