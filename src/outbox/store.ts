// The outbox's disk: one SQLite database in WAL mode (better-sqlite3). SQLite gives atomic, crash-safe
// commits, which a hand-written log would have to earn; the rest of the outbox only sees rows in sequence
// order. Power-cut safety ("full") is SQLite's synchronous=NORMAL plus an fdatasync of the WAL on libuv's
// thread pool after each group commit (sync()): the same guarantee as synchronous=FULL, whose fsync
// inside COMMIT blocked the event loop for 0.16 ms per commit here and, now and then, for 100 ms.
// Checkpoints run on a worker thread (checkpointer.ts) for the same reason.
import { closeSync, existsSync, fdatasync, fsyncSync, openSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Database as Connection, Statement } from 'better-sqlite3';
import type { UplinkKind } from '../upstream/gateway-api.js';
import { Checkpointer } from './checkpointer.js';
import { isUnreadableDatabase, moveAside } from '../state/sqlite-file.js';
import { connect, describeSqliteError, lockOutbox, StoreOpenError } from './store-file.js';

export { StoreOpenError } from './store-file.js';

export interface NewRecord {
  readonly kind: UplinkKind;
  readonly device: string;
  /** The device profile, for the `v1/gateway/connect` that must precede the device's data on a session. */
  readonly type: string;
  /** The JSON fragment the publish embeds (see upstream/batch.ts for each kind's shape). */
  readonly body: string;
  /** Telemetry data points (key-value pairs), which ThingsBoard rate-limits separately. */
  readonly points: number;
  readonly createdAt: number;
  /** What the record counts against the byte quota: recordBytes(). */
  readonly bytes: number;
}

/** A row the broker acknowledged, to delete. */
export interface Acknowledged {
  readonly seq: number;
  readonly bytes: number;
}

export interface StoredRecord extends NewRecord {
  readonly seq: number;
}

/** The store cannot take more data: the disk is full or failing. Nothing of the failed commit was kept. */
export class StoreUnavailableError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Rows per transaction when deleting on a full disk: a few dozen WAL pages at most. */
const GENTLE_DELETE_ROWS = 64;

/** Byte size of a row as counted against the quota: its JSON plus the names it carries. */
export const recordBytes = (record: Pick<NewRecord, 'device' | 'type' | 'body'>): number =>
  Buffer.byteLength(record.body) + Buffer.byteLength(record.device) + Buffer.byteLength(record.type) + ROW_OVERHEAD;
/** Sequence number, kind, counts and timestamps as SQLite stores them, roughly. */
const ROW_OVERHEAD = 24;

const INSERT = 'INSERT INTO records (seq, kind, device, type, body, points, bytes, created_at) VALUES';
const VALUES = '(?, ?, ?, ?, ?, ?, ?, ?)';
/** Rows per multi-row INSERT (8 parameters each, well under SQLite's 32,766). */
const INSERT_CHUNK = 32;

function pushValues(values: Array<number | string>, seq: number, r: NewRecord): void {
  values.push(seq, r.kind, r.device, r.type, r.body, r.points, r.bytes, r.createdAt);
}

export interface OpenedStore {
  readonly store: OutboxStore;
  /** Set when an unreadable file was moved aside (and kept) so the gateway could start with a new one. */
  readonly movedAside: string | undefined;
}

export class OutboxStore {
  private readonly insert: Statement<Array<number | string>>;
  private readonly insertMany: Statement<Array<number | string>>;
  private readonly deleteRange: Statement<[number, number], number>;
  private readonly deleteThrough: Statement<[number]>;
  private readonly readAfter: Statement<[number, number]>;
  private readonly oldestRows: Statement<[number, number]>;
  private readonly oldestCreated: Statement<[]>;
  private readonly commitTx: (records: readonly NewRecord[], acknowledged: readonly Acknowledged[]) => void;
  private count = 0;
  private byteTotal = 0;
  private deletedInTx = { records: 0, bytes: 0 };
  /**
   * The last sequence number handed out. Numbers only ever rise while the store is open, even once every
   * row was deleted, which is all the outbox relies on (its cursor and acknowledgements live in memory);
   * a new open goes on after the highest row kept.
   */
  private highestSeq: number;
  private readonly pageBytes: number;
  /** Sized once from the file system at open: it does not change under a running gateway. */
  readonly reserveSize: number;
  /** The WAL, opened to sync it off the event loop; undefined with synchronous "normal". */
  private walFd: number | undefined;
  private syncsInFlight = 0;
  private readonly checkpointer: Checkpointer;
  /** WAL pages written since the last checkpoint (an estimate). */
  private walPages = 0;
  /** The mark at which the worker checkpoints (SQLite's wal_autocheckpoint, scaled to the disk). */
  private readonly checkpointPages: number;

  private constructor(
    private readonly db: Connection,
    private readonly lock: Connection,
    private readonly path: string,
    synchronous: 'full' | 'normal',
  ) {
    this.insert = db.prepare(`${INSERT} ${VALUES}`);
    this.deleteThrough = db.prepare('DELETE FROM records WHERE seq <= ?');
    this.readAfter = db.prepare(
      'SELECT seq, kind, device, type, body, points, bytes, created_at AS createdAt FROM records WHERE seq > ? ORDER BY seq LIMIT ?',
    );
    this.oldestRows = db.prepare('SELECT seq, bytes, created_at AS createdAt FROM records WHERE seq > ? ORDER BY seq LIMIT ?');
    this.oldestCreated = db.prepare('SELECT created_at AS createdAt FROM records ORDER BY seq LIMIT 1');
    this.deleteRange = db.prepare<[number, number], number>('DELETE FROM records WHERE seq BETWEEN ? AND ? RETURNING bytes').pluck();
    this.insertMany = db.prepare(`${INSERT} ${Array.from({ length: INSERT_CHUNK }, () => VALUES).join(', ')}`);
    // The rows of a commit take the numbers after highestSeq, in order (this connection is the only writer).
    this.commitTx = db.transaction((records: readonly NewRecord[], acknowledged: readonly Acknowledged[]) => {
      // Deletions first, so the new rows can take the pages they free instead of growing the file.
      this.deletedInTx = this.deleteAcknowledged(acknowledged);
      // Many rows per statement: a statement per row cost more than the rest of the commit.
      const first = this.highestSeq + 1;
      let chunked = 0;
      for (; chunked + INSERT_CHUNK <= records.length; chunked += INSERT_CHUNK) {
        const values: Array<number | string> = [];
        for (let i = chunked; i < chunked + INSERT_CHUNK; i++) pushValues(values, first + i, records[i]!);
        this.insertMany.run(...values);
      }
      for (let i = chunked; i < records.length; i++) {
        const values: Array<number | string> = [];
        pushValues(values, first + i, records[i]!);
        this.insert.run(...values);
      }
    });
    const totals = db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b, coalesce(max(seq), 0) AS last FROM records').get() as {
      n: number;
      b: number;
      last: number;
    };
    this.count = totals.n;
    this.byteTotal = totals.b;
    this.highestSeq = totals.last;
    this.pageBytes = db.pragma('page_size', { simple: true }) as number;
    this.reserveSize = reserveBytes(path);
    this.checkpointPages = checkpointPages(path, this.pageBytes);
    this.checkpointer = new Checkpointer(path);
    if (synchronous === 'full') {
      // SQLite keeps one WAL file while any connection is open (a TRUNCATE checkpoint empties it in
      // place), so one descriptor serves the store's whole life. Its directory entry is made durable
      // once, here.
      this.walFd = openSync(`${path}-wal`, 'r');
      syncDirectory(dirname(path));
    }
  }

  /** Whether commits become durable only once sync() reports back (synchronous "full"). */
  get syncsSeparately(): boolean {
    return this.walFd !== undefined;
  }

  /**
   * Makes every commit made so far durable (fdatasync of the WAL, on libuv's thread pool), then calls back;
   * at once with synchronous "normal". Commits made after the call wait for the next one.
   */
  sync(done: (error: Error | null) => void): void {
    if (this.walFd === undefined) {
      queueMicrotask(() => done(null));
      return;
    }
    const fd = this.walFd;
    this.syncsInFlight++;
    fdatasync(fd, (error) => {
      // The descriptor outlives close() until the last sync on it is back, so it is never reused under one.
      if (--this.syncsInFlight === 0 && !this.db.open) closeSync(fd);
      done(error && new StoreUnavailableError(`the disk reported an error while syncing (${error.code ?? error.message})`, error.code ?? 'EIO'));
    });
  }

  /**
   * Opens (or creates) the outbox at `path`. A file SQLite cannot read is moved aside, never deleted, so
   * whatever it holds can still be recovered by hand; one written by a newer version is refused.
   */
  static open(path: string, synchronous: 'full' | 'normal'): OpenedStore {
    const lock = lockOutbox(path);
    try {
      try {
        return { store: new OutboxStore(connect(path), lock, path, synchronous), movedAside: undefined };
      } catch (error) {
        if (error instanceof StoreOpenError) throw error;
        if (!isUnreadableDatabase(error, path)) throw new StoreOpenError(`cannot open the outbox ${path}: ${describeSqliteError(error)}`);
        const aside = moveAside(path);
        return { store: new OutboxStore(connect(path), lock, path, synchronous), movedAside: aside };
      }
    } catch (error) {
      lock.close();
      throw error;
    }
  }

  get records(): number {
    return this.count;
  }

  get bytes(): number {
    return this.byteTotal;
  }

  /** The sequence number of the last row ever appended (0 for a new file). */
  get lastSeq(): number {
    return this.highestSeq;
  }

  /** Deletes acknowledged rows, a statement per run of consecutive sequence numbers; what actually went. */
  private deleteAcknowledged(acknowledged: readonly Acknowledged[]): { records: number; bytes: number } {
    const seqs = acknowledged.map(({ seq }) => seq).sort((a, b) => a - b);
    let records = 0;
    let bytes = 0;
    for (let start = 0; start < seqs.length; ) {
      let end = start;
      while (end + 1 < seqs.length && seqs[end + 1]! <= seqs[end]! + 1) end++;
      // A row dropped meanwhile (quota, age) is gone already and must not be counted twice.
      for (const rowBytes of this.deleteRange.all(seqs[start]!, seqs[end]!)) {
        records++;
        bytes += rowBytes;
      }
      start = end + 1;
    }
    return { records, bytes };
  }

  /**
   * One transaction: appends `records` (returning their sequence numbers, in order) and deletes the
   * acknowledged ones. All or nothing; throws StoreUnavailableError when the disk refuses.
   */
  commit(records: readonly NewRecord[], acknowledged: readonly Acknowledged[]): number[] {
    if (records.length === 0 && acknowledged.length === 0) return [];
    try {
      this.commitTx(records, acknowledged);
    } catch (error) {
      throw asUnavailable(error);
    }
    const seqs = records.map((_, i) => this.highestSeq + 1 + i);
    this.highestSeq += records.length;
    let insertedBytes = 0;
    for (const r of records) insertedBytes += r.bytes;
    this.byteTotal += insertedBytes;
    this.count += records.length;
    this.forgotten(this.deletedInTx.records, this.deletedInTx.bytes);
    // The pages rows went into and were deleted from, the parent page, the header and pointer map.
    this.walPages += 2 + Math.ceil(insertedBytes / this.pageBytes) + Math.ceil(this.deletedInTx.bytes / this.pageBytes);
    this.checkpointWhenDue();
    return seqs;
  }

  /**
   * Every checkpointPages written, a checkpoint on the worker. Should it fall behind (a disk stalling
   * for seconds) the WAL may not grow without bound on a small disk: at four times the mark the
   * checkpoint runs here, as SQLite's own automatic one would.
   */
  private checkpointWhenDue(): void {
    if (this.walPages < this.checkpointPages) return;
    if (!this.checkpointer.busy) {
      const written = this.walPages;
      this.checkpointer.checkpoint((outcome) => {
        if ('busy' in outcome && !outcome.busy) this.walPages = Math.max(0, this.walPages - written);
      });
    } else if (this.walPages >= 4 * this.checkpointPages) {
      try {
        this.db.pragma('wal_checkpoint(PASSIVE)');
        this.walPages = 0;
      } catch {
        // The disk refused: the outbox hears of it from the next commit.
      }
    }
  }

  /**
   * Deletes acknowledged rows a few at a time with a checkpoint after each group, so the WAL stays a few
   * pages long (one transaction deleting a thousand rows can need half a megabyte of it): for a full disk.
   * Returns the rows it could not delete.
   */
  forgetGently(acknowledged: readonly Acknowledged[]): Acknowledged[] {
    for (let start = 0; start < acknowledged.length; start += GENTLE_DELETE_ROWS) {
      try {
        this.commit([], acknowledged.slice(start, start + GENTLE_DELETE_ROWS));
      } catch {
        return acknowledged.slice(start);
      }
      try {
        this.db.pragma('wal_checkpoint(PASSIVE)');
      } catch {
        // The next group may still fit in what is left of the WAL.
      }
    }
    return [];
  }

  private forgotten(records: number, bytes: number): void {
    this.count = Math.max(0, this.count - records);
    this.byteTotal = Math.max(0, this.byteTotal - bytes);
  }

  /** Up to `limit` rows after `seq`, oldest first. */
  after(seq: number, limit: number): StoredRecord[] {
    return this.readAfter.all(seq, limit) as StoredRecord[];
  }

  /**
   * Deletes the oldest rows until at least `bytes` are freed, or all rows older than `createdBefore`;
   * returns what went.
   */
  dropOldest(limit: { readonly bytes?: number; readonly createdBefore?: number }): { records: number; bytes: number; lastSeq: number } {
    let records = 0;
    let freed = 0;
    let lastSeq = 0;
    const enough = (row: { bytes: number; createdAt: number }): boolean =>
      (limit.bytes === undefined || freed >= limit.bytes) && (limit.createdBefore === undefined || row.createdAt >= limit.createdBefore);
    scan: for (;;) {
      const rows = this.oldestRows.all(lastSeq, 512) as Array<{ seq: number; bytes: number; createdAt: number }>;
      if (rows.length === 0) break;
      for (const row of rows) {
        if (enough(row)) break scan;
        records++;
        freed += row.bytes;
        lastSeq = row.seq;
      }
    }
    if (records === 0) return { records: 0, bytes: 0, lastSeq: 0 };
    try {
      this.deleteThrough.run(lastSeq);
    } catch (error) {
      throw asUnavailable(error);
    }
    this.forgotten(records, freed);
    return { records, bytes: freed, lastSeq };
  }

  /** Bytes of pages inside the file that SQLite will reuse before growing it (left by deleted rows). */
  freeBytes(): number {
    const pages = this.db.pragma('freelist_count', { simple: true }) as number;
    return pages * this.pageBytes;
  }

  /**
   * Gives the disk space of deleted rows and of the WAL back to the file system (for when the disk is
   * short: in normal running SQLite simply reuses those pages).
   */
  reclaim(): void {
    try {
      this.db.pragma('incremental_vacuum');
    } catch {
      // No room even for that yet; the checkpoint below may make some.
    }
    this.checkpoint();
  }

  /**
   * Copies the WAL into the main file and truncates it, giving its disk space back; false when SQLite
   * could not finish (no room for the main file to grow).
   */
  checkpoint(): boolean {
    try {
      const [result] = this.db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>;
      return result?.busy === 0;
    } catch {
      return false;
    }
  }

  /**
   * A file of spare bytes beside the database. When the disk fills, SQLite cannot even commit the deletion
   * of delivered rows (the WAL must grow for that) nor checkpoint; deleting this file gives it that room.
   */
  get reservePath(): string {
    return `${this.path}.reserve`;
  }

  /** Free space on the file system holding the outbox. */
  roomBytes(): number {
    try {
      const stats = statfsSync(dirname(this.path));
      return stats.bavail * stats.bsize;
    } catch {
      return Infinity;
    }
  }

  /**
   * Creates the reserve if missing and it fits; false otherwise. It takes precedence over new rows: a gateway
   * restarted on a full disk must find room to delete what it delivers.
   */
  ensureReserve(): boolean {
    if (existsSync(this.reservePath)) return true;
    const size = this.reserveSize;
    try {
      const stats = statfsSync(dirname(this.path));
      if (stats.bavail * stats.bsize < size) return false;
      writeZeros(this.reservePath, size);
      return true;
    } catch {
      try {
        unlinkSync(this.reservePath);
      } catch {
        // Never created.
      }
      return false;
    }
  }

  /** Deletes the reserve; the bytes given back (0 when there was none). */
  releaseReserve(): number {
    if (!existsSync(this.reservePath)) return 0;
    try {
      unlinkSync(this.reservePath);
      return this.reserveSize;
    } catch {
      return 0;
    }
  }

  /** When the oldest row was stored, or undefined when empty. */
  oldestCreatedAt(): number | undefined {
    if (this.count === 0) return undefined;
    return (this.oldestCreated.get() as { createdAt: number } | undefined)?.createdAt;
  }

  /** Checkpoints the WAL into the main file and closes; the next open starts from a tidy file. */
  close(): void {
    if (!this.db.open) return;
    // The worker's connection first, so this one is the last and removes the WAL.
    this.checkpointer.close();
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      // A full disk can refuse the checkpoint; the WAL stays and SQLite replays it at the next open.
    }
    this.db.close();
    this.lock.close();
    if (this.walFd !== undefined && this.syncsInFlight === 0) closeSync(this.walFd);
  }
}

/** Real blocks (a sparse file would reserve nothing), written from one small buffer: 8 MiB of zeros in memory stayed in the gateway's RSS. */
function writeZeros(path: string, size: number): void {
  const zeros = Buffer.alloc(Math.min(size, 65_536));
  const fd = openSync(path, 'w');
  try {
    for (let written = 0; written < size; ) written += writeSync(fd, zeros, 0, Math.min(zeros.length, size - written));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A new file's name survives a power cut only once its directory is synced. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * SQLite checkpoints every 1,000 pages by default, 4 MB of 4 KiB pages: the same 4 MB whatever the file's
 * page size. On a small file system the WAL must stay a small share of the disk, or a full disk leaves no
 * room to checkpoint it.
 */
function checkpointPages(path: string, pageBytes: number): number {
  return Math.max(16, Math.floor(Math.min(4_096_000, fileSystemBytes(path) / 16) / pageBytes));
}

function fileSystemBytes(path: string): number {
  try {
    const stats = statfsSync(dirname(path));
    return stats.blocks * stats.bsize;
  } catch {
    return Infinity;
  }
}

/**
 * An eighth of the file system, between 128 KiB and 8 MiB: twice the most the WAL holds before a
 * checkpoint (wal_autocheckpoint above), so a full disk still leaves room to checkpoint it and to delete.
 */
function reserveBytes(path: string): number {
  return Math.max(131_072, Math.min(8_388_608, Math.floor(fileSystemBytes(path) / 8)));
}

function asUnavailable(error: unknown): Error {
  const code = (error as { code?: string }).code;
  if (typeof code === 'string' && code.startsWith('SQLITE_')) return new StoreUnavailableError(describeSqliteError(error), code);
  return error as Error;
}
