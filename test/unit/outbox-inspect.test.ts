// The outbox seen from outside the gateway (doctor): counts, ages, bytes and format of a real file, a
// journal left behind, a damaged file, and that looking creates and changes nothing.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inspectOutbox } from '../../src/outbox/inspect.js';
import { OutboxStore, type NewRecord } from '../../src/outbox/store.js';
import { SCHEMA_VERSION } from '../../src/outbox/store-file.js';
import { UplinkKind } from '../../src/upstream/gateway-api.js';

// inspectOutbox opens files by URI, which better-sqlite3 enables only if this is set before the first
// database of the process opens; the fixtures below open theirs first.
process.env.SQLITE_USE_URI = '1';

const NOW = Date.now();
const HOUR = 3_600_000;
let dir: string;
let path: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-outbox-inspect-'));
  path = join(dir, 'outbox.sqlite');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const record = (createdAt: number, bytes = 40): NewRecord => ({ kind: UplinkKind.telemetry, device: 'Boiler-7', type: 'thermostat', body: '{"t":21}', points: 1, createdAt, bytes });

/** A stopped gateway's outbox: the store closed, its lock and reserve files left as the gateway leaves them. */
function storeWith(records: NewRecord[]): void {
  const { store } = OutboxStore.open(path, 'normal');
  store.commit(records, []);
  store.close();
}

describe('inspectOutbox', () => {
  it('says a missing file is absent', () => {
    expect(inspectOutbox(path, { createdAfter: NOW })).toEqual({ state: 'absent' });
    expect(inspectOutbox(join(dir, 'no-dir', 'outbox.sqlite'), { createdAfter: NOW })).toEqual({ state: 'absent' });
  });

  it('counts the records, their bytes, the oldest and newest, and those stamped after a time', () => {
    storeWith([record(NOW - 3 * HOUR, 50), record(NOW - HOUR, 60), record(NOW + 2 * HOUR, 70)]);
    const seen = inspectOutbox(path, { createdAfter: NOW + 5 * 60_000 });
    expect(seen).toEqual({
      state: 'readable',
      path,
      records: 3,
      bytes: 180,
      fileBytes: statSync(path).size,
      oldestCreatedAt: NOW - 3 * HOUR,
      newestCreatedAt: NOW + 2 * HOUR,
      createdAfter: 1,
      formatVersion: SCHEMA_VERSION,
      leftoverJournal: false,
    });
  });

  it('reads an empty outbox as empty', () => {
    storeWith([]);
    expect(inspectOutbox(path, { createdAfter: NOW })).toMatchObject({ state: 'readable', records: 0, bytes: 0, oldestCreatedAt: undefined, createdAfter: 0 });
  });

  it('creates no file and changes none while it looks', () => {
    storeWith([record(NOW)]);
    const before = readdirSync(dir).sort();
    const modified = statSync(path).mtimeMs;
    inspectOutbox(path, { createdAfter: NOW });
    expect(readdirSync(dir).sort()).toEqual(before);
    expect(before).not.toContain('outbox.sqlite-wal');
    expect(statSync(path).mtimeMs).toBe(modified);
  });

  it('notices a journal a gateway left behind, counting its size but not its records', () => {
    storeWith([record(NOW)]);
    writeFileSync(`${path}-wal`, Buffer.alloc(4096));
    const seen = inspectOutbox(path, { createdAfter: NOW });
    expect(seen).toMatchObject({ state: 'readable', records: 1, leftoverJournal: true, fileBytes: statSync(path).size + 4096 });
    expect(existsSync(`${path}-shm`)).toBe(false);
  });

  it('reads the outbox of a running gateway, what its journal holds included', () => {
    const { store } = OutboxStore.open(path, 'normal');
    try {
      store.commit([record(NOW - HOUR), record(NOW)], []);
      expect(inspectOutbox(path, { createdAfter: NOW + 1 })).toMatchObject({ state: 'readable', records: 2, leftoverJournal: false, oldestCreatedAt: NOW - HOUR });
    } finally {
      store.close();
    }
  });

  it('tells a format-1 file by its version, or by its table when a crash left the version unset', () => {
    const db = new Database(path);
    db.exec('CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER, device TEXT, type TEXT, body TEXT, points INTEGER, bytes INTEGER, created_at INTEGER)');
    db.close();
    expect(inspectOutbox(path, { createdAfter: NOW })).toMatchObject({ state: 'readable', formatVersion: 1, records: 0 });
  });

  it('calls a file that is not an outbox damaged, with SQLite\'s reason', () => {
    writeFileSync(path, 'not a database at all; '.repeat(100));
    const garbage = inspectOutbox(path, { createdAfter: NOW });
    expect(garbage).toMatchObject({ state: 'unreadable', path, cause: 'damaged' });
    expect(garbage.state === 'unreadable' && (garbage.error as Error).message).toBe('file is not a database');

    rmSync(path);
    const other = new Database(path);
    other.exec('CREATE TABLE something_else (a)');
    other.close();
    const tableless = inspectOutbox(path, { createdAfter: NOW });
    expect(tableless.state === 'unreadable' && tableless.cause).toBe('damaged');
    expect(tableless.state === 'unreadable' && (tableless.error as Error).message).toBe('no such table: records');
  });
});
