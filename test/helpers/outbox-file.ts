// A real outbox file in a fresh directory per test, as a stopped gateway leaves it, for tests that look at
// one from outside (the inspection, doctor).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { OutboxStore, type NewRecord } from '../../src/outbox/store.js';
import { UplinkKind } from '../../src/upstream/gateway-api.js';

// The inspection opens files by URI, which better-sqlite3 enables only if this is set before the first
// database of the process opens; tests make their files first.
process.env.SQLITE_USE_URI = '1';

export const outboxRecord = (createdAt: number, bytes = 100): NewRecord => ({
  kind: UplinkKind.telemetry,
  device: 'Boiler-7',
  type: 'thermostat',
  body: '{"t":21}',
  points: 1,
  createdAt,
  bytes,
});

/** This test's directory and its outbox.sqlite: new for each test, removed after it. */
export function useOutboxDir(prefix: string): { readonly dir: string; readonly path: string } {
  const current = { dir: '', path: '' };
  beforeEach(() => {
    current.dir = mkdtempSync(join(tmpdir(), prefix));
    current.path = join(current.dir, 'outbox.sqlite');
  });
  afterEach(() => rmSync(current.dir, { recursive: true, force: true }));
  return current;
}

/** The outbox a gateway that stored `records` and stopped leaves behind. */
export function writeOutbox(path: string, records: readonly NewRecord[]): void {
  const { store } = OutboxStore.open(path, 'normal');
  store.commit(records, []);
  store.close();
}
