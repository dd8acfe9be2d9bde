// When the outbox commits, and when devices hear back. Everything that arrived in one turn of the event loop
// shares one transaction (group commit), commits are spaced while readings keep coming, deletions ride along
// or wait a second, and devices are answered only once a sync has made their rows durable.
import type { UplinkOutcome } from '../model.js';
import type { OutboxCounters } from './counters.js';
import type { Pending } from './delivery.js';
import { STORAGE_RETRY_SECONDS, type DiskSpace } from './disk-space.js';
import type { OutboxStore } from './store.js';

export type Waiter = (outcome: UplinkOutcome) => void;
export interface Waiting {
  readonly waiter: Waiter;
  readonly records: number;
}

export const ACCEPTED: UplinkOutcome = { status: 'accepted' };
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

export class GroupCommit {
  private records: Pending[] = [];
  private waiters: Waiting[] = [];
  /** Committed, waiting for the sync that makes them durable before the devices are answered. */
  private awaitingSync: Waiting[] = [];
  /** The sync in progress, if any. */
  private syncing: Promise<void> | undefined;
  /** Rows or deletions arrived while it ran. */
  private flushAfterSync = false;
  private flushScheduled = false;
  /** When the last group commit was made (performance.now()), and the timer holding the next one back. */
  private lastCommitAt = -Infinity;
  private commitTimer: NodeJS.Timeout | undefined;
  private deleteTimer: NodeJS.Timeout | undefined;
  private isClosed = false;

  constructor(
    private readonly store: OutboxStore,
    /** Makes one group commit: takes what waits (take()) and commits it. */
    private readonly flush: () => void,
    private readonly counters: OutboxCounters,
    private readonly disk: Pick<DiskSpace, 'failed'>,
  ) {}

  /** Rows on their way into the store. */
  get waitingRows(): number {
    return this.records.length;
  }

  /** The store is closed: nothing more is committed. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Rows for the next commit; `waiter` hears once they are durable (or why not). */
  add(records: readonly Pending[], waiter: Waiter): void {
    for (const record of records) this.records.push(record);
    this.waiters.push({ waiter, records: records.length });
    this.schedule();
  }

  /**
   * The next group commit: after this turn of the event loop, and no sooner than COMMIT_SPACING_MS after the
   * last unless COMMIT_EARLY_ROWS are waiting.
   */
  schedule(): void {
    if (this.isClosed) return;
    if (this.flushScheduled) {
      if (this.commitTimer && this.records.length >= COMMIT_EARLY_ROWS) {
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

  /** Deletions waiting on their own are committed after DELETE_DELAY_MS, unless a commit comes sooner. */
  scheduleDeletes(waiting: boolean): void {
    if (!waiting || this.deleteTimer || this.flushScheduled || this.isClosed) return;
    this.deleteTimer = setTimeout(() => this.flush(), DELETE_DELAY_MS);
    this.deleteTimer.unref();
  }

  /**
   * What the commit about to be made takes: undefined when there is none to make now. While a sync runs,
   * what arrives could only be answered after the next one anyway: committing it now would only write more
   * WAL pages. It is committed, all at once, when the sync is back (at once when `stopping`).
   */
  take(stopping: boolean): { readonly records: Pending[]; readonly waiters: Waiting[] } | undefined {
    this.flushScheduled = false;
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    if (this.isClosed) return undefined;
    if (this.syncing && !stopping) {
      this.flushAfterSync = true;
      return undefined;
    }
    clearTimeout(this.deleteTimer);
    this.deleteTimer = undefined;
    const taken = { records: this.records, waiters: this.waiters };
    this.records = [];
    this.waiters = [];
    return taken;
  }

  /** A commit is being made now: the next one is spaced from it. */
  committing(): void {
    this.lastCommitAt = performance.now();
  }

  /**
   * Devices are told "created" only once their rows are on disk: one sync (off the event loop) covers
   * every commit made before it starts; rows committed while it runs wait for the next.
   */
  answerOnceDurable(waiters: readonly Waiting[]): void {
    this.awaitingSync.push(...waiters);
    // Deletions alone need no sync (one lost to a power cut means a duplicate, which QoS 1 allows), and
    // unsynced, their WAL blocks can be written once with the next commit's instead of once more now.
    if (!this.syncing && this.awaitingSync.length > 0) this.syncThenAnswer();
  }

  /**
   * Waits for the syncs in progress (devices whose rows were committed hear back once they are on disk),
   * then nothing more is committed: the store is about to close.
   */
  async close(): Promise<void> {
    while (this.syncing) await this.syncing;
    this.isClosed = true;
    // A sync that came back meanwhile may have scheduled a commit; there is nothing left to commit.
    clearTimeout(this.commitTimer);
    clearTimeout(this.deleteTimer);
  }

  /** Shutting down: deletions wait for the final commit instead of their own timer. */
  cancelDeleteTimer(): void {
    clearTimeout(this.deleteTimer);
  }

  private syncThenAnswer(): void {
    const batch = this.awaitingSync;
    this.awaitingSync = [];
    this.syncing = new Promise<void>((resolve) => {
      this.store.sync((error) => {
        this.syncing = undefined;
        if (error) {
          this.disk.failed(error, batch.reduce((sum, { records }) => sum + records, 0));
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
          this.schedule();
        }
        resolve();
      });
    });
  }
}
