// The outbox seen from outside the gateway (doctor): counts, ages, bytes and format of a real file, a
// journal left behind, a damaged file, and that looking creates and changes nothing.
import { existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { inspectOutbox } from '../../src/outbox/inspect.js';
import { OutboxStore, type NewRecord } from '../../src/outbox/store.js';
import { SCHEMA_VERSION } from '../../src/outbox/store-file.js';
import { outboxRecord as record, useOutboxDir, writeOutbox } from '../helpers/outbox-file.js';

const NOW = Date.now();
const HOUR = 3_600_000;
const outbox = useOutboxDir('coap2mqtt-outbox-inspect-');

const storeWith = (records: NewRecord[]): void => writeOutbox(outbox.path, records);

describe('inspectOutbox', () => {
  it('says a missing file is absent', () => {
    expect(inspectOutbox(outbox.path, { createdAfter: NOW })).toEqual({ state: 'absent' });
    expect(inspectOutbox(join(outbox.dir, 'no-dir', 'outbox.sqlite'), { createdAfter: NOW })).toEqual({ state: 'absent' });
  });

  it('counts the records, their bytes, the oldest and newest, and those stamped after a time', () => {
    storeWith([record(NOW - 3 * HOUR, 50), record(NOW - HOUR, 60), record(NOW + 2 * HOUR, 70)]);
    const seen = inspectOutbox(outbox.path, { createdAfter: NOW + 5 * 60_000 });
    expect(seen).toEqual({
      state: 'readable',
      path: outbox.path,
      records: 3,
      bytes: 180,
      fileBytes: statSync(outbox.path).size,
      oldestCreatedAt: NOW - 3 * HOUR,
      newestCreatedAt: NOW + 2 * HOUR,
      createdAfter: 1,
      formatVersion: SCHEMA_VERSION,
      leftoverJournal: false,
    });
  });

  it('reads an empty outbox as empty', () => {
    storeWith([]);
    expect(inspectOutbox(outbox.path, { createdAfter: NOW })).toMatchObject({ state: 'readable', records: 0, bytes: 0, oldestCreatedAt: undefined, createdAfter: 0 });
  });

  it('creates no file and changes none while it looks', () => {
    storeWith([record(NOW)]);
    const before = readdirSync(outbox.dir).sort();
    const modified = statSync(outbox.path).mtimeMs;
    inspectOutbox(outbox.path, { createdAfter: NOW });
    expect(readdirSync(outbox.dir).sort()).toEqual(before);
    expect(before).not.toContain('outbox.sqlite-wal');
    expect(statSync(outbox.path).mtimeMs).toBe(modified);
  });

  it('notices a journal a gateway left behind, counting its size but not its records', () => {
    storeWith([record(NOW)]);
    writeFileSync(`${outbox.path}-wal`, Buffer.alloc(4096));
    const seen = inspectOutbox(outbox.path, { createdAfter: NOW });
    expect(seen).toMatchObject({ state: 'readable', records: 1, leftoverJournal: true, fileBytes: statSync(outbox.path).size + 4096 });
    expect(existsSync(`${outbox.path}-shm`)).toBe(false);
  });

  it('reads the outbox of a running gateway, what its journal holds included', () => {
    const { store } = OutboxStore.open(outbox.path, 'normal');
    try {
      store.commit([record(NOW - HOUR), record(NOW)], []);
      expect(inspectOutbox(outbox.path, { createdAfter: NOW + 1 })).toMatchObject({ state: 'readable', records: 2, leftoverJournal: false, oldestCreatedAt: NOW - HOUR });
    } finally {
      store.close();
    }
  });

  it('tells a format-1 file by its version, or by its table when a crash left the version unset', () => {
    const db = new Database(outbox.path);
    db.exec('CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER, device TEXT, type TEXT, body TEXT, points INTEGER, bytes INTEGER, created_at INTEGER)');
    db.close();
    expect(inspectOutbox(outbox.path, { createdAfter: NOW })).toMatchObject({ state: 'readable', formatVersion: 1, records: 0 });
  });

  it('calls a file that is not an outbox damaged, with SQLite\'s reason', () => {
    writeFileSync(outbox.path, 'not a database at all; '.repeat(100));
    const garbage = inspectOutbox(outbox.path, { createdAfter: NOW });
    expect(garbage).toMatchObject({ state: 'unreadable', path: outbox.path, cause: 'damaged' });
    expect(garbage.state === 'unreadable' && (garbage.error as Error).message).toBe('file is not a database');

    rmSync(outbox.path);
    const other = new Database(outbox.path);
    other.exec('CREATE TABLE something_else (a)');
    other.close();
    const tableless = inspectOutbox(outbox.path, { createdAfter: NOW });
    expect(tableless.state === 'unreadable' && tableless.cause).toBe('damaged');
    expect(tableless.state === 'unreadable' && (tableless.error as Error).message).toBe('no such table: records');
  });
});
