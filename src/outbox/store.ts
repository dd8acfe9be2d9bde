// The outbox's disk: one SQLite database in WAL mode (better-sqlite3). SQLite gives atomic, crash-safe
// commits and survives power cuts with synchronous=FULL, which a hand-written log would have to earn; the
// rest of the outbox only sees rows in sequence order.
import { existsSync, renameSync } from 'node:fs';
import Database, { type Database as Connection, type Statement } from 'better-sqlite3';
import type { UplinkKind } from '../upstream/gateway-api.js';

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
}

/** A row the broker acknowledged, to delete. */
export interface Acknowledged {
  readonly seq: number;
  readonly bytes: number;
}

export interface StoredRecord extends NewRecord {
  readonly seq: number;
  /** What the record counts against the byte quota. */
  readonly bytes: number;
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

/** The outbox file cannot be used at all (locked by another process, written by a newer version). */
export class StoreOpenError extends Error {}

const SCHEMA_VERSION = 1;

/** Byte size of a row as counted against the quota: its JSON plus the names it carries. */
export const recordBytes = (record: Pick<NewRecord, 'device' | 'type' | 'body'>): number =>
  Buffer.byteLength(record.body) + Buffer.byteLength(record.device) + Buffer.byteLength(record.type) + ROW_OVERHEAD;
/** Sequence number, kind, counts and timestamps as SQLite stores them, roughly. */
const ROW_OVERHEAD = 24;

export interface OpenedStore {
  readonly store: OutboxStore;
  /** Set when an unreadable file was moved aside (and kept) so the gateway could start with a new one. */
  readonly movedAside: string | undefined;
}

export class OutboxStore {
  private readonly insert: Statement<[number, string, string, string, number, number, number]>;
  private readonly deleteOne: Statement<[number]>;
  private readonly deleteThrough: Statement<[number]>;
  private readonly readAfter: Statement<[number, number]>;
  private readonly oldestRows: Statement<[number, number]>;
  private readonly oldestCreated: Statement<[]>;
  private readonly commitTx: (records: readonly NewRecord[], acknowledged: readonly Acknowledged[]) => number[];
  private count = 0;
  private byteTotal = 0;
  private deletedInTx = { records: 0, bytes: 0 };
  private highestSeq: number;

  private constructor(private readonly db: Connection) {
    this.insert = db.prepare('INSERT INTO records (kind, device, type, body, points, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.deleteOne = db.prepare('DELETE FROM records WHERE seq = ?');
    this.deleteThrough = db.prepare('DELETE FROM records WHERE seq <= ?');
    this.readAfter = db.prepare(
      'SELECT seq, kind, device, type, body, points, bytes, created_at AS createdAt FROM records WHERE seq > ? ORDER BY seq LIMIT ?',
    );
    this.oldestRows = db.prepare('SELECT seq, bytes, created_at AS createdAt FROM records WHERE seq > ? ORDER BY seq LIMIT ?');
    this.oldestCreated = db.prepare('SELECT created_at AS createdAt FROM records ORDER BY seq LIMIT 1');
    this.commitTx = db.transaction((records: readonly NewRecord[], acknowledged: readonly Acknowledged[]) => {
      const seqs: number[] = [];
      for (const r of records) {
        const info = this.insert.run(r.kind, r.device, r.type, r.body, r.points, recordBytes(r), r.createdAt);
        seqs.push(Number(info.lastInsertRowid));
      }
      let deleted = 0;
      let deletedBytes = 0;
      for (const { seq, bytes } of acknowledged) {
        // A row dropped meanwhile (quota, age) is gone already and must not be counted twice.
        if (this.deleteOne.run(seq).changes > 0) {
          deleted++;
          deletedBytes += bytes;
        }
      }
      this.deletedInTx = { records: deleted, bytes: deletedBytes };
      return seqs;
    });
    const totals = db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM records').get() as { n: number; b: number };
    this.count = totals.n;
    this.byteTotal = totals.b;
    const sequence = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'records'").get() as { seq: number } | undefined;
    this.highestSeq = sequence?.seq ?? 0;
  }

  /**
   * Opens (or creates) the outbox at `path`. A file SQLite cannot read is moved aside, never deleted, so
   * whatever it holds can still be recovered by hand; one written by a newer version is refused.
   */
  static open(path: string, synchronous: 'full' | 'normal'): OpenedStore {
    try {
      return { store: new OutboxStore(connect(path, synchronous)), movedAside: undefined };
    } catch (error) {
      if (error instanceof StoreOpenError) throw error;
      const code = (error as { code?: string }).code ?? '';
      if (!['SQLITE_CORRUPT', 'SQLITE_NOTADB'].includes(code) || !existsSync(path)) {
        throw new StoreOpenError(`cannot open the outbox ${path}: ${describe(error)}`);
      }
      const aside = `${path}.unreadable-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      renameSync(path, aside);
      for (const suffix of ['-wal', '-shm']) if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
      return { store: new OutboxStore(connect(path, synchronous)), movedAside: aside };
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

  /**
   * One transaction: appends `records` (returning their sequence numbers, in order) and deletes the
   * acknowledged ones. All or nothing; throws StoreUnavailableError when the disk refuses.
   */
  commit(records: readonly NewRecord[], acknowledged: readonly Acknowledged[]): number[] {
    if (records.length === 0 && acknowledged.length === 0) return [];
    let seqs: number[];
    try {
      seqs = this.commitTx(records, acknowledged);
    } catch (error) {
      throw asUnavailable(error);
    }
    for (const r of records) this.byteTotal += recordBytes(r);
    this.count += records.length;
    this.forgotten(this.deletedInTx.records, this.deletedInTx.bytes);
    if (seqs.length > 0) this.highestSeq = seqs[seqs.length - 1]!;
    return seqs;
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

  /** When the oldest row was stored, or undefined when empty. */
  oldestCreatedAt(): number | undefined {
    if (this.count === 0) return undefined;
    return (this.oldestCreated.get() as { createdAt: number } | undefined)?.createdAt;
  }

  /** Checkpoints the WAL into the main file and closes; the next open starts from a tidy file. */
  close(): void {
    if (!this.db.open) return;
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      // A full disk can refuse the checkpoint; the WAL stays and SQLite replays it at the next open.
    }
    this.db.close();
  }
}

function connect(path: string, synchronous: 'full' | 'normal'): Connection {
  // Nothing else should ever hold the lock: a short wait, then the clear error below.
  const db = new Database(path, { timeout: 500 });
  try {
    // Exclusive: a second gateway pointed at the same state directory fails at start instead of both
    // sending the same records. (In WAL mode this also keeps the index in memory, without a -shm file.)
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    // After a checkpoint the WAL shrinks back instead of keeping its peak size on a small SD card.
    db.pragma('journal_size_limit = 16777216');
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new StoreOpenError(
        `the outbox ${path} was written by a newer coap2mqtt (format ${version}, this one reads ${SCHEMA_VERSION}); ` +
          'start the newer version to deliver what it holds, or move the file away',
      );
    }
    // AUTOINCREMENT: sequence numbers never go back, even once every row was delivered and deleted, so
    // "everything after seq N" stays meaningful for the whole life of the file.
    db.exec(`CREATE TABLE IF NOT EXISTS records (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      kind INTEGER NOT NULL,
      device TEXT NOT NULL,
      type TEXT NOT NULL,
      body TEXT NOT NULL,
      points INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      created_at INTEGER NOT NULL
    )`);
    if (version < SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`);
    // The exclusive lock is taken by the first write; take it now so a second instance fails here.
    db.exec('BEGIN IMMEDIATE; COMMIT;');
    return db;
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') {
      throw new StoreOpenError(`the outbox ${path} is in use by another process (is another coap2mqtt running with the same state.dir?)`);
    }
    throw error;
  }
}

function asUnavailable(error: unknown): Error {
  const code = (error as { code?: string }).code;
  if (typeof code === 'string' && code.startsWith('SQLITE_')) return new StoreUnavailableError(describe(error), code);
  return error as Error;
}

function describe(error: unknown): string {
  const code = (error as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL') return 'the disk is full';
  if (code.startsWith('SQLITE_IOERR')) return `the disk reported an I/O error (${code})`;
  if (code === 'SQLITE_READONLY' || code === 'SQLITE_CANTOPEN') return `the file cannot be written (${code})`;
  return (error as Error).message;
}
