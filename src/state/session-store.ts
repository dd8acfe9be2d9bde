// The devices' sessions on disk: Observe relations and the RPCs waiting for them, so a restart, a crash or a
// power cut leaves no device deaf and loses no RPC ThingsBoard handed over. One SQLite file in state.dir
// (atomic commits, a damaged file set aside); written when a relation starts, moves or ends and when an RPC
// arrives or is settled, never per notification. Changes are grouped (COMMIT_DELAY_MS after a quiet spell,
// COMMIT_SPACING_MS between commits), so a registration storm costs one commit per group, and an RPC the
// device acknowledges within that time never reaches the disk at all.
import Database, { type Database as Connection, type Statement } from 'better-sqlite3';
import type { Logger } from 'pino';
import type { JournalEntry, ObservationJournal, SavedObservation } from '../coap/observe-journal.js';
import { MAX_URI_BYTES } from '../coap/request.js';
import type { PeerRecord } from '../coap/transport.js';
import { encodeJson } from '../json-safety.js';
import { LogOncePer } from '../log.js';
import type { JsonValue, PeerCredential, RpcCall } from '../model.js';
import { isUnreadableDatabase, moveAside } from './sqlite-file.js';

/** 1: observations, rpcs and meta tables; 2: mqtt_sessions. */
const SCHEMA_VERSION = 2;
/** Rows are small (~150 bytes): a commit rewriting one 1 KiB page writes one 4 KiB block of the card, not two. */
const PAGE_BYTES = 1024;
/** How long changes gather before a commit after a quiet spell. */
export const COMMIT_DELAY_MS = 50;
/**
 * Commits are at least this far apart: a registration storm after a power cut, a fleet re-registering
 * every few seconds, or a device churning registrations with its valid token cost the card at most one
 * small commit a second (a few KiB), not twenty.
 */
export const COMMIT_SPACING_MS = 1000;
/** After a failed commit (a full disk), how long until the next try; nothing is dropped meanwhile. */
const RETRY_DELAY_MS = 10_000;

/** A queued RPC as written down: its place in line and its absolute expiry carry over a restart. */
export interface SavedRpc {
  readonly device: string;
  readonly sequence: number;
  readonly call: RpcCall;
  readonly expiresAt: number;
}

/** A persistent MQTT session as written down: its device and client id, and what it subscribed to. */
export interface SavedMqttSession {
  readonly key: string;
  readonly subscriptions: ReadonlyArray<readonly [filter: string, qos: 0 | 1]>;
}

export interface MqttSessionJournal {
  add(saved: SavedMqttSession): JournalEntry;
  update(entry: JournalEntry, saved: SavedMqttSession): void;
  remove(entry: JournalEntry): void;
}

type Table = 'observations' | 'rpcs' | 'mqtt_sessions';
type Saved = SavedObservation | SavedRpc | SavedMqttSession;

/** The journal's handle on one written-down row. */
class Entry<Row> implements JournalEntry {
  /** Whether the row exists on disk. */
  onDisk = false;
  /** What the next commit writes: a row, null to delete it, undefined when the disk is up to date. */
  pending: Row | null | undefined;
  /** Once removed, an entry stays removed: a late update must not write the row back. */
  removed = false;

  constructor(
    readonly table: Table,
    readonly id: number,
  ) {}

  /** A row an earlier run wrote. */
  static written<Row>(table: Entry<Row>['table'], id: number): Entry<Row> {
    const entry = new Entry<Row>(table, id);
    entry.onDisk = true;
    return entry;
  }

  get kept(): boolean {
    return this.onDisk && this.pending === undefined;
  }
}

export interface RpcJournal {
  add(saved: SavedRpc): JournalEntry;
  remove(entry: JournalEntry): void;
}

export interface RestoredSessions {
  readonly observations: ReadonlyArray<{ readonly entry: JournalEntry; readonly saved: SavedObservation }>;
  readonly rpcs: ReadonlyArray<{ readonly entry: JournalEntry; readonly saved: SavedRpc }>;
  readonly mqttSessions: ReadonlyArray<{ readonly entry: JournalEntry; readonly saved: SavedMqttSession }>;
  /** Rows that could not be read back (and were deleted). */
  readonly unreadable: number;
  /** Relations beyond coap.maxObservations (lowered since they were written), oldest first (and deleted). */
  readonly overLimit: number;
  /** The highest RPC sequence number the file holds: new RPCs are numbered after it. */
  readonly lastRpcSequence: number;
}

export interface SessionStoreStats {
  readonly observations: number;
  readonly rpcs: number;
  readonly mqttSessions: number;
  readonly commits: number;
  readonly failedCommits: number;
}

export type OpenedSessionStore =
  | { readonly status: 'open'; readonly store: SessionStore; readonly movedAside: string | undefined }
  /** Written by a newer version, or unusable: the gateway runs without keeping sessions, and says why. */
  | { readonly status: 'unusable'; readonly reason: string };

export class SessionStore implements ObservationJournal, RpcJournal, MqttSessionJournal {
  readonly generation: number;
  private readonly dirty = new Set<Entry<Saved>>();
  private nextObservationId: number;
  private nextMqttSessionId: number;
  private timer: NodeJS.Timeout | undefined;
  private readonly warnings = new LogOncePer(10 * 60_000);
  private readonly insertObservation: Statement;
  private readonly insertRpc: Statement;
  private readonly insertMqttSession: Statement;
  private readonly deletes: Readonly<Record<Table, Statement<[number]>>>;
  private readonly commitTx: (entries: ReadonlyArray<Entry<Saved>>) => void;
  private counts = { observations: 0, rpcs: 0, mqttSessions: 0, commits: 0, failedCommits: 0 };
  private lastCommitAt = 0;

  private constructor(
    private readonly db: Connection,
    private readonly log: Logger,
  ) {
    const meta = db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'generation'").get();
    this.generation = ((meta?.value ?? 0) + 1) & 0x7fff_ffff;
    // Before any relation is restored: a crash right after still counts this start.
    db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)").run(this.generation);
    const nextId = (table: Table): number => ((db.prepare(`SELECT max(id) AS id FROM ${table}`).get() as { id: number | null }).id ?? 0) + 1;
    this.nextObservationId = nextId('observations');
    this.nextMqttSessionId = nextId('mqtt_sessions');
    this.insertObservation = db.prepare(
      'INSERT OR REPLACE INTO observations (id, owner, transport, address, port, credential, token, confirmable, uri_path, uri_query, szx, sequence, generation) ' +
        'VALUES (@id, @owner, @transport, @address, @port, @credential, @token, @confirmable, @uriPath, @uriQuery, @szx, @sequence, @generation)',
    );
    this.insertRpc = db.prepare('INSERT OR REPLACE INTO rpcs (id, device, call, expires_at) VALUES (@id, @device, @call, @expiresAt)');
    this.insertMqttSession = db.prepare('INSERT OR REPLACE INTO mqtt_sessions (id, key, subscriptions) VALUES (@id, @key, @subscriptions)');
    const remove = (table: Table): Statement<[number]> => db.prepare(`DELETE FROM ${table} WHERE id = ?`);
    this.deletes = { observations: remove('observations'), rpcs: remove('rpcs'), mqtt_sessions: remove('mqtt_sessions') };
    this.commitTx = db.transaction((entries: ReadonlyArray<Entry<Saved>>) => {
      for (const entry of entries) this.write(entry);
    });
  }

  /**
   * Opens (or creates) the store at `path`. A file SQLite cannot read is moved aside, never deleted; one
   * written by a newer version is left alone and the gateway keeps no sessions this run.
   */
  static open(path: string, log: Logger): OpenedSessionStore {
    try {
      return { status: 'open', store: new SessionStore(connect(path), log), movedAside: undefined };
    } catch (error) {
      if (error instanceof NewerFormatError) return { status: 'unusable', reason: error.message };
      if (!isUnreadableDatabase(error, path)) return { status: 'unusable', reason: `cannot open ${path}: ${(error as Error).message}` };
      try {
        const aside = moveAside(path);
        return { status: 'open', store: new SessionStore(connect(path), log), movedAside: aside };
      } catch (again) {
        return { status: 'unusable', reason: `cannot set aside the unreadable ${path}: ${(again as Error).message}` };
      }
    }
  }

  /** Everything an earlier run left, oldest first; rows that cannot be read back are deleted and counted. */
  restore(maxObservations: number): RestoredSessions {
    const newest = this.db.prepare('SELECT * FROM observations ORDER BY id DESC LIMIT ?').all(maxObservations) as ObservationRow[];
    const observations = this.readBack('observations', newest.reverse(), readObservation);
    // Beyond coap.maxObservations (lowered since): the oldest go.
    const beyond = this.db.prepare('SELECT id FROM observations WHERE id < ?').pluck().all(newest[0]?.id ?? 0) as number[];
    for (const id of beyond) this.remove(Entry.written('observations', id));
    const rpcRows = this.db.prepare('SELECT * FROM rpcs ORDER BY id').all() as RpcRow[];
    const rpcs = this.readBack('rpcs', rpcRows, readRpc);
    const mqttSessions = this.readBack('mqtt_sessions', this.db.prepare('SELECT * FROM mqtt_sessions ORDER BY id').all() as MqttSessionRow[], readMqttSession);
    this.counts.observations = observations.kept.length;
    this.counts.rpcs = rpcs.kept.length;
    this.counts.mqttSessions = mqttSessions.kept.length;
    return {
      observations: observations.kept,
      rpcs: rpcs.kept,
      mqttSessions: mqttSessions.kept,
      unreadable: observations.unreadable + rpcs.unreadable + mqttSessions.unreadable,
      overLimit: beyond.length,
      // Unreadable rows count too: their numbers are taken until their deletion is committed.
      lastRpcSequence: rpcRows.at(-1)?.id ?? 0,
    };
  }

  /** Rows as written, each with its entry; a row that cannot be read back is deleted. */
  private readBack<Row extends { id: number }, Saved>(
    table: Entry<unknown>['table'],
    rows: readonly Row[],
    read: (row: Row) => Saved | undefined,
  ): { kept: Array<{ entry: JournalEntry; saved: Saved }>; unreadable: number } {
    const kept: Array<{ entry: JournalEntry; saved: Saved }> = [];
    let unreadable = 0;
    for (const row of rows) {
      const saved = read(row);
      const entry = Entry.written(table, row.id);
      if (saved !== undefined) kept.push({ entry, saved });
      else {
        unreadable++;
        this.remove(entry);
      }
    }
    return { kept, unreadable };
  }

  add(saved: SavedObservation): JournalEntry;
  add(saved: SavedRpc): JournalEntry;
  add(saved: SavedMqttSession): JournalEntry;
  add(saved: Saved): JournalEntry {
    if ('subscriptions' in saved) {
      const entry = new Entry<SavedMqttSession>('mqtt_sessions', this.nextMqttSessionId++);
      this.counts.mqttSessions++;
      this.change(entry, saved);
      return entry;
    }
    if ('call' in saved) {
      const entry = new Entry<SavedRpc>('rpcs', saved.sequence);
      this.counts.rpcs++;
      this.change(entry, saved);
      return entry;
    }
    const entry = new Entry<SavedObservation>('observations', this.nextObservationId++);
    this.counts.observations++;
    this.change(entry, saved);
    return entry;
  }

  update(entry: JournalEntry, saved: SavedObservation | SavedMqttSession): void {
    const own = entry as Entry<Saved>;
    if (own.removed) return;
    this.change(own, saved);
  }

  remove(entry: JournalEntry): void {
    const own = entry as Entry<Saved>;
    if (own.removed) return;
    own.removed = true;
    if (own.table === 'observations') this.counts.observations--;
    else if (own.table === 'rpcs') this.counts.rpcs--;
    else this.counts.mqttSessions--;
    if (!own.onDisk) {
      // Never written: nothing to do on disk (an RPC acknowledged before the commit, a short relation).
      own.pending = null;
      this.dirty.delete(own);
      return;
    }
    this.change(own, null);
  }

  stats(): SessionStoreStats {
    return { ...this.counts };
  }

  /** Writes what waits now, synchronously (a clean stop); false when the disk refused it. */
  flush(): boolean {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dirty.size === 0) return true;
    const entries = [...this.dirty];
    try {
      this.commitTx(entries);
    } catch (error) {
      this.counts.failedCommits++;
      if (this.warnings.first('commit')) {
        this.log.warn(
          { reason: (error as Error).message, waiting: entries.length },
          'cannot write the device sessions (Observe relations, queued RPCs) to state.dir; they are kept in memory and written when the disk allows. Until then a crash loses them, and a stop tells their observers to register again',
        );
      }
      this.timer = setTimeout(() => this.flush(), RETRY_DELAY_MS);
      this.timer.unref();
      return false;
    }
    this.counts.commits++;
    this.lastCommitAt = Date.now();
    for (const entry of entries) {
      entry.onDisk = entry.pending !== null;
      entry.pending = undefined;
    }
    this.dirty.clear();
    return true;
  }

  /** Writes what waits, checkpoints and closes; the next start finds every relation that was kept. */
  close(): void {
    if (!this.db.open) return;
    this.flush();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      // A full disk can refuse it; SQLite replays the WAL at the next open.
    }
    this.db.close();
  }

  private change(entry: Entry<Saved>, row: Saved | null): void {
    entry.pending = row as never;
    this.dirty.add(entry);
    if (!this.timer) {
      const delay = Math.max(COMMIT_DELAY_MS, this.lastCommitAt + COMMIT_SPACING_MS - Date.now());
      this.timer = setTimeout(() => this.flush(), delay);
      this.timer.unref();
    }
  }

  private write(entry: Entry<Saved>): void {
    const row = entry.pending;
    if (row === null) {
      this.deletes[entry.table].run(entry.id);
      return;
    }
    if (row === undefined) return;
    if (entry.table === 'mqtt_sessions') {
      const session = row as SavedMqttSession;
      this.insertMqttSession.run({ id: entry.id, key: session.key, subscriptions: JSON.stringify(session.subscriptions) });
      return;
    }
    if (entry.table === 'rpcs') {
      const rpc = row as SavedRpc;
      this.insertRpc.run({ id: entry.id, device: rpc.device, call: encodeJson(rpc.call as unknown as JsonValue) ?? 'null', expiresAt: rpc.expiresAt });
      return;
    }
    const saved = row as SavedObservation;
    this.insertObservation.run({
      id: entry.id,
      owner: saved.owner,
      transport: saved.peer.transport,
      address: saved.peer.address,
      port: saved.peer.port,
      credential: saved.peer.credential ? JSON.stringify(saved.peer.credential) : null,
      token: saved.token,
      confirmable: saved.confirmable ? 1 : 0,
      uriPath: JSON.stringify(saved.uriPath),
      uriQuery: JSON.stringify(saved.uriQuery),
      szx: saved.szx,
      sequence: saved.sequence,
      generation: saved.generation,
    });
  }
}

class NewerFormatError extends Error {}

interface ObservationRow {
  id: number;
  owner: unknown;
  transport: unknown;
  address: unknown;
  port: unknown;
  credential: unknown;
  token: unknown;
  confirmable: unknown;
  uri_path: unknown;
  uri_query: unknown;
  szx: unknown;
  sequence: unknown;
  generation: unknown;
}

interface MqttSessionRow {
  id: number;
  key: unknown;
  subscriptions: unknown;
}

/** Filters a device may subscribe to are short; a row beyond this is not one the gateway wrote. */
const MAX_SUBSCRIPTIONS_TEXT = 4096;

function readMqttSession(row: MqttSessionRow): SavedMqttSession | undefined {
  if (typeof row.key !== 'string' || typeof row.subscriptions !== 'string' || row.subscriptions.length > MAX_SUBSCRIPTIONS_TEXT) return undefined;
  try {
    const value: unknown = JSON.parse(row.subscriptions);
    if (!Array.isArray(value)) return undefined;
    const subscriptions: Array<readonly [string, 0 | 1]> = [];
    for (const each of value) {
      if (!Array.isArray(each) || typeof each[0] !== 'string' || (each[1] !== 0 && each[1] !== 1)) return undefined;
      subscriptions.push([each[0], each[1]]);
    }
    return { key: row.key, subscriptions };
  } catch {
    return undefined;
  }
}

interface RpcRow {
  id: number;
  device: unknown;
  call: unknown;
  expires_at: unknown;
}

const isInteger = (value: unknown, min: number, max: number): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;

const stringList = (text: unknown): string[] | undefined => {
  // No registration the gateway accepted had a longer URI: a row beyond it is not one it wrote.
  if (typeof text !== 'string' || text.length > 2 * MAX_URI_BYTES) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return Array.isArray(value) && value.every((each) => typeof each === 'string') ? value : undefined;
  } catch {
    return undefined;
  }
};

/** A row as written by write(), or undefined for anything else (a hand edit, a bit flipped on the card). */
function readObservation(row: ObservationRow): SavedObservation | undefined {
  const uriPath = stringList(row.uri_path);
  const uriQuery = stringList(row.uri_query);
  if (
    typeof row.owner !== 'string' ||
    typeof row.transport !== 'string' ||
    typeof row.address !== 'string' ||
    !isInteger(row.port, 1, 65_535) ||
    !Buffer.isBuffer(row.token) ||
    row.token.length > 8 ||
    !isInteger(row.confirmable, 0, 1) ||
    !isInteger(row.szx, 0, 6) ||
    !isInteger(row.sequence, 0, 0xff_ffff) ||
    !isInteger(row.generation, 0, 0x7fff_ffff) ||
    !uriPath ||
    !uriQuery
  ) {
    return undefined;
  }
  let credential: PeerCredential | undefined;
  if (row.credential !== null) {
    credential = readCredential(row.credential);
    if (!credential) return undefined;
  }
  const peer: PeerRecord = { transport: row.transport, address: row.address, port: row.port, ...(credential ? { credential } : {}) };
  return {
    peer,
    owner: row.owner,
    token: row.token,
    confirmable: row.confirmable === 1,
    uriPath,
    uriQuery,
    szx: row.szx,
    sequence: row.sequence,
    generation: row.generation,
  };
}

function readCredential(text: unknown): PeerCredential | undefined {
  if (typeof text !== 'string') return undefined;
  try {
    const value = JSON.parse(text) as Record<string, unknown>;
    if (value['kind'] === 'psk' && typeof value['identity'] === 'string') return { kind: 'psk', identity: value['identity'] };
    if (value['kind'] === 'certificate' && typeof value['fingerprint256'] === 'string' && typeof value['subject'] === 'string') {
      const commonName = value['commonName'];
      return {
        kind: 'certificate',
        fingerprint256: value['fingerprint256'],
        commonName: typeof commonName === 'string' ? commonName : undefined,
        subject: value['subject'],
      };
    }
  } catch {
    // Falls through: unreadable.
  }
  return undefined;
}

function readRpc(row: RpcRow): SavedRpc | undefined {
  if (typeof row.device !== 'string' || !isInteger(row.expires_at, 0, Number.MAX_SAFE_INTEGER) || typeof row.call !== 'string') return undefined;
  try {
    const call = JSON.parse(row.call) as Record<string, unknown>;
    if (!isInteger(call['id'], 0, Number.MAX_SAFE_INTEGER) || typeof call['method'] !== 'string' || !('params' in call)) return undefined;
    return { device: row.device, sequence: row.id, call: { id: call['id'], method: call['method'], params: call['params'] as JsonValue }, expiresAt: row.expires_at };
  } catch {
    return undefined;
  }
}

const CREATE = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE observations (
  id INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  transport TEXT NOT NULL,
  address TEXT NOT NULL,
  port INTEGER NOT NULL,
  credential TEXT,
  token BLOB NOT NULL,
  confirmable INTEGER NOT NULL,
  uri_path TEXT NOT NULL,
  uri_query TEXT NOT NULL,
  szx INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  generation INTEGER NOT NULL
);
CREATE TABLE rpcs (id INTEGER PRIMARY KEY, device TEXT NOT NULL, call TEXT NOT NULL, expires_at INTEGER NOT NULL);
`;
/** Added in format 2: the persistent MQTT sessions' subscriptions. */
const CREATE_MQTT_SESSIONS = 'CREATE TABLE mqtt_sessions (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, subscriptions TEXT NOT NULL);';

function connect(path: string): Connection {
  const db = new Database(path, { timeout: 5000 });
  try {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new NewerFormatError(
        `${path} was written by a newer coap2mqtt (format ${version}, this one reads ${SCHEMA_VERSION}); it is left as it is, and this run keeps no sessions across restarts`,
      );
    }
    if (version === 0) db.pragma(`page_size = ${PAGE_BYTES}`);
    db.pragma('journal_mode = WAL');
    // Commits are rare (a registration, an RPC not acknowledged at once) and small: each is synced, so a
    // relation the device was told about survives a power cut too.
    db.pragma('synchronous = FULL');
    db.pragma('journal_size_limit = 1048576');
    if (version === 0) db.exec(`BEGIN; ${CREATE}; ${CREATE_MQTT_SESSIONS}; PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
    // A file of format 1 keeps its rows and gains the table.
    if (version === 1) db.exec(`BEGIN; ${CREATE_MQTT_SESSIONS}; PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
    // A damaged file is found now, where it can be set aside, not mid-restore (a few MB at most: ~10 ms).
    const problems = db.pragma('quick_check(1)', { simple: true }) as string;
    if (problems !== 'ok') throw Object.assign(new Error(`damaged: ${problems}`), { code: 'SQLITE_CORRUPT' });
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
