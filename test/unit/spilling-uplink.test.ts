// outbox.mode "spill": the choice between the direct path and the outbox, against a real outbox on a real
// SQLite file and a stand-in for the MQTT connection whose publishes the test acknowledges or fails one by
// one (test/helpers/fake-upstream.ts). The real broker paths (withheld PUBACKs, SIGKILL) are in test/e2e/durability.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import type { Device, UplinkOutcome } from '../../src/model.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { SpillingUplink } from '../../src/outbox/spilling-uplink.js';
import { OutboxStore } from '../../src/outbox/store.js';
import { telemetryItems } from '../../src/upstream/gateway-api.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';

const BOILER: Device = { name: 'Boiler-7', type: 'thermostat' };
/** The `n` of every reading upstream, in publish order. */
const sentValues = (upstream: FakeUpstream): number[] => (upstream.values()['Boiler-7'] ?? []).map((value) => (value as { n: number }).n);
const reading = (n: number) => telemetryItems(BOILER.name, [{ ts: 1_700_000_000_000 + n, values: { n } }], 65536);
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let dir: string;
const closers: Array<() => unknown> = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-spill-unit-'));
});
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  rmSync(dir, { recursive: true, force: true });
});

function build(spillAfterMs = 60_000) {
  const upstream = new FakeUpstream(true);
  const { store } = OutboxStore.open(join(dir, 'outbox.sqlite'), 'full');
  const log = createLogger('silent');
  const outbox = new Outbox(
    store,
    upstream,
    () => {},
    { mode: 'spill', spillAfterMs, maxBytes: 1 << 30, maxAgeHours: 0, minFreeDiskBytes: 0, shutdownFlushMs: 0, dir },
    log,
  );
  const announced: string[] = [];
  const uplink = new SpillingUplink(outbox, upstream, { ensureAnnounced: (device) => void announced.push(device.name) }, spillAfterMs, log);
  outbox.start();
  closers.push(() => outbox.stop(), () => uplink.stop());
  return { uplink, outbox, upstream, store, announced };
}

describe('the direct path', () => {
  it('sends a reading straight upstream, answers it on the PUBACK and writes nothing', async () => {
    const { uplink, outbox, upstream, store, announced } = build();
    let answer: UplinkOutcome | undefined;
    void uplink.send(BOILER, reading(1)).then((outcome) => (answer = outcome));
    await tick();
    expect(upstream.sent).toHaveLength(1);
    expect(upstream.sent[0]!.options.untimed).toBe(true);
    expect(announced).toEqual(['Boiler-7']);
    expect(answer).toBeUndefined(); // not before the PUBACK
    upstream.sent[0]!.ack();
    await tick();
    expect(answer).toEqual({ status: 'accepted' });
    expect(store.lastSeq).toBe(0); // never stored
    expect(outbox.stats()).toMatchObject({ accepted: 1, direct: 1, spilled: 0, records: 0 });
  });

  it('packs the readings of one turn into one publish', async () => {
    const { uplink, upstream } = build();
    const answers = [1, 2, 3].map((n) => uplink.send(BOILER, reading(n)));
    await tick();
    expect(upstream.sent).toHaveLength(1);
    upstream.sent[0]!.ack();
    expect(await Promise.all(answers)).toEqual(Array(3).fill({ status: 'accepted' }));
    expect(sentValues(upstream)).toEqual([1, 2, 3]);
  });
});

describe('spilling', () => {
  it('stores readings while upstream is not ready, and sends them from the outbox once it is', async () => {
    const { uplink, outbox, upstream, store } = build();
    upstream.ready = false;
    expect(await uplink.send(BOILER, reading(1))).toEqual({ status: 'accepted' }); // once durable
    expect(store.records).toBe(1);
    expect(upstream.sent).toHaveLength(0);
    upstream.becomeReady();
    expect(sentValues(upstream)).toEqual([1]);
    expect(outbox.stats()).toMatchObject({ direct: 0, spilled: 1 });
  });

  it('stores readings while the in-flight window is full', async () => {
    const { uplink, upstream, store } = build();
    upstream.inflightLimit = 1;
    void uplink.send(BOILER, reading(1));
    await tick();
    expect(upstream.outstanding).toBe(1);
    expect(await uplink.send(BOILER, reading(2))).toEqual({ status: 'accepted' });
    expect(store.records).toBe(1);
  });

  it('keeps a device\'s order: while earlier readings wait in the outbox, later ones join them there, and the direct path resumes once it has drained', async () => {
    const { uplink, outbox, upstream, store } = build();
    upstream.ready = false;
    await uplink.send(BOILER, reading(1));
    upstream.ready = true; // connected again, but the outbox has not sent reading 1 yet
    await uplink.send(BOILER, reading(2));
    expect(store.records).toBe(2);
    upstream.becomeReady();
    expect(sentValues(upstream)).toEqual([1, 2]);
    upstream.sent[0]!.ack();
    await tick();
    expect(outbox.drained).toBe(true);
    const third = uplink.send(BOILER, reading(3));
    await tick();
    expect(upstream.sent).toHaveLength(2);
    upstream.sent[1]!.ack();
    expect(await third).toEqual({ status: 'accepted' });
    expect(sentValues(upstream)).toEqual([1, 2, 3]);
    expect(outbox.stats()).toMatchObject({ direct: 1, spilled: 2 });
  });

  it('stores a reading whose PUBACK is late, with everything sent after it, in order; the copies wait for the publishes and go once they are lost', async () => {
    const { uplink, outbox, upstream, store } = build(100);
    const first = uplink.send(BOILER, reading(1));
    await tick();
    const second = uplink.send(BOILER, reading(2));
    await tick();
    expect(upstream.sent).toHaveLength(2); // two turns, two direct publishes, neither acknowledged
    expect(await first).toEqual({ status: 'accepted' }); // stored after 100 ms
    expect(await second).toEqual({ status: 'accepted' });
    expect(store.lastSeq).toBe(2);
    expect(outbox.stats()).toMatchObject({ direct: 0, spilled: 2 });
    expect(uplink.spilledLate).toBe(2);
    await tick();
    expect(sentValues(upstream)).toEqual([1, 2]); // the copies wait: on one connection they could not be acknowledged sooner
    expect(outbox.drained).toBe(false);
    const third = uplink.send(BOILER, reading(3)); // behind them, in the outbox
    expect(await third).toEqual({ status: 'accepted' });
    expect(upstream.sent).toHaveLength(2);
    upstream.ready = false;
    upstream.sent[0]!.fail();
    upstream.sent[1]!.fail();
    await tick();
    upstream.becomeReady();
    expect(sentValues(upstream)).toEqual([1, 2, 1, 2, 3]);
  });

  it('drops the stored copy when the late PUBACK comes before the copy is sent', async () => {
    const { uplink, outbox, upstream, store } = build(50);
    const answer = uplink.send(BOILER, reading(1));
    expect(await answer).toEqual({ status: 'accepted' });
    expect(store.records).toBe(1);
    upstream.sent[0]!.ack(); // late
    await tick();
    await sleep(1_200); // deletions ride with the next commit, or go alone after a second
    expect(store.records).toBe(0);
    expect(sentValues(upstream)).toEqual([1]); // never sent twice
    expect(outbox.stats()).toMatchObject({ delivered: 1, spilled: 1, direct: 0 });
  });

  it('answers on a late PUBACK that beats the disk', async () => {
    const { uplink, upstream, store } = build(50);
    let answer: UplinkOutcome | undefined;
    void uplink.send(BOILER, reading(1)).then((outcome) => (answer = outcome));
    await tick();
    const sync = store.sync.bind(store);
    let finishSync: (() => void) | undefined;
    store.sync = (done) => void (finishSync = () => sync(done)); // the disk is slow
    await sleep(80);
    expect(store.records).toBe(1); // stored, not yet durable
    expect(answer).toBeUndefined();
    upstream.sent[0]!.ack();
    await tick();
    expect(answer).toEqual({ status: 'accepted' });
    store.sync = sync;
    finishSync!();
  });

  it('stores everything on its way when the connection is lost before the PUBACKs, in order', async () => {
    const { uplink, upstream } = build();
    const answers = [uplink.send(BOILER, reading(1))];
    await tick();
    answers.push(uplink.send(BOILER, reading(2)));
    await tick();
    upstream.ready = false;
    upstream.sent[1]!.fail(); // the later one's callback first
    upstream.sent[0]!.fail();
    expect(await Promise.all(answers)).toEqual([{ status: 'accepted' }, { status: 'accepted' }]);
    upstream.becomeReady();
    expect(sentValues(upstream)).toEqual([1, 2, 1, 2]);
  });

  it('answers 5.03 when a reading must be stored and the outbox is stopping', async () => {
    const { uplink, outbox, upstream } = build();
    upstream.ready = false;
    await outbox.stop();
    expect(await uplink.send(BOILER, reading(1))).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/shutting down/) });
  });
});
