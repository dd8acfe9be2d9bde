// Store-and-forward between the bridge and ThingsBoard. A device's uplink is answered only once its rows are
// committed (group commit: everything that arrived in one turn of the event loop shares one transaction),
// then rows are published in sequence order, many per publish, and deleted once the broker acknowledges
// them. After a lost connection everything unacknowledged is sent again from the oldest, in order: QoS 1,
// so duplicates are possible, losses and reordering are not.
import { statfsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Uplink } from '../bridge/upstream-port.js';
import type { OutboxConfig } from '../config/load.js';
import { LogOncePer } from '../log.js';
import type { Device, UplinkOutcome } from '../model.js';
import { nextPublish, type Publish } from '../upstream/batch.js';
import type { PublishOptions } from '../upstream/connection.js';
import type { UplinkItem } from '../upstream/gateway-api.js';
import { StoreUnavailableError, recordBytes, type Acknowledged, type NewRecord, type OutboxStore, type StoredRecord } from './store.js';

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

export interface OutboxOptions extends Omit<OutboxConfig, 'enabled' | 'synchronous'> {
  /** The directory holding the store, watched for free space. */
  readonly dir: string;
}

export interface OutboxStats {
  /** Rows stored and not yet acknowledged upstream, and their bytes. */
  readonly records: number;
  readonly bytes: number;
  /** Age of the oldest stored row; undefined when empty. */
  readonly oldestAgeMs: number | undefined;
  /** Publishes waiting for their PUBACK. */
  readonly inflight: number;
  /** Readings answered 2.01 since start: those that went straight upstream plus those stored first. */
  readonly accepted: number;
  /** Readings answered on the broker's PUBACK without touching the disk (mode "spill"). */
  readonly direct: number;
  /** Readings stored in the outbox before their device was answered. */
  readonly spilled: number;
  /** Rows acknowledged upstream since start. */
  readonly delivered: number;
  readonly publishes: number;
  /** Rows published again after the connection was lost before their PUBACK (possible duplicates upstream). */
  readonly resent: number;
  readonly dropped: { readonly quota: number; readonly expired: number; readonly oversized: number };
  /** Uplinks answered 5.03 instead of stored, by cause. */
  readonly rejected: { readonly storage: number; readonly lowDisk: number; readonly stopping: number };
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
type Pending = NewRecord & { readonly delivered?: DirectDelivery };
type Buffered = StoredRecord & { readonly delivered?: DirectDelivery };

interface InFlight {
  readonly rows: readonly StoredRecord[];
  readonly sentAt: number;
}

type Waiter = (outcome: UplinkOutcome) => void;

const ACCEPTED: UplinkOutcome = { status: 'accepted' };
/** Rows read from the store at a time. */
const READ_ROWS = 512;
/** Rows kept in memory ahead of publishing; beyond, they are read back from the store when their turn comes. */
const MAX_BUFFERED_ROWS = 4096;
const SWEEP_INTERVAL_MS = 5_000;
/**
 * Deletions of acknowledged rows ride along with the next commit of new rows; alone, they wait this long, so
 * PUBACKs do not cost an fsync each (a deletion lost in a crash only means a duplicate, which QoS 1 allows).
 */
const DELETE_DELAY_MS = 1_000;
/**
 * Least time between two group commits while readings keep coming. A commit writes whole pages into the
 * WAL, and the fdatasync after it has each 4 KiB block of them written out, whether it carries one
 * reading or twenty: at 500 readings/s on a disk that syncs in 1-2 ms, commits followed each other as
 * fast as the syncs came back, a reading or two each, 5.2 KB written per reading; spaced, about ten share
 * one, 0.95 KB (bench/wear.ts). A device waits at most this much longer for its 2.01, far inside CoAP's
 * 2 s ACK timeout; after a pause (the previous commit longer ago than this) a reading is committed at once.
 */
const COMMIT_SPACING_MS = 20;
/**
 * Rows that fill a commit well enough not to wait out the spacing: 16 readings of ~80 bytes fill a 1 KiB
 * page, so waiting for more saves little. Without it a busy site's devices, each waiting for its answer
 * before sending again, were held to one commit per 20 ms: 128 requests in flight gave 6,500 a second.
 */
const COMMIT_EARLY_ROWS = 16;
const AGE_SWEEP_INTERVAL_MS = 60_000;
const DROP_REPORT_INTERVAL_MS = 60_000;
/** When a device refused for lack of space should try again. */
const STORAGE_RETRY_SECONDS = 30;
const STOPPING_RETRY_SECONDS = 5;
/** An unacknowledged publish older than this is worth a warning: the broker takes data but does not answer. */
const STALL_WARNING_MS = 60_000;

export class Outbox implements Uplink {
  private pendingRecords: Pending[] = [];
  private pendingWaiters: Array<{ waiter: Waiter; records: number }> = [];
  /** Committed, waiting for the sync that makes them durable before the devices are answered. */
  private awaitingSync: Array<{ waiter: Waiter; records: number }> = [];
  /** The sync in progress, if any. */
  private syncing: Promise<void> | undefined;
  /** Rows or deletions arrived while it ran. */
  private flushAfterSync = false;
  private flushScheduled = false;
  /** When the last group commit was made (performance.now()), and the timer holding the next one back. */
  private lastCommitAt = -Infinity;
  private commitTimer: NodeJS.Timeout | undefined;
  private deleteTimer: NodeJS.Timeout | undefined;
  /** Acknowledged upstream, deletion not yet committed; kept out of any re-read. */
  private acknowledged: Acknowledged[] = [];
  private readonly acknowledgedSeqs = new Set<number>();
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
  private lowDisk: string | undefined;
  /** The last look at the disk, and what was committed since. */
  private freeSpace = { free: 0, at: 0, writtenSince: 0 };
  /** The last commit of new rows failed for lack of space (the reserve was released). */
  private storageFull = false;
  private stopping = false;
  private closed = false;
  private idle: (() => void) | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private lastAgeSweep = 0;
  private stallWarned = false;
  private readonly storageLog = new LogOncePer(10 * 60_000);
  private dropReport = { quota: 0, expired: 0, oversized: 0, lastLoggedAt: 0 };
  private readonly counters = {
    accepted: 0,
    direct: 0,
    spilled: 0,
    delivered: 0,
    publishes: 0,
    resent: 0,
    dropped: { quota: 0, expired: 0, oversized: 0 },
    rejected: { storage: 0, lowDisk: 0, stopping: 0 },
  };

  constructor(
    private readonly store: OutboxStore,
    private readonly upstream: OutboxUpstream,
    /** Makes sure ThingsBoard knows the device on this session before its data (v1/gateway/connect). */
    private readonly announce: (device: Device) => void,
    private readonly options: OutboxOptions,
    private readonly log: Logger,
  ) {
    upstream.onReady(() => this.pump());
  }

  /** Starts the housekeeping (age, free space, stalls) and, if upstream is ready, delivery of what is stored. */
  start(): void {
    if (this.store.records > 0) {
      const oldest = this.store.oldestCreatedAt();
      this.log.info(
        { records: this.store.records, bytes: this.store.bytes, oldestAgeMs: oldest === undefined ? undefined : Date.now() - oldest },
        'outbox holds readings from before; delivering them first',
      );
    }
    this.store.ensureReserve();
    this.sweep();
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
    this.pump();
  }

  /**
   * Stores the items, answering once they are durable. `delivered`: they were published straight upstream
   * already and are stored because the PUBACK is late (or the connection was lost before it).
   */
  send(device: Device, items: readonly UplinkItem[], delivered?: DirectDelivery): Promise<UplinkOutcome> {
    if (this.stopping) {
      this.counters.rejected.stopping += items.length;
      return Promise.resolve({ status: 'unavailable', reason: 'the gateway is shutting down', retryAfterSeconds: STOPPING_RETRY_SECONDS });
    }
    if (this.lowDisk !== undefined) {
      this.counters.rejected.lowDisk += items.length;
      return Promise.resolve({ status: 'unavailable', reason: this.lowDisk, retryAfterSeconds: STORAGE_RETRY_SECONDS });
    }
    if (items.length === 0) return Promise.resolve(ACCEPTED);
    const createdAt = Date.now();
    for (const item of items) {
      const bytes = recordBytes({ device: device.name, type: device.type, body: item.body });
      this.pendingRecords.push({ kind: item.kind, device: device.name, type: device.type, body: item.body, points: item.points, createdAt, bytes, delivered });
    }
    return new Promise<UplinkOutcome>((resolve) => {
      this.pendingWaiters.push({ waiter: resolve, records: items.length });
      this.scheduleFlush();
    });
  }

  /**
   * Nothing is stored, or on its way into the store, that ThingsBoard has not acknowledged: a reading
   * sent straight upstream now cannot overtake an earlier one of its device.
   */
  get drained(): boolean {
    return this.pendingRecords.length === 0 && this.store.records - this.acknowledgedSeqs.size <= 0 && !this.closed;
  }

  /** Readings answered on their PUBACK without being stored (counted here so /metrics shows both paths). */
  countDirect(readings: number): void {
    this.counters.accepted += readings;
    this.counters.direct += readings;
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
    this.scheduleDeletes();
    this.pump();
  }

  /**
   * Why new uplinks are answered 5.03 instead of stored, if they are now: shutting down, below
   * outbox.minFreeDiskBytes, or the last commit found the disk full (until a commit succeeds again).
   */
  get refusing(): 'stopping' | 'low-disk' | 'disk-full' | undefined {
    if (this.stopping) return 'stopping';
    if (this.lowDisk !== undefined) return 'low-disk';
    return this.storageFull ? 'disk-full' : undefined;
  }

  stats(): OutboxStats {
    const oldest = this.closed ? undefined : this.store.oldestCreatedAt();
    return {
      records: this.store.records,
      bytes: this.store.bytes,
      oldestAgeMs: oldest === undefined ? undefined : Math.max(0, Date.now() - oldest),
      inflight: this.inflight.size,
      ...this.counters,
      dropped: { ...this.counters.dropped },
      rejected: { ...this.counters.rejected },
    };
  }

  /**
   * Stops taking uplinks, commits what was accepted, waits up to shutdownFlushMs for publishes already on
   * their way to be acknowledged, and closes the store. Whatever is not acknowledged stays for the next start.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.sweepTimer);
    clearTimeout(this.deleteTimer);
    // What waits for the commit spacing is committed now.
    this.flush();
    if (this.inflight.size > 0 && this.options.shutdownFlushMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.shutdownFlushMs);
        this.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.idle = undefined;
    }
    this.flush();
    // Devices whose rows were committed hear back once they are on disk, before the file closes.
    while (this.syncing) await this.syncing;
    const { records, bytes } = this.store;
    this.store.close();
    this.closed = true;
    // A sync that came back meanwhile may have scheduled a commit; there is nothing left to commit.
    clearTimeout(this.commitTimer);
    clearTimeout(this.deleteTimer);
    this.log.info({ records, bytes, unacknowledged: this.inflight.size }, records > 0 ? 'outbox closed; its readings wait for the next start' : 'outbox closed, empty');
  }

  /**
   * The next group commit: after this turn of the event loop, and no sooner than COMMIT_SPACING_MS after the
   * last unless COMMIT_EARLY_ROWS are waiting.
   */
  private scheduleFlush(): void {
    if (this.closed) return;
    if (this.flushScheduled) {
      if (this.commitTimer && this.pendingRecords.length >= COMMIT_EARLY_ROWS) {
        clearTimeout(this.commitTimer);
        this.commitTimer = undefined;
        setImmediate(() => this.flush());
      }
      return;
    }
    this.flushScheduled = true;
    const wait = Math.min(COMMIT_SPACING_MS, this.lastCommitAt + COMMIT_SPACING_MS - performance.now());
    if (wait > 0) this.commitTimer = setTimeout(() => this.flush(), wait);
    else setImmediate(() => this.flush());
  }

  /** One group commit: new rows in, acknowledged rows out; then the devices are answered. */
  private flush(): void {
    this.flushScheduled = false;
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    if (this.closed) return;
    // While a sync runs, what arrives could only be answered after the next one anyway: committing it
    // now would only write more WAL pages. It is committed, all at once, when the sync is back.
    if (this.syncing && !this.stopping) {
      this.flushAfterSync = true;
      return;
    }
    clearTimeout(this.deleteTimer);
    this.deleteTimer = undefined;
    const records = this.pendingRecords;
    const waiters = this.pendingWaiters;
    const acknowledged = this.acknowledged;
    if (records.length === 0 && acknowledged.length === 0) return;
    this.pendingRecords = [];
    this.pendingWaiters = [];
    this.acknowledged = [];
    if (records.length === 0 && (this.storageFull || this.lowDisk !== undefined)) {
      this.commitDeletions(acknowledged);
      return;
    }
    // Checked with the commits, not only on a timer: a burst must not run past the reserve before the next look.
    if (records.length > 0 && this.options.minFreeDiskBytes > 0) this.checkFreeSpaceBefore(records);
    if (records.length > 0 && this.lowDisk !== undefined) {
      this.counters.rejected.lowDisk += records.length;
      for (const { waiter } of waiters) waiter({ status: 'unavailable', reason: this.lowDisk, retryAfterSeconds: STORAGE_RETRY_SECONDS });
      this.commitDeletions(acknowledged);
      return;
    }
    // After a full disk, new rows wait until there is room again (delivered rows freed pages, or the disk
    // got space) and the reserve is back: it is for deleting and checkpointing, not for more readings.
    if (records.length > 0 && this.storageFull && !this.roomAgain()) {
      this.counters.rejected.storage += records.length;
      for (const { waiter } of waiters) {
        waiter({ status: 'unavailable', reason: 'the gateway cannot store readings: the disk is full', retryAfterSeconds: STORAGE_RETRY_SECONDS });
      }
      this.commitDeletions(acknowledged);
      return;
    }
    const caughtUp = this.rewindTo === undefined && this.cursor === this.store.lastSeq;

    let seqs: number[];
    this.lastCommitAt = performance.now();
    try {
      seqs = this.store.commit(records, acknowledged);
    } catch (error) {
      this.storageFailed(error, records.length);
      for (const { waiter } of waiters) {
        waiter({ status: 'unavailable', reason: `the gateway cannot store readings: ${(error as Error).message}`, retryAfterSeconds: STORAGE_RETRY_SECONDS });
      }
      if (error instanceof StoreUnavailableError && !this.storageFull) {
        this.storageFull = true;
        // Room for SQLite to checkpoint and to delete what gets delivered, so the outbox can drain and
        // take readings again instead of staying full for good.
        const released = this.store.releaseReserve();
        this.log.warn({ releasedBytes: released, records: this.store.records }, 'outbox storage full: released its reserve file so delivered readings can still be deleted');
        // Deletions before the checkpoint: the pages they free are reused instead of the file growing.
        this.commitDeletions(acknowledged);
        this.store.checkpoint();
      } else {
        this.commitDeletions(acknowledged);
      }
      return;
    }
    for (const { seq } of acknowledged) this.acknowledgedSeqs.delete(seq);
    if (this.storageFull && records.length > 0) {
      this.storageFull = false;
      this.log.info({ records: this.store.records }, 'outbox storing readings again');
    }
    this.answerOnceDurable(waiters);

    // Fresh rows right behind the reader join the buffer directly instead of being read back.
    if (caughtUp && seqs.length > 0 && this.buffer.length - this.next + seqs.length <= MAX_BUFFERED_ROWS) {
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
    if (this.store.bytes > this.options.maxBytes) this.enforceQuota();
    this.pump();
  }

  /**
   * Devices are told "created" only once their rows are on disk: one sync (off the event loop) covers
   * every commit made before it starts; rows committed while it runs wait for the next.
   */
  private answerOnceDurable(waiters: ReadonlyArray<{ waiter: Waiter; records: number }>): void {
    this.awaitingSync.push(...waiters);
    // Deletions alone need no sync (one lost to a power cut means a duplicate, which QoS 1 allows), and
    // unsynced, their WAL blocks can be written once with the next commit's instead of once more now.
    if (!this.syncing && this.awaitingSync.length > 0) this.syncThenAnswer();
  }

  private syncThenAnswer(): void {
    const batch = this.awaitingSync;
    this.awaitingSync = [];
    this.syncing = new Promise<void>((resolve) => {
      this.store.sync((error) => {
        this.syncing = undefined;
        if (error) {
          this.storageFailed(error, batch.reduce((sum, { records }) => sum + records, 0));
          const refused: UplinkOutcome = { status: 'unavailable', reason: `the gateway cannot store readings: ${error.message}`, retryAfterSeconds: STORAGE_RETRY_SECONDS };
          for (const { waiter } of batch) waiter(refused);
        } else {
          for (const { waiter, records } of batch) {
            this.counters.accepted += records;
            this.counters.spilled += records;
            waiter(ACCEPTED);
          }
        }
        if (this.awaitingSync.length > 0) this.syncThenAnswer();
        else if (this.flushAfterSync) {
          this.flushAfterSync = false;
          this.scheduleFlush();
        }
        resolve();
      });
    });
  }

  /** Publishes from the oldest unsent row while the window has room. */
  private pump(): void {
    if (this.stopping || !this.upstream.ready) return;
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
    this.buffer = this.acknowledgedSeqs.size > 0 ? rows.filter((row) => !this.acknowledgedSeqs.has(row.seq)) : rows;
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
        for (const row of rows) {
          this.acknowledged.push({ seq: row.seq, bytes: row.bytes });
          this.acknowledgedSeqs.add(row.seq);
        }
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
    this.scheduleDeletes();
    this.pump();
  }

  /** After a full disk: there is room for readings again once the reserve could be put back with room to spare. */
  private roomAgain(): boolean {
    if (this.store.roomBytes() < 4 * this.store.reserveSize) this.store.reclaim();
    return this.store.roomBytes() >= 4 * this.store.reserveSize && this.store.ensureReserve();
  }

  /** Deletions on their own, a few at a time (the disk is short); what does not fit waits for the next try. */
  private commitDeletions(acknowledged: Acknowledged[]): void {
    if (acknowledged.length === 0) return;
    const left = this.store.forgetGently(acknowledged);
    const kept = new Set(left.map(({ seq }) => seq));
    for (const { seq } of acknowledged) if (!kept.has(seq)) this.acknowledgedSeqs.delete(seq);
    if (left.length > 0) {
      this.acknowledged = left.concat(this.acknowledged);
      this.scheduleDeletes();
    }
  }

  private scheduleDeletes(): void {
    if (this.acknowledged.length === 0 || this.deleteTimer || this.flushScheduled || this.closed) return;
    this.deleteTimer = setTimeout(() => this.flush(), DELETE_DELAY_MS);
    this.deleteTimer.unref();
  }

  private enforceQuota(): void {
    // Down to 95% in one go, so a full outbox drops in batches rather than a few rows on every commit.
    const excess = this.store.bytes - Math.floor(this.options.maxBytes * 0.95);
    this.dropped('quota', () => this.store.dropOldest({ bytes: excess }));
  }

  private sweep(): void {
    const now = Date.now();
    if (this.storageFull || this.lowDisk !== undefined) {
      // Give the space of delivered rows and of the WAL back to the file system.
      this.store.reclaim();
    }
    this.checkFreeSpace();
    if (!this.storageFull && this.lowDisk === undefined) this.store.ensureReserve();
    if (this.options.maxAgeHours > 0 && now - this.lastAgeSweep >= AGE_SWEEP_INTERVAL_MS) {
      this.lastAgeSweep = now;
      const createdBefore = now - this.options.maxAgeHours * 3_600_000;
      this.dropped('expired', () => this.store.dropOldest({ createdBefore }));
    }
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
    this.reportDrops(now);
  }

  /**
   * Looks at the disk again (statfs) once the rows written since the last look could have used a quarter
   * of the room above the reserve, or a second has passed (other programs write too): a look per commit
   * cost more than the commit itself under load.
   */
  private checkFreeSpaceBefore(records: readonly NewRecord[]): void {
    // WAL frame, table page and the checkpoint's copy: a row can take about three times its size on disk.
    for (const record of records) this.freeSpace.writtenSince += 3 * record.bytes;
    const { free, at, writtenSince } = this.freeSpace;
    if (this.lowDisk === undefined && writtenSince < (free - this.options.minFreeDiskBytes) / 4 && Date.now() - at < 1000) return;
    this.checkFreeSpace();
  }

  private checkFreeSpace(): void {
    const reserve = this.options.minFreeDiskBytes;
    if (reserve === 0) return;
    let free: number;
    try {
      const stats = statfsSync(this.options.dir);
      free = stats.bavail * stats.bsize;
      // Pages deleted rows left inside the file are reused before it grows: room that takes nothing from the box.
      if (free < reserve) free += this.store.freeBytes();
    } catch {
      return;
    }
    this.freeSpace = { free, at: Date.now(), writtenSince: 0 };
    if (free < reserve && this.lowDisk === undefined) {
      this.lowDisk = `the gateway's disk is nearly full (${mib(free)} free, outbox.minFreeDiskBytes keeps ${mib(reserve)}); readings are refused until space is freed`;
      this.log.error({ dir: this.options.dir, freeBytes: free, minFreeDiskBytes: reserve, records: this.store.records }, `${this.lowDisk}; stored readings are kept and still delivered`);
    } else if (free >= reserve && this.lowDisk !== undefined) {
      this.lowDisk = undefined;
      this.log.info({ dir: this.options.dir, freeBytes: free }, 'disk space available again: accepting readings');
    }
  }

  private dropped(reason: 'quota' | 'expired', drop: () => { records: number; lastSeq: number }): void {
    let result: { records: number; lastSeq: number };
    try {
      result = drop();
    } catch (error) {
      this.storageFailed(error, 0);
      return;
    }
    if (result.records === 0) return;
    this.counters.dropped[reason] += result.records;
    this.dropReport[reason] += result.records;
    // Rows read ahead that no longer exist are not sent.
    const remaining = this.buffer.slice(this.next).filter((row) => row.seq > result.lastSeq);
    this.buffer = remaining;
    this.next = 0;
    this.cursor = Math.max(this.cursor, remaining.length === 0 ? result.lastSeq : this.cursor);
    this.reportDrops(Date.now());
  }

  /** A stored row ThingsBoard already has (through its direct publish): deleted with the next commit, never sent. */
  private forgetDelivered(row: StoredRecord): void {
    this.acknowledged.push({ seq: row.seq, bytes: row.bytes });
    this.acknowledgedSeqs.add(row.seq);
    this.counters.delivered++;
  }

  private dropOversized(row: StoredRecord, bytes: number, maxBytes: number): void {
    this.counters.dropped.oversized++;
    this.dropReport.oversized++;
    this.cursor = Math.max(this.cursor, row.seq);
    this.acknowledged.push({ seq: row.seq, bytes: row.bytes });
    this.acknowledgedSeqs.add(row.seq);
    this.scheduleFlush();
    this.log.warn({ device: row.device, bytes, maxMessageBytes: maxBytes }, 'a stored reading is larger than ThingsBoard now accepts (maxPayloadSize); dropped');
  }

  /** One warning per minute at most, with counts, while drops go on. */
  private reportDrops(now: number): void {
    const report = this.dropReport;
    const total = report.quota + report.expired + report.oversized;
    if (total === 0 || now - report.lastLoggedAt < DROP_REPORT_INTERVAL_MS) return;
    const { maxBytes, maxAgeHours } = this.options;
    this.log.warn(
      {
        droppedForSpace: report.quota,
        droppedForAge: report.expired,
        droppedOversized: report.oversized,
        maxBytes,
        maxAgeHours,
        records: this.store.records,
        droppedSinceStart: this.counters.dropped,
      },
      report.quota > 0
        ? `outbox full (outbox.maxBytes ${mib(maxBytes)}): dropped the oldest readings to keep the newest`
        : 'outbox dropped readings that waited longer than outbox.maxAgeHours',
    );
    this.dropReport = { quota: 0, expired: 0, oversized: 0, lastLoggedAt: now };
  }

  private storageFailed(error: unknown, refused: number): void {
    this.counters.rejected.storage += refused;
    const code = error instanceof StoreUnavailableError ? error.code : 'unexpected';
    if (this.storageLog.first(code)) {
      this.log.error(
        { err: error instanceof StoreUnavailableError ? undefined : error, code, dir: this.options.dir, records: this.store.records },
        `the outbox cannot write: ${(error as Error).message}; new readings get 5.03 until it can, stored readings are intact and still delivered (repeats not logged for 10 minutes)`,
      );
    }
  }
}

const mib = (bytes: number): string => `${(bytes / 1_048_576).toFixed(1)} MiB`;
