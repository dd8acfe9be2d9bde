// The outbox's side of the disk: free space above outbox.minFreeDiskBytes (looked at with the commits, not
// only on a timer), the full disk a commit ran into and the reserve file that lets it recover, and the one
// log line per kind of storage failure every 10 minutes.
import { statfsSync } from 'node:fs';
import type { Logger } from 'pino';
import { LogOncePer } from '../log.js';
import type { OutboxCounters } from './counters.js';
import { StoreUnavailableError, type NewRecord, type OutboxStore } from './store.js';

/** When a device refused for lack of space should try again. */
export const STORAGE_RETRY_SECONDS = 30;

export interface DiskSpaceOptions {
  /** The directory holding the store, watched for free space. */
  readonly dir: string;
  readonly minFreeDiskBytes: number;
}

export class DiskSpace {
  /** Why readings are refused for lack of space (below outbox.minFreeDiskBytes), while they are. */
  private lowDisk: string | undefined;
  /** The last look at the disk, and what was committed since. */
  private freeSpace = { free: 0, at: 0, writtenSince: 0 };
  /** The last commit of new rows failed for lack of space (the reserve was released). */
  private storageFull = false;
  private readonly storageLog = new LogOncePer(10 * 60_000);

  constructor(
    private readonly store: OutboxStore,
    private readonly options: DiskSpaceOptions,
    private readonly counters: OutboxCounters,
    private readonly log: Logger,
  ) {}

  /** Why readings are refused for lack of space below outbox.minFreeDiskBytes, while they are. */
  get lowDiskReason(): string | undefined {
    return this.lowDisk;
  }

  /** The last commit of new rows found the disk full (until one succeeds again). */
  get full(): boolean {
    return this.storageFull;
  }

  /** Full or low: delivered rows' space is given back to the file system, and no reserve is taken. */
  get short(): boolean {
    return this.storageFull || this.lowDisk !== undefined;
  }

  /** The housekeeping of every sweep: space given back while short, a look at the disk, the reserve put back. */
  housekeep(): void {
    // Give the space of delivered rows and of the WAL back to the file system.
    if (this.short) this.store.reclaim();
    this.check();
    if (!this.short) this.store.ensureReserve();
  }

  /**
   * Looks at the disk again (statfs) once the rows written since the last look could have used a quarter
   * of the room above the reserve, or a second has passed (other programs write too): a look per commit
   * cost more than the commit itself under load.
   */
  checkBefore(records: readonly NewRecord[]): void {
    if (this.options.minFreeDiskBytes <= 0) return;
    // WAL frame, table page and the checkpoint's copy: a row can take about three times its size on disk.
    for (const record of records) this.freeSpace.writtenSince += 3 * record.bytes;
    const { free, at, writtenSince } = this.freeSpace;
    if (this.lowDisk === undefined && writtenSince < (free - this.options.minFreeDiskBytes) / 4 && Date.now() - at < 1000) return;
    this.check();
  }

  /** After a full disk: there is room for readings again once the reserve could be put back with room to spare. */
  roomAgain(): boolean {
    if (this.store.roomBytes() < 4 * this.store.reserveSize) this.store.reclaim();
    return this.store.roomBytes() >= 4 * this.store.reserveSize && this.store.ensureReserve();
  }

  /**
   * A commit of new rows found the disk full. Room for SQLite to checkpoint and to delete what gets
   * delivered, so the outbox can drain and take readings again instead of staying full for good.
   */
  becameFull(): void {
    this.storageFull = true;
    const released = this.store.releaseReserve();
    this.log.warn({ releasedBytes: released, records: this.store.records }, 'outbox storage full: released its reserve file so delivered readings can still be deleted');
  }

  /** A commit of new rows succeeded. */
  stored(): void {
    if (!this.storageFull) return;
    this.storageFull = false;
    this.log.info({ records: this.store.records }, 'outbox storing readings again');
  }

  /** The store refused a write; `refused` readings are answered 5.03. */
  failed(error: unknown, refused: number): void {
    this.counters.rejected.storage += refused;
    const code = error instanceof StoreUnavailableError ? error.code : 'unexpected';
    if (this.storageLog.first(code)) {
      this.log.error(
        { err: error instanceof StoreUnavailableError ? undefined : error, code, dir: this.options.dir, records: this.store.records },
        `the outbox cannot write: ${(error as Error).message}; new readings get 5.03 until it can, stored readings are intact and still delivered (repeats not logged for 10 minutes)`,
      );
    }
  }

  private check(): void {
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
}

export const mib = (bytes: number): string => `${(bytes / 1_048_576).toFixed(1)} MiB`;
