// The outbox file's format and how it is opened: the table, the format versions a file may carry, the
// lock beside it, and what SQLite's errors mean to a technician. The store (store.ts) writes through it;
// the inspection (inspect.ts) reads a file without touching it.
import Database, { type Database as Connection } from 'better-sqlite3';

/** The outbox file cannot be used at all (locked by another process, written by a newer version). */
export class StoreOpenError extends Error {}

/**
 * 1: seq AUTOINCREMENT, 4 KiB pages. 2: seq numbered by the store (no sqlite_sequence row rewritten by
 * every commit), 1 KiB pages on new files. A format-1 file still opens and works; once it is empty at
 * an open it is rebuilt in format 2 (rebuildEmpty).
 */
export const SCHEMA_VERSION = 2;
/**
 * Page size of a new file. A commit writes every page it touches into the WAL whole, and the fdatasync
 * after it makes the kernel write each 4 KiB block of those frames again: a one-reading commit that
 * rewrites one 1 KiB page costs one block (sometimes two), where a 4 KiB page (frame 4,120 bytes) always
 * costs two.
 */
const PAGE_BYTES = 1024;

/**
 * A second gateway pointed at the same state directory must fail at start instead of both sending the
 * same records. The outbox itself cannot be locked exclusively (the checkpointer has a connection of
 * its own), so a small database beside it is: SQLite's lock, held until close, released by the kernel
 * if the process dies.
 */
export function lockOutbox(path: string): Connection {
  const lock = new Database(`${path}.lock`, { timeout: 500 });
  try {
    lock.pragma('locking_mode = EXCLUSIVE');
    lock.exec('BEGIN IMMEDIATE; COMMIT;'); // the exclusive lock is taken by the first write
    return lock;
  } catch (error) {
    lock.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') {
      throw new StoreOpenError(`the outbox ${path} is in use by another process (is another coap2mqtt running with the same state.dir?)`);
    }
    throw new StoreOpenError(`cannot lock the outbox ${path}: ${describeSqliteError(error)}`);
  }
}

/** The format a file is in: 0 for a new, empty one (see SCHEMA_VERSION). */
export function formatVersion(db: Connection): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  // Format 1 set its version only after creating the table: a crash in between left a version 0 with a table.
  if (version === 0 && db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").get() !== undefined) return 1;
  return version;
}

/** Opens (or creates) the outbox database in the current format; throws StoreOpenError for a newer one. */
export function connect(path: string): Connection {
  const db = new Database(path, { timeout: 5000 });
  try {
    const version = formatVersion(db);
    if (version > SCHEMA_VERSION) {
      throw new StoreOpenError(
        `the outbox ${path} was written by a newer coap2mqtt (format ${version}, this one reads ${SCHEMA_VERSION}); ` +
          'start the newer version to deliver what it holds, or move the file away',
      );
    }
    if (version === 0) {
      // Freed pages can be handed back to the file system when the disk runs short (reclaim). SQLite takes
      // both only on a new file, before WAL mode and before the first table.
      db.pragma(`page_size = ${PAGE_BYTES}`);
      db.pragma('auto_vacuum = INCREMENTAL');
    }
    if (version === 1 && (db.prepare('SELECT count(*) AS n FROM records').get() as { n: number }).n === 0) rebuildEmpty(db);
    db.pragma('journal_mode = WAL');
    // Checkpoints sync the WAL and the file; commits do not: with "full", OutboxStore.sync() does that.
    db.pragma('synchronous = NORMAL');
    // After a checkpoint the WAL shrinks back instead of keeping its peak size on a small SD card.
    db.pragma('journal_size_limit = 16777216');
    // The checkpointer worker checkpoints (OutboxStore.checkpointWhenDue), not the writer.
    db.pragma('wal_autocheckpoint = 0');
    // A new file gets the table. A format-1 file holding rows keeps its own (seq AUTOINCREMENT, which takes
    // the store's numbers as well) until an open finds it empty and rebuilds it.
    if (version === 0) db.exec(`BEGIN; ${CREATE_RECORDS}; PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

/**
 * seq is the rowid, numbered by the store. Without AUTOINCREMENT no sqlite_sequence page is rewritten
 * by every commit (a third of what a one-reading commit wrote).
 */
const CREATE_RECORDS = `CREATE TABLE records (
  seq INTEGER PRIMARY KEY,
  kind INTEGER NOT NULL,
  device TEXT NOT NULL,
  type TEXT NOT NULL,
  body TEXT NOT NULL,
  points INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL
)`;

/**
 * Rebuilds an empty format-1 file in format 2: the table without AUTOINCREMENT, smaller pages. It holds no
 * reading, so nothing can be lost; the table swap is one transaction, and VACUUM (which alone can change
 * the page size, and only outside WAL mode) is crash-safe with its rollback journal.
 */
function rebuildEmpty(db: Connection): void {
  try {
    db.pragma('journal_mode = DELETE');
    db.exec(`BEGIN; DROP TABLE records; ${CREATE_RECORDS}; PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
    db.pragma(`page_size = ${PAGE_BYTES}`);
    db.exec('VACUUM');
  } catch {
    // No room for it (a full disk), or the like: the file works as it is, and the next open tries again.
    if (db.inTransaction) db.exec('ROLLBACK');
  }
}

export function describeSqliteError(error: unknown): string {
  const code = (error as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL') return 'the disk is full';
  if (code.startsWith('SQLITE_IOERR')) return `the disk reported an I/O error (${code})`;
  if (code === 'SQLITE_READONLY' || code === 'SQLITE_CANTOPEN') return `the file cannot be written (${code})`;
  return (error as Error).message;
}
