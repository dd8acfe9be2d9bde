// The outbox's logic against a real SQLite file and a stand-in for the MQTT connection that the test
// acknowledges or fails publish by publish. The real broker paths are in test/e2e (upstream, durability).
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/log.js';
import type { Device, UplinkOutcome } from '../../src/model.js';
import { Outbox, type OutboxOptions } from '../../src/outbox/outbox.js';
import { OutboxStore, StoreOpenError, StoreUnavailableError } from '../../src/outbox/store.js';
import { UplinkKind, telemetryItems } from '../../src/upstream/gateway-api.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';

const BOILER: Device = { name: 'Boiler-7', type: 'thermostat' };
const PUMP: Device = { name: 'Pump-2', type: 'pump' };
const reading = (device: Device, n: number) => telemetryItems(device.name, [{ ts: 1_700_000_000_000 + n, values: { n } }], 65536);
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

let dir: string;
let lines: Array<Record<string, unknown>>;
const log = () =>
  createLogger('debug', {
    write(line: string) {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    },
  });
const opened: Array<{ close(): void }> = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-outbox-unit-'));
  lines = [];
});
afterEach(() => {
  for (const store of opened.splice(0)) store.close();
  rmSync(dir, { recursive: true, force: true });
  vi.restoreAllMocks();
  vi.useRealTimers();
});

/** Timers and performance.now() under the test's control; setImmediate (tick) stays real. */
const controlTime = () => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
/** The outbox's least time between two group commits (COMMIT_SPACING_MS). */
const COMMIT_SPACING_MS = 20;

function openStore(): OutboxStore {
  const { store } = OutboxStore.open(join(dir, 'outbox.sqlite'), 'full');
  opened.push(store);
  return store;
}

function build(options: Partial<OutboxOptions> = {}, store = openStore()) {
  const upstream = new FakeUpstream();
  const announced: string[] = [];
  const outbox = new Outbox(
    store,
    upstream,
    (device) => announced.push(device.name),
    { mode: 'always', spillAfterMs: 2000, maxBytes: 1 << 30, maxAgeHours: 0, minFreeDiskBytes: 0, shutdownFlushMs: 200, dir, ...options },
    log(),
  );
  return { outbox, upstream, store, announced };
}

describe('accepting', () => {
  it('answers a device only once its rows are on disk, committing what arrives during a sync when it is back', async () => {
    controlTime();
    const store = openStore();
    expect(store.syncsSeparately).toBe(true);
    const syncs: Array<(error: Error | null) => void> = [];
    vi.spyOn(store, 'sync').mockImplementation((done) => void syncs.push(done));
    const { outbox } = build({}, store);
    let first: UplinkOutcome | undefined;
    let second: UplinkOutcome | undefined;
    void outbox.send(BOILER, reading(BOILER, 1)).then((outcome) => (first = outcome));
    await tick();
    expect(store.records).toBe(1); // committed…
    expect(syncs).toHaveLength(1);
    expect(first).toBeUndefined(); // …but not answered before the sync
    void outbox.send(BOILER, reading(BOILER, 2)).then((outcome) => (second = outcome));
    await tick();
    // Arrived while the first sync runs: it could only be answered after the next one, so it is not
    // even committed before the first is back (fewer, larger commits).
    expect(syncs).toHaveLength(1);
    expect(store.records).toBe(1);
    syncs[0]!(null);
    await tick();
    expect(first).toEqual({ status: 'accepted' });
    await vi.advanceTimersByTimeAsync(COMMIT_SPACING_MS);
    expect(store.records).toBe(2);
    expect(second).toBeUndefined();
    expect(syncs).toHaveLength(2);
    syncs[1]!(new StoreUnavailableError('the disk reported an error while syncing (EIO)', 'EIO'));
    await tick();
    expect(second).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/EIO/) });
    expect(outbox.stats().accepted).toBe(1);
  });

  it('answers only once the rows are committed, all of one turn in one transaction', async () => {
    const { outbox, store } = build();
    const commit = vi.spyOn(store, 'commit');
    const answers = Array.from({ length: 50 }, (_, n) => outbox.send(n % 2 ? BOILER : PUMP, reading(BOILER, n)));
    expect(store.records).toBe(0);
    expect((await Promise.all(answers)).every((a) => a.status === 'accepted')).toBe(true);
    expect(commit).toHaveBeenCalledTimes(1);
    expect(store.records).toBe(50);
    expect(outbox.stats()).toMatchObject({ records: 50, accepted: 50, delivered: 0 });
  });

  it('lets readings that come within the commit spacing share the next commit, and commits at once after a pause', async () => {
    controlTime();
    const { outbox, store } = build();
    const commit = vi.spyOn(store, 'commit');
    const first = outbox.send(BOILER, reading(BOILER, 1));
    await tick();
    expect(commit).toHaveBeenCalledTimes(1); // nothing committed lately: no wait
    expect(await first).toEqual({ status: 'accepted' });
    // Three readings in three turns of the event loop, all within the spacing: one commit for them.
    const next = [];
    for (const n of [2, 3, 4]) {
      next.push(outbox.send(BOILER, reading(BOILER, n)));
      await tick();
    }
    expect(commit).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(COMMIT_SPACING_MS);
    expect(commit).toHaveBeenCalledTimes(2);
    expect(commit.mock.calls[1]![0]).toHaveLength(3);
    expect((await Promise.all(next)).every((outcome) => outcome.status === 'accepted')).toBe(true);
    vi.advanceTimersByTime(COMMIT_SPACING_MS);
    void outbox.send(BOILER, reading(BOILER, 5));
    await tick();
    expect(commit).toHaveBeenCalledTimes(3);
    await outbox.stop();
    expect(store.records).toBe(5);
  });

  it('does not wait out the spacing once enough readings for a well-filled commit are waiting', async () => {
    controlTime();
    const { outbox, store } = build();
    const commit = vi.spyOn(store, 'commit');
    await outbox.send(BOILER, reading(BOILER, 0));
    expect(commit).toHaveBeenCalledTimes(1);
    // Devices that each wait for their answer before sending again: 16 in one turn, within the spacing.
    const answers = Array.from({ length: 16 }, (_, n) => outbox.send(BOILER, reading(BOILER, n + 1)));
    await tick();
    expect(commit).toHaveBeenCalledTimes(2);
    expect(commit.mock.calls[1]![0]).toHaveLength(16);
    expect((await Promise.all(answers)).every((outcome) => outcome.status === 'accepted')).toBe(true);
  });

  it('commits the deletion of delivered rows without a sync of its own', async () => {
    controlTime();
    const { outbox, upstream, store } = build();
    const sync = vi.spyOn(store, 'sync');
    await outbox.send(BOILER, reading(BOILER, 1));
    expect(sync).toHaveBeenCalledTimes(1);
    upstream.becomeReady();
    upstream.sent[0]!.ack();
    await tick();
    // Alone, the deletion waits a second (DELETE_DELAY_MS) for a commit of new rows to ride along with.
    await vi.advanceTimersByTimeAsync(1000);
    expect(store.records).toBe(0);
    expect(sync).toHaveBeenCalledTimes(1);
    await outbox.stop();
  });

  it('keeps what it accepted across a close and a new open', async () => {
    const first = build();
    await first.outbox.send(BOILER, reading(BOILER, 1));
    await first.outbox.stop();
    const again = build({}, openStore());
    again.outbox.start();
    again.upstream.becomeReady();
    expect(again.upstream.values()).toEqual({ 'Boiler-7': [{ n: 1 }] });
    expect(lines.some((line) => /readings from before/.test(String(line.msg)))).toBe(true);
  });

  it('answers 5.03 and keeps every stored row when the disk refuses a commit', async () => {
    const { outbox, store } = build();
    await outbox.send(BOILER, reading(BOILER, 1));
    const real = store.commit.bind(store);
    vi.spyOn(store, 'commit').mockImplementation((records, acknowledged) => {
      if (records.length > 0) throw new StoreUnavailableError('the disk is full', 'SQLITE_FULL');
      return real(records, acknowledged);
    });
    const refused = await outbox.send(BOILER, reading(BOILER, 2));
    expect(refused).toMatchObject({ status: 'unavailable', retryAfterSeconds: 30 });
    expect(refused.status === 'unavailable' && refused.reason).toMatch(/cannot store readings: the disk is full/);
    expect(store.records).toBe(1);
    expect(outbox.stats().rejected.storage).toBe(1);
    await outbox.send(BOILER, reading(BOILER, 3));
    expect(lines.filter((line) => line.level === 'error' && /cannot write/.test(String(line.msg)))).toHaveLength(1);
  });

  it('refuses new readings while the disk has less free space than the reserve', async () => {
    const { outbox } = build({ minFreeDiskBytes: Number.MAX_SAFE_INTEGER });
    outbox.start();
    const refused = await outbox.send(BOILER, reading(BOILER, 1));
    expect(refused.status === 'unavailable' && refused.reason).toMatch(/disk is nearly full/);
    expect(outbox.stats().rejected.lowDisk).toBe(1);
    await outbox.stop();
  });
});

describe('delivering', () => {
  it('waits until upstream is ready, then sends many devices per publish, announcing each first', async () => {
    const { outbox, upstream, announced } = build();
    outbox.start();
    for (let n = 1; n <= 4; n++) await outbox.send(n % 2 ? BOILER : PUMP, reading(BOILER, n));
    expect(upstream.sent).toHaveLength(0);
    upstream.becomeReady();
    expect(upstream.sent).toHaveLength(1);
    expect(upstream.sent[0]!.options).toEqual({ dataPoints: 4, untimed: true });
    expect(upstream.values()).toEqual({ 'Boiler-7': [{ n: 1 }, { n: 3 }], 'Pump-2': [{ n: 2 }, { n: 4 }] });
    expect(announced).toEqual(['Boiler-7', 'Pump-2', 'Boiler-7', 'Pump-2']);
    upstream.sent[0]!.ack();
    await tick();
    expect(outbox.stats()).toMatchObject({ delivered: 4, publishes: 1 });
    // Deletions wait for the next commit (or a second) rather than costing an fsync per PUBACK; stop commits them.
    await outbox.stop();
    expect(outbox.stats().records).toBe(0);
  });

  it('keeps at most inflightLimit publishes outstanding', async () => {
    const { outbox, upstream } = build();
    upstream.inflightLimit = 2;
    upstream.maxMessageBytes = 80; // one reading per publish
    upstream.becomeReady();
    await Promise.all([1, 2, 3, 4, 5].map((n) => outbox.send(BOILER, reading(BOILER, n))));
    expect(upstream.sent).toHaveLength(2);
    upstream.sent[0]!.ack();
    await tick();
    expect(upstream.sent).toHaveLength(3);
    for (const publish of upstream.sent.slice(1)) publish.ack();
    await tick();
    for (const publish of upstream.sent.slice(3)) publish.ack();
    await tick();
    expect(upstream.values()['Boiler-7']).toEqual([1, 2, 3, 4, 5].map((n) => ({ n })));
  });

  it('after a lost connection sends everything unacknowledged again from the oldest, in order', async () => {
    const { outbox, upstream } = build();
    upstream.maxMessageBytes = 80;
    upstream.inflightLimit = 3;
    upstream.becomeReady();
    await Promise.all([1, 2, 3, 4, 5].map((n) => outbox.send(BOILER, reading(BOILER, n))));
    const [first, second, third] = upstream.sent;
    // The broker acknowledged the second; the first and third were lost with the connection.
    second!.ack();
    await tick();
    upstream.ready = false;
    first!.fail();
    third!.fail();
    await tick();
    await tick();
    // n=4 went out when the second was acknowledged, before the connection dropped: it fails too.
    for (const publish of upstream.sent.slice(3)) publish.fail();
    await tick();
    expect(outbox.stats().delivered).toBe(1);
    const before = upstream.sent.length;
    upstream.becomeReady();
    const resent = upstream.sent.slice(before).map((p) => JSON.parse(p.payload)['Boiler-7'][0].values.n as number);
    expect(resent).toEqual([1, 3, 4]);
    expect(outbox.stats().resent).toBeGreaterThanOrEqual(3);
  });

  it('drops a stored row larger than ThingsBoard now accepts, with a warning, and goes on', async () => {
    const { outbox, upstream } = build();
    await outbox.send(BOILER, telemetryItems('Boiler-7', [{ ts: 1, values: { blob: 'x'.repeat(500) } }], 65536));
    await outbox.send(BOILER, reading(BOILER, 2));
    upstream.maxMessageBytes = 200;
    upstream.becomeReady();
    expect(upstream.values()).toEqual({ 'Boiler-7': [{ n: 2 }] });
    expect(outbox.stats().dropped.oversized).toBe(1);
    expect(lines.some((line) => /larger than ThingsBoard now accepts/.test(String(line.msg)))).toBe(true);
  });
});

describe('bounds', () => {
  it('drops the oldest readings beyond maxBytes, counts them and says so once', async () => {
    const { outbox, store } = build({ maxBytes: 10_000 });
    // Ten readings a commit: a commit apiece would wait the commit spacing 200 times.
    for (let n = 0; n < 200; n += 10) await Promise.all(Array.from({ length: 10 }, (_, i) => outbox.send(BOILER, reading(BOILER, n + i))));
    expect(store.bytes).toBeLessThanOrEqual(10_000);
    const stats = outbox.stats();
    expect(stats.dropped.quota).toBeGreaterThan(0);
    expect(stats.records + stats.dropped.quota).toBe(200);
    const oldestLeft = store.after(0, 1)[0]!;
    expect(JSON.parse(oldestLeft.body).values.n).toBe(stats.dropped.quota);
    expect(lines.filter((line) => /outbox full/.test(String(line.msg)))).toHaveLength(1);
  });

  it('drops readings older than maxAgeHours at start and on its sweeps', async () => {
    const store = openStore();
    const old = Date.now() - 3 * 3_600_000;
    store.commit(
      [1, 2].map((n) => ({ kind: UplinkKind.telemetry, device: 'Boiler-7', type: 'thermostat', body: `{"ts":${n},"values":{"n":${n}}}`, points: 1, createdAt: old, bytes: 60 })),
      [],
    );
    const { outbox, upstream } = build({ maxAgeHours: 2 }, store);
    await outbox.send(BOILER, reading(BOILER, 3));
    outbox.start();
    expect(outbox.stats().dropped.expired).toBe(2);
    upstream.becomeReady();
    expect(upstream.values()).toEqual({ 'Boiler-7': [{ n: 3 }] });
    await outbox.stop();
  });
});

describe('stopping', () => {
  it('refuses new readings, waits for publishes on their way, and keeps the unacknowledged', async () => {
    const { outbox, upstream, store } = build({ shutdownFlushMs: 2000 });
    upstream.maxMessageBytes = 80;
    upstream.becomeReady();
    await Promise.all([1, 2].map((n) => outbox.send(BOILER, reading(BOILER, n))));
    const stopped = outbox.stop();
    expect(await outbox.send(BOILER, reading(BOILER, 3))).toMatchObject({ status: 'unavailable', reason: 'the gateway is shutting down' });
    upstream.sent[0]!.ack();
    await tick();
    upstream.sent[1]!.fail();
    await stopped;
    const reopened = openStore();
    expect(reopened.records).toBe(1);
    expect(JSON.parse(reopened.after(0, 1)[0]!.body).values).toEqual({ n: 2 });
    expect(store.records).toBe(1);
  });
});

describe('the store file', () => {
  it('refuses a second user of the same file', () => {
    openStore();
    expect(() => OutboxStore.open(join(dir, 'outbox.sqlite'), 'full')).toThrow(/in use by another process/);
  });

  it('refuses a file written by a newer version, without touching it', () => {
    const path = join(dir, 'outbox.sqlite');
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    expect(() => OutboxStore.open(path, 'full')).toThrow(StoreOpenError);
    expect(() => OutboxStore.open(path, 'full')).toThrow(/newer coap2mqtt \(format 99/);
  });

  it('moves an unreadable file aside, keeping it, and starts a new one', () => {
    const path = join(dir, 'outbox.sqlite');
    writeFileSync(path, 'this is not a database, just bytes that happen to sit here'.repeat(100));
    const { store, movedAside } = OutboxStore.open(path, 'full');
    opened.push(store);
    expect(movedAside).toMatch(/outbox\.sqlite\.unreadable-/);
    expect(store.records).toBe(0);
  });

  it('numbers many rows of one commit in order and deletes acknowledged runs, counting only rows still there', () => {
    const store = openStore();
    const rows = Array.from({ length: 70 }, (_, n) => ({ kind: UplinkKind.telemetry, device: `D${n % 3}`, type: 't', body: `{"ts":${n},"values":{"n":${n}}}`, points: 1, createdAt: n, bytes: 50 + n }));
    const seqs = store.commit(rows, []); // two 32-row statements and six single ones
    expect(seqs).toEqual(Array.from({ length: 70 }, (_, i) => seqs[0]! + i));
    expect(store.after(0, 100).map((row) => [row.seq, row.body, row.bytes])).toEqual(rows.map((row, i) => [seqs[i], row.body, row.bytes]));
    expect(store.records).toBe(70);
    // Rows 0..9 go for the quota meanwhile; then 0..19 and 40 are acknowledged, out of order.
    store.dropOldest({ bytes: rows.slice(0, 10).reduce((sum, row) => sum + row.bytes, 0) });
    const acknowledged = [...seqs.slice(0, 20), seqs[40]!].reverse().map((seq, i) => ({ seq, bytes: 999 + i }));
    store.commit([], acknowledged);
    expect(store.records).toBe(70 - 21);
    expect(store.bytes).toBe(rows.reduce((sum, row) => sum + row.bytes, 0) - rows.slice(0, 20).reduce((sum, row) => sum + row.bytes, 0) - rows[40]!.bytes);
    expect(store.after(0, 100).map((row) => row.seq)).toEqual(seqs.filter((_, i) => i >= 20 && i !== 40));
  });

  it('keeps sequence numbers rising once every row was deleted, and a new open numbers after the rows it kept', () => {
    const store = openStore();
    const row = { kind: UplinkKind.telemetry, device: 'A', type: 't', body: '{}', points: 0, createdAt: 1, bytes: 30 };
    const [first] = store.commit([row, row], []);
    store.commit([], [{ seq: first!, bytes: 1 }, { seq: first! + 1, bytes: 1 }]);
    expect(store.records).toBe(0);
    // SQLite's own rowid would start again from 1 here; the outbox's cursor is past that.
    const [second] = store.commit([row], []);
    expect(second).toBe(first! + 2);
    expect(store.lastSeq).toBe(second);
    store.close();
    const again = openStore();
    expect(again.lastSeq).toBe(second);
    expect(again.commit([row], [])).toEqual([second! + 1]);
  });

  it('writes one 1 KiB page into the WAL for a one-reading commit: no sequence page, no 4 KiB frames', () => {
    const store = openStore();
    const wal = join(dir, 'outbox.sqlite-wal');
    const row = { kind: UplinkKind.telemetry, device: 'Boiler-7', type: 'thermostat', body: '{"ts":1,"values":{"temperature":21.5}}', points: 1, createdAt: 1, bytes: 80 };
    const before = statSync(wal).size;
    store.commit([row], []);
    // A WAL frame is a 24-byte header and the page.
    expect(statSync(wal).size - before).toBe(24 + 1024);
  });

  it.each([
    { version: 1, what: 'format 1' },
    { version: 0, what: 'format 1 stopped before it set its version' },
  ])('opens a file of the first format holding rows ($what), delivers them, and rebuilds it once empty', async ({ version }) => {
    const path = join(dir, 'outbox.sqlite');
    const old = new Database(path);
    old.pragma('auto_vacuum = INCREMENTAL');
    old.pragma('journal_mode = WAL');
    old.exec(`CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL, device TEXT NOT NULL, type TEXT NOT NULL,
      body TEXT NOT NULL, points INTEGER NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL)`);
    old.pragma(`user_version = ${version}`);
    const insert = old.prepare('INSERT INTO records (kind, device, type, body, points, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    for (const n of [1, 2, 3]) insert.run(UplinkKind.telemetry, BOILER.name, BOILER.type, `{"ts":${n},"values":{"n":${n}}}`, 1, 60, Date.now());
    old.exec('DELETE FROM records WHERE seq = 3'); // delivered: AUTOINCREMENT's counter is ahead of the rows
    old.close();

    const { outbox, upstream, store } = build();
    expect(store.records).toBe(2);
    outbox.start();
    expect(await outbox.send(BOILER, reading(BOILER, 4))).toEqual({ status: 'accepted' });
    upstream.becomeReady();
    expect(upstream.values()).toEqual({ 'Boiler-7': [{ n: 1 }, { n: 2 }, { n: 4 }] });
    expect(store.after(0, 10).map((row) => row.seq)).toEqual([1, 2, 3]);
    for (const publish of upstream.sent) publish.ack();
    await tick();
    await outbox.stop();

    // Empty at the next open: rebuilt in the new format, and it goes on working.
    const rebuilt = openStore();
    const file = new Database(path, { readonly: true });
    expect(file.pragma('user_version', { simple: true })).toBe(2);
    expect(file.pragma('page_size', { simple: true })).toBe(1024);
    expect(file.pragma('auto_vacuum', { simple: true })).toBe(2); // incremental: reclaim() still gives space back
    expect((file.prepare("SELECT sql FROM sqlite_master WHERE name = 'records'").get() as { sql: string }).sql).not.toMatch(/AUTOINCREMENT/);
    expect(file.prepare("SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'").get()).toBeUndefined();
    file.close();
    const again = build({}, rebuilt);
    expect(await again.outbox.send(BOILER, reading(BOILER, 5))).toEqual({ status: 'accepted' });
    again.upstream.becomeReady();
    expect(again.upstream.values()).toEqual({ 'Boiler-7': [{ n: 5 }] });
  });
});
