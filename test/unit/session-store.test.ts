// The session store (state/session-store.ts) on real SQLite files: what it writes, when, and what it does
// with files it cannot trust.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { SavedObservation } from '../../src/coap/observe-journal.js';
import { createLogger } from '../../src/log.js';
import { MqttSessions } from '../../src/front-ends/mqtt/sessions.js';
import { COMMIT_DELAY_MS, COMMIT_SPACING_MS, SessionStore, type SavedRpc } from '../../src/state/session-store.js';

const log = createLogger('silent');
let dir: string;
let path: string;
const opened: SessionStore[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-sessions-'));
  path = join(dir, 'sessions.sqlite');
});

afterEach(() => {
  for (const store of opened.splice(0)) store.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(at = path, logger = log): SessionStore {
  const result = SessionStore.open(at, logger);
  if (result.status !== 'open') throw new Error(`store not open: ${result.reason}`);
  opened.push(result.store);
  return result.store;
}

/** Closes a store opened by open() (and forgets it, so afterEach does not close it twice). */
function close(store: SessionStore): void {
  store.close();
  opened.splice(opened.indexOf(store), 1);
}

const udp = (port: number, overrides: Partial<SavedObservation> = {}): SavedObservation => ({
  peer: { transport: 'udp', address: '192.0.2.1', port },
  owner: 'thermostat-1',
  token: Buffer.from([0xca, 0xfe, port & 0xff]),
  confirmable: true,
  uriPath: ['api', 'v1', 'TOKEN', 'rpc'],
  uriQuery: [],
  szx: 6,
  sequence: 17,
  generation: 1,
  ...overrides,
});
const dtlsPsk: SavedObservation = {
  peer: { transport: 'dtls', address: '2001:db8::7', port: 61000, credential: { kind: 'psk', identity: 'sensor-7' } },
  owner: 'sensor-7',
  token: Buffer.alloc(0), // RFC 7252 allows an empty token
  confirmable: false,
  uriPath: ['api', 'v1', 'attributes'],
  uriQuery: ['a=1', 'b'],
  szx: 2,
  sequence: 0xff_ffff,
  generation: 3,
};
const dtlsCertificate: SavedObservation = {
  peer: {
    transport: 'dtls',
    address: '198.51.100.4',
    port: 5684,
    credential: { kind: 'certificate', fingerprint256: 'AB:CD:EF', commonName: 'meter-4', subject: 'CN=meter-4,O=Site' },
  },
  owner: 'meter-4',
  token: Buffer.from('12345678'),
  confirmable: true,
  uriPath: ['rpc'],
  uriQuery: [],
  szx: 0,
  sequence: 0,
  generation: 2,
};
const certificateWithoutCommonName: SavedObservation = {
  ...dtlsCertificate,
  peer: { ...dtlsCertificate.peer, credential: { kind: 'certificate', fingerprint256: '01:02', commonName: undefined, subject: 'O=Site' } },
  owner: 'meter-5',
};
const rpc = (sequence: number, device = 'thermostat-1'): SavedRpc => ({
  device,
  sequence,
  call: { id: 100 + sequence, method: 'setValve', params: { open: sequence % 2 === 0, steps: [1, 2.5, 'x', null] } },
  expiresAt: 1_800_000_000_000 + sequence,
});

/** What the file holds, read by a connection of its own (what a restart would find). */
function rowsOnDisk(): { observations: number; rpcs: number } {
  const db = new Database(path, { readonly: true });
  try {
    const count = (table: string): number => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { observations: count('observations'), rpcs: count('rpcs') };
  } finally {
    db.close();
  }
}

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('session store: round trip', () => {
  it('gives back after a reopen what was added, oldest first, with every kind of peer and RPC', () => {
    const store = open();
    const saved = [udp(40001), dtlsPsk, dtlsCertificate, certificateWithoutCommonName];
    for (const each of saved) store.add(each);
    const rpcs = [rpc(1), rpc(2, 'sensor-7'), rpc(3)];
    for (const each of rpcs) store.add(each);
    expect(store.stats()).toMatchObject({ observations: 4, rpcs: 3 });
    expect(store.flush()).toBe(true);
    close(store);

    const reopened = open();
    const restored = reopened.restore(100);
    expect(restored.observations.map((each) => each.saved)).toEqual(saved);
    // Buffers come back as Buffers (toEqual alone would accept a Uint8Array).
    expect(restored.observations.every((each) => Buffer.isBuffer(each.saved.token))).toBe(true);
    expect(restored.rpcs.map((each) => each.saved)).toEqual(rpcs);
    expect(restored.unreadable).toBe(0);
    expect(restored.lastRpcSequence).toBe(3);
    expect(restored.observations.every((each) => each.entry.kept)).toBe(true);
    expect(reopened.stats()).toMatchObject({ observations: 4, rpcs: 3 });
  });

  it('writes what close() finds waiting, without an explicit flush', () => {
    const store = open();
    store.add(udp(40001));
    store.add(rpc(1));
    close(store);
    expect(rowsOnDisk()).toEqual({ observations: 1, rpcs: 1 });
  });

  it('keeps the latest update of an entry, and forgets removed ones across a reopen', () => {
    const store = open();
    const moved = store.add(udp(40001));
    const gone = store.add(udp(40002));
    const rpcGone = store.add(rpc(1));
    store.add(rpc(2));
    store.flush();
    store.update(moved, udp(40001, { peer: { transport: 'udp', address: '192.0.2.9', port: 50000 } }));
    store.update(moved, udp(40001, { peer: { transport: 'udp', address: '192.0.2.9', port: 50001 }, sequence: 0x8011, generation: 4 }));
    store.remove(gone);
    store.remove(rpcGone);
    expect(store.stats()).toMatchObject({ observations: 1, rpcs: 1 });
    close(store);

    const restored = open().restore(100);
    expect(restored.observations.map((each) => each.saved)).toEqual([
      udp(40001, { peer: { transport: 'udp', address: '192.0.2.9', port: 50001 }, sequence: 0x8011, generation: 4 }),
    ]);
    expect(restored.rpcs.map((each) => each.saved)).toEqual([rpc(2)]);
  });

  it('removes a restored entry from the file when told to', () => {
    const store = open();
    store.add(udp(40001));
    store.add(rpc(5));
    close(store);
    const reopened = open();
    const restored = reopened.restore(100);
    reopened.remove(restored.observations[0]!.entry);
    reopened.remove(restored.rpcs[0]!.entry);
    reopened.flush();
    expect(rowsOnDisk()).toEqual({ observations: 0, rpcs: 0 });
  });

  it('numbers new relations after the ones in the file, so a new row never replaces a restored one', () => {
    const first = open();
    first.add(udp(40001));
    first.add(udp(40002));
    close(first);
    const second = open();
    second.restore(100);
    second.add(udp(40003));
    close(second);
    expect(open().restore(100).observations.map((each) => each.saved.peer.port)).toEqual([40001, 40002, 40003]);
  });
});

describe('session store: commits', () => {
  it('says an entry is kept only once its latest state is committed, which happens by itself within the delay', async () => {
    const store = open();
    const entry = store.add(udp(40001));
    expect(entry.kept).toBe(false);
    expect(rowsOnDisk().observations).toBe(0);
    await sleep(COMMIT_DELAY_MS * 4);
    expect(entry.kept).toBe(true);
    expect(rowsOnDisk().observations).toBe(1);
    store.update(entry, udp(40001, { sequence: 99 }));
    expect(entry.kept).toBe(false);
    expect(store.flush()).toBe(true);
    expect(entry.kept).toBe(true);
    expect(store.stats().commits).toBe(2);
  });

  it('groups the changes of one delay into one commit', async () => {
    const store = open();
    for (let port = 40001; port <= 40050; port++) store.add(udp(port));
    await sleep(COMMIT_DELAY_MS * 4);
    expect(store.stats().commits).toBe(1);
    expect(rowsOnDisk().observations).toBe(50);
  });

  it('spaces commits COMMIT_SPACING_MS apart while changes keep coming', async () => {
    vi.useFakeTimers();
    try {
      const store = open();
      store.add(udp(40001));
      await vi.advanceTimersByTimeAsync(COMMIT_DELAY_MS);
      expect(store.stats().commits).toBe(1);
      const second = store.add(udp(40002));
      await vi.advanceTimersByTimeAsync(COMMIT_SPACING_MS - 10); // one second after the first commit, not 50 ms
      expect(second.kept).toBe(false);
      expect(rowsOnDisk().observations).toBe(1);
      await vi.advanceTimersByTimeAsync(20);
      expect(second.kept).toBe(true);
      expect(store.stats().commits).toBe(2);
      // After a quiet spell longer than the spacing, the short delay again.
      await vi.advanceTimersByTimeAsync(COMMIT_SPACING_MS * 2);
      const third = store.add(udp(40003));
      await vi.advanceTimersByTimeAsync(COMMIT_DELAY_MS);
      expect(third.kept).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });

  it('never writes an entry removed before its commit: no row, no commit', async () => {
    const store = open();
    const walBefore = existsSync(`${path}-wal`) ? readFileSync(`${path}-wal`).length : 0;
    const observation = store.add(udp(40001));
    store.update(observation, udp(40001, { sequence: 5 }));
    const call = store.add(rpc(1));
    store.remove(call); // the device acknowledged the RPC at once
    store.remove(observation); // a relation that lasted a moment
    expect(observation.kept).toBe(false);
    await sleep(COMMIT_DELAY_MS * 4);
    expect(store.flush()).toBe(true);
    expect(store.stats()).toMatchObject({ commits: 0, observations: 0, rpcs: 0 });
    expect(rowsOnDisk()).toEqual({ observations: 0, rpcs: 0 });
    const walAfter = existsSync(`${path}-wal`) ? readFileSync(`${path}-wal`).length : 0;
    expect(walAfter).toBe(walBefore);
    // Removed means removed: a late update does not bring it back either.
    store.update(observation, udp(40001, { sequence: 6 }));
    expect(store.flush()).toBe(true);
    expect(rowsOnDisk()).toEqual({ observations: 0, rpcs: 0 });
  });

  // Removed stays removed: a late update() must not write the row back, a second remove() count nothing.
  it('keeps an entry removed after its deletion was committed: a late update() does not write it back', () => {
    const store = open();
    const entry = store.add(udp(40001));
    store.flush();
    store.remove(entry);
    store.flush();
    store.update(entry, udp(40001, { sequence: 7 }));
    store.flush();
    expect(rowsOnDisk().observations).toBe(0);
  });

  it('counts an entry removed twice once', () => {
    const store = open();
    store.add(udp(40001));
    const entry = store.add(udp(40002));
    store.flush();
    store.remove(entry);
    store.flush();
    store.remove(entry);
    expect(store.stats().observations).toBe(1);
  });
});

describe('session store: generations', () => {
  it('counts every open, also one that was never closed (a crash)', () => {
    const first = open();
    close(first);
    const second = open();
    expect(second.generation).toBe(first.generation + 1);
    // Not closed: the next open still sees this start.
    const third = open();
    expect(third.generation).toBe(second.generation + 1);
    close(third);
    close(second);
    expect(open().generation).toBe(first.generation + 3);
  });

  it('starts a new file at generation 1', () => {
    expect(open().generation).toBe(1);
  });
});

describe('session store: files it cannot trust', () => {
  it('sets a file of garbage aside, byte for byte, and starts a working new one', () => {
    const garbage = Buffer.alloc(8192, 0x5a);
    writeFileSync(path, garbage);
    const result = SessionStore.open(path, log);
    expect(result.status).toBe('open');
    if (result.status !== 'open') return;
    opened.push(result.store);
    expect(result.movedAside).toMatch(/sessions\.sqlite\.unreadable-/);
    expect(readFileSync(result.movedAside!)).toEqual(garbage);
    expect(readdirSync(dir).filter((name) => name.includes('.unreadable-'))).toHaveLength(1);
    result.store.add(udp(40001));
    close(result.store);
    expect(open().restore(10).observations).toHaveLength(1);
  });

  it('sets aside a SQLite file whose table pages are damaged', () => {
    const store = open();
    for (let port = 40001; port <= 40400; port++) store.add(udp(port, { uriQuery: ['x'.repeat(100)] }));
    close(store);
    const bytes = readFileSync(path);
    // Keep the header and the schema page (1 KiB pages), scribble over the table pages.
    bytes.fill(0xa5, 4096);
    writeFileSync(path, bytes);
    const result = SessionStore.open(path, log);
    expect(result.status).toBe('open');
    if (result.status !== 'open') return;
    opened.push(result.store);
    expect(result.movedAside).toBeDefined();
    expect(result.store.restore(1000).observations).toEqual([]);
  });

  // A few bad bytes inside a page's rows (a card going bad) are found at open, where the file is set aside:
  // restore() must never throw at start, which would keep the gateway from starting at all.
  it('neither open() nor restore() throws for a file damaged inside the rows of a page', () => {
    const store = open();
    for (let port = 40001; port <= 40003; port++) store.add(udp(port));
    close(store);
    const db = new Database(path, { readonly: true });
    const [leaf] = db.prepare("SELECT pageno FROM dbstat WHERE name = 'observations' AND pagetype = 'leaf'").pluck().all() as number[];
    const pageBytes = db.pragma('page_size', { simple: true }) as number;
    db.close();
    const bytes = readFileSync(path);
    // The end of a leaf page is where its cells (the rows) are; its header and cell pointers stay intact.
    bytes.fill(0xff, leaf! * pageBytes - 150, leaf! * pageBytes);
    writeFileSync(path, bytes);

    const result = SessionStore.open(path, log);
    expect(result.status).toBe('open');
    if (result.status !== 'open') return;
    opened.push(result.store);
    expect(() => result.store.restore(100)).not.toThrow();
  });

  it.each(['delete', 'wal'])('leaves a file from a newer version untouched and reports it unusable (journal_mode %s)', (mode) => {
    const db = new Database(path);
    db.pragma(`journal_mode = ${mode}`);
    db.exec('CREATE TABLE future (x); INSERT INTO future VALUES (1)');
    db.pragma('user_version = 3');
    db.close();
    const before = sha256(path);
    const listing = readdirSync(dir).sort();
    const result = SessionStore.open(path, log);
    expect(result.status).toBe('unusable');
    if (result.status !== 'unusable') return;
    expect(result.reason).toMatch(/newer/);
    expect(sha256(path)).toBe(before);
    expect(readdirSync(dir).sort()).toEqual(listing);
  });

  it('drops rows it cannot read back (and counts them), keeping the good ones', () => {
    const store = open();
    store.add(udp(40001));
    store.add(rpc(1));
    close(store);

    const db = new Database(path);
    const insert = db.prepare(
      'INSERT INTO observations (owner, transport, address, port, credential, token, confirmable, uri_path, uri_query, szx, sequence, generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const good = ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, '["rpc"]', '[]', 6, 1, 1] as const;
    const bad: Array<Array<string | number | Buffer | null>> = [
      ['d', 'udp', '192.0.2.1', 0, null, Buffer.from('t'), 1, '["rpc"]', '[]', 6, 1, 1], // port 0
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.alloc(9), 1, '["rpc"]', '[]', 6, 1, 1], // token too long
      ['d', 'udp', '192.0.2.1', 5683, null, 'text token', 1, '["rpc"]', '[]', 6, 1, 1], // token not a blob
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, 'rpc', '[]', 6, 1, 1], // path not JSON
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, '[1]', '[]', 6, 1, 1], // path not strings
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 2, '["rpc"]', '[]', 6, 1, 1], // confirmable 2
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, '["rpc"]', '[]', 7, 1, 1], // szx 7
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, '["rpc"]', '[]', 6, 0x100_0000, 1], // sequence > 24 bits
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, '["rpc"]', '[]', 6, 1.5, 1], // sequence not an integer
      ['d', 'udp', '192.0.2.1', 5683, '{"kind":"psk"', Buffer.from('t'), 1, '["rpc"]', '[]', 6, 1, 1], // credential not JSON
      ['d', 'udp', '192.0.2.1', 5683, '{"kind":"oauth","identity":"x"}', Buffer.from('t'), 1, '["rpc"]', '[]', 6, 1, 1], // unknown kind
      ['d', 'udp', '192.0.2.1', 5683, '{"kind":"certificate","fingerprint256":"AB"}', Buffer.from('t'), 1, '["rpc"]', '[]', 6, 1, 1], // no subject
      ['d', 'udp', '192.0.2.1', 5683, null, Buffer.from('t'), 1, JSON.stringify(['x'.repeat(1_000_000)]), '[]', 6, 1, 1], // a URI no request could have
    ];
    insert.run(...good);
    for (const row of bad) insert.run(...row);
    const insertRpc = db.prepare('INSERT INTO rpcs (id, device, call, expires_at) VALUES (?, ?, ?, ?)');
    insertRpc.run(10, 'd', '{"id":1,"method":"m"', 1_800_000_000_000); // not JSON
    insertRpc.run(11, 'd', '{"id":1,"params":{}}', 1_800_000_000_000); // no method
    insertRpc.run(12, 'd', '{"id":-1,"method":"m","params":{}}', 1_800_000_000_000); // negative id
    insertRpc.run(13, 'd', '{"id":1,"method":"m","params":{}}', 'tomorrow'); // expiry not a number
    insertRpc.run(14, 'd', '{"id":2,"method":"m","params":null}', 1_800_000_000_000); // good: null params
    db.close();

    const reopened = open();
    const restored = reopened.restore(100);
    expect(restored.unreadable).toBe(bad.length + 4);
    expect(restored.observations.map((each) => each.saved.peer.port)).toEqual([40001, 5683]);
    expect(restored.rpcs.map((each) => each.saved.sequence)).toEqual([1, 14]);
    expect(restored.rpcs[1]!.saved.call).toEqual({ id: 2, method: 'm', params: null });
    expect(reopened.stats()).toMatchObject({ observations: 2, rpcs: 2 });
    reopened.flush();
    expect(rowsOnDisk()).toEqual({ observations: 2, rpcs: 2 });
  });

  it('drops the oldest rows beyond maxObservations, from the file too', () => {
    const store = open();
    for (let port = 40001; port <= 40005; port++) store.add(udp(port));
    close(store);
    const reopened = open();
    const restored = reopened.restore(3);
    expect(restored.observations.map((each) => each.saved.peer.port)).toEqual([40003, 40004, 40005]);
    expect(reopened.stats().observations).toBe(3);
    reopened.flush();
    expect(rowsOnDisk().observations).toBe(3);
    close(reopened);
    expect(open().restore(3).observations.map((each) => each.saved.peer.port)).toEqual([40003, 40004, 40005]);
  });
});

describe('session store: a commit the disk refuses', () => {
  // A real failure that works as root too: another connection holds SQLite's write lock, so the store's
  // commit waits out its busy timeout (5 s) and fails with SQLITE_BUSY, as it would on a locked file.
  it('keeps the entries waiting, says they are not kept, and writes them once the disk allows', () => {
    const lines: string[] = [];
    const store = open(path, createLogger('warn', { write: (line: string) => void lines.push(line) }));
    const entry = store.add(udp(40001));
    const call = store.add(rpc(1));
    const blocker = new Database(path);
    blocker.exec('BEGIN IMMEDIATE');
    try {
      expect(store.flush()).toBe(false);
    } finally {
      blocker.exec('ROLLBACK');
      blocker.close();
    }
    expect(entry.kept).toBe(false);
    expect(call.kept).toBe(false);
    expect(store.stats()).toMatchObject({ failedCommits: 1, commits: 0, observations: 1, rpcs: 1 });
    expect(lines.some((line) => line.includes('cannot write the device sessions'))).toBe(true);
    expect(rowsOnDisk()).toEqual({ observations: 0, rpcs: 0 });

    expect(store.flush()).toBe(true);
    expect(entry.kept).toBe(true);
    expect(call.kept).toBe(true);
    expect(rowsOnDisk()).toEqual({ observations: 1, rpcs: 1 });
  }, 20_000);

  it('brings a format 1 file forward: its relations and RPCs stay, and persistent MQTT sessions can be kept', () => {
    const db = new Database(path);
    db.exec(
      'CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);' +
        'CREATE TABLE observations (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, transport TEXT NOT NULL, address TEXT NOT NULL, port INTEGER NOT NULL, credential TEXT, token BLOB NOT NULL, confirmable INTEGER NOT NULL, uri_path TEXT NOT NULL, uri_query TEXT NOT NULL, szx INTEGER NOT NULL, sequence INTEGER NOT NULL, generation INTEGER NOT NULL);' +
        'CREATE TABLE rpcs (id INTEGER PRIMARY KEY, device TEXT NOT NULL, call TEXT NOT NULL, expires_at INTEGER NOT NULL);' +
        `INSERT INTO rpcs VALUES (4, 'thermostat-1', '{"id":9,"method":"reboot","params":{}}', ${Date.now() + 60_000});`,
    );
    db.pragma('user_version = 1');
    db.close();
    const store = open();
    const kept = store.restore(100);
    expect(kept.rpcs.map(({ saved }) => saved.call.method)).toEqual(['reboot']);
    expect(kept.mqttSessions).toEqual([]);
    store.add({ key: 'Boiler-7\u0000esp32', subscriptions: [['v1/devices/me/rpc/request/+', 1]] });
    close(store);
    const again = open().restore(100);
    expect(again.mqttSessions.map(({ saved }) => saved)).toEqual([{ key: 'Boiler-7\u0000esp32', subscriptions: [['v1/devices/me/rpc/request/+', 1]] }]);
    expect(again.rpcs).toHaveLength(1);
  });

  it('keeps a persistent MQTT session\'s subscriptions across a restart, and forgets a session ended by clean session', () => {
    const store = open();
    store.restore(100);
    const sessions = new MqttSessions(10, 0, store);
    expect(sessions.resume('dev\u0000a', false)).toBeUndefined();
    sessions.remember('dev\u0000a', 'v1/devices/me/attributes', 0);
    sessions.remember('dev\u0000a', 'v1/devices/me/rpc/request/+', 1);
    sessions.resume('dev\u0000b', false);
    sessions.resume('dev\u0000b', true);
    close(store);
    const reopened = open();
    const after = new MqttSessions(10, 0, reopened);
    after.restore(reopened.restore(100).mqttSessions);
    expect(after.size).toBe(1);
    expect([...(after.resume('dev\u0000a', false) ?? [])]).toEqual([
      ['v1/devices/me/attributes', 0],
      ['v1/devices/me/rpc/request/+', 1],
    ]);
    expect(after.resume('dev\u0000b', false)).toBeUndefined();
  });

  it('drops a session pushed out by maxSessions from the file too', () => {
    const store = open();
    store.restore(100);
    const sessions = new MqttSessions(2, 0, store);
    for (const key of ['a', 'b', 'c']) sessions.resume(key, false);
    close(store);
    expect(open().restore(100).mqttSessions.map(({ saved }) => saved.key)).toEqual(['b', 'c']);
  });
});
