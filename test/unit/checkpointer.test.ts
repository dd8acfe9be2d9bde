// The outbox's checkpointer worker against a real SQLite file written by another connection, as the
// store does: the writer never checkpoints, the worker does, and closing it leaves the writer last.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Checkpointer, type CheckpointOutcome } from '../../src/outbox/checkpointer.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-checkpointer-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('Checkpointer', () => {
  it('copies the WAL into the file on its own thread while the writer goes on, and closes first', async () => {
    const path = join(dir, 'outbox.sqlite');
    const writer = new Database(path);
    writer.pragma('journal_mode = WAL');
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE t (v TEXT)');
    const insert = writer.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < 200; i++) insert.run('x'.repeat(500));

    const checkpointer = new Checkpointer(path);
    const outcome = await new Promise<CheckpointOutcome>((resolve) => {
      checkpointer.checkpoint(resolve);
      expect(checkpointer.busy).toBe(true);
      insert.run('written while the checkpoint runs');
    });
    expect(outcome).toMatchObject({ busy: false });
    expect((outcome as { walFrames: number }).walFrames).toBeGreaterThan(20);
    expect((outcome as { checkpointed: number }).checkpointed).toBeGreaterThan(20);
    expect(checkpointer.busy).toBe(false);

    checkpointer.close();
    writer.close(); // now the last connection: the WAL is folded in and removed
    expect(existsSync(`${path}-wal`)).toBe(false);
    const reader = new Database(path, { readonly: true });
    expect(reader.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 201 });
    reader.close();
  });

  it('stops its worker when idle and starts one again for the next checkpoint', async () => {
    const path = join(dir, 'outbox.sqlite');
    const writer = new Database(path);
    writer.pragma('journal_mode = WAL');
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE t (v TEXT)');
    const checkpointer = new Checkpointer(path, 50);
    expect(checkpointer.running).toBe(false); // nothing started until there is work
    for (const round of [1, 2]) {
      writer.prepare('INSERT INTO t (v) VALUES (?)').run(`round ${round}`);
      const outcome = await new Promise<CheckpointOutcome>((resolve) => checkpointer.checkpoint(resolve));
      expect(outcome).toMatchObject({ busy: false });
      expect(checkpointer.running).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(checkpointer.running).toBe(false);
    }
    checkpointer.close();
    writer.close();
    expect(existsSync(`${path}-wal`)).toBe(false);
  });
});
