// A look at an outbox file from outside the gateway (doctor): what it holds, how old, how big, in which
// format, and whether a gateway left its journal behind. It changes nothing: no lock, no WAL replay, no
// file created. A read-only SQLite connection to a WAL database would still create the -wal and -shm
// files (owned by root under sudo, which would lock the service out of its own outbox), so unless they
// exist already (the gateway runs) the file is opened "immutable", which creates nothing.
import { statSync, type Stats } from 'node:fs';
import Database from 'better-sqlite3';
import { formatVersion } from './store-file.js';

export type OutboxInspection =
  | { readonly state: 'absent' }
  | {
      readonly state: 'unreadable';
      readonly path: string;
      /** stat: the file cannot be looked at; open: SQLite cannot open it; busy: the gateway holds it; damaged: not an outbox. */
      readonly cause: 'stat' | 'open' | 'busy' | 'damaged';
      readonly error: unknown;
    }
  | {
      readonly state: 'readable';
      readonly path: string;
      readonly records: number;
      /** What the records count against outbox.maxBytes. */
      readonly bytes: number;
      /** The file and its journal on disk. */
      readonly fileBytes: number;
      readonly oldestCreatedAt: number | undefined;
      readonly newestCreatedAt: number | undefined;
      /** Records stamped after InspectOptions.createdAfter. */
      readonly createdAfter: number;
      readonly formatVersion: number;
      /** A journal without its index: left by a gateway that did not stop cleanly; what it holds is not counted. */
      readonly leftoverJournal: boolean;
    };

export interface InspectOptions {
  /** Count the records stamped after this time (a clock that went back leaves them "in the future"). */
  readonly createdAfter: number;
}

export function inspectOutbox(path: string, options: InspectOptions): OutboxInspection {
  let main: Stats;
  try {
    main = statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { state: 'absent' };
    return { state: 'unreadable', path, cause: 'stat', error };
  }
  const wal = sizeOf(`${path}-wal`);
  const live = wal !== undefined && sizeOf(`${path}-shm`) !== undefined;
  // better-sqlite3 reads this once, when its native part loads at the first database opened: in doctor's process, this one.
  process.env.SQLITE_USE_URI = '1';
  const uri = `file:${encodeURI(path).replace(/[?#]/g, encodeURIComponent)}?mode=ro${live ? '' : '&immutable=1'}`;
  let db;
  try {
    db = new Database(uri, { readonly: true, fileMustExist: true, timeout: 1000 });
  } catch (error) {
    return { state: 'unreadable', path, cause: 'open', error };
  }
  try {
    const row = db
      .prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b, min(created_at) AS oldest, max(created_at) AS newest, sum(created_at > ?) AS later FROM records')
      .get(options.createdAfter) as { n: number; b: number; oldest: number | null; newest: number | null; later: number | null };
    return {
      state: 'readable',
      path,
      records: row.n,
      bytes: row.b,
      fileBytes: main.size + (wal ?? 0),
      oldestCreatedAt: row.oldest ?? undefined,
      newestCreatedAt: row.newest ?? undefined,
      createdAfter: row.later ?? 0,
      formatVersion: formatVersion(db),
      leftoverJournal: !live && wal !== undefined,
    };
  } catch (error) {
    const busy = (error as { code?: string }).code === 'SQLITE_BUSY';
    return { state: 'unreadable', path, cause: busy ? 'busy' : 'damaged', error };
  } finally {
    db.close();
  }
}

function sizeOf(file: string): number | undefined {
  try {
    return statSync(file).size;
  } catch {
    return undefined;
  }
}
