// doctor's outbox line from a real outbox file read through the outbox's inspection: nothing yet, readings
// waiting for a stopped gateway, readings a running gateway is not delivering, a journal left behind, and
// a file that is not an outbox.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/load.js';
import { inspectOutbox } from '../../src/outbox/inspect.js';
import { OutboxStore, type NewRecord } from '../../src/outbox/store.js';
import type { Context } from '../../src/ops/doctor/context.js';
import { checkOutbox } from '../../src/ops/doctor/outbox.js';
import { Report, type Finding } from '../../src/ops/doctor/report.js';
import { UplinkKind } from '../../src/upstream/gateway-api.js';

// The inspection opens files by URI, which better-sqlite3 enables only if this is set before the first
// database of the process opens; the fixtures below open theirs first.
process.env.SQLITE_USE_URI = '1';

const NOW = Date.now();
const MINUTE = 60_000;
let dir: string;
let path: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-doctor-outbox-'));
  path = join(dir, 'outbox.sqlite');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const record = (createdAt: number): NewRecord => ({ kind: UplinkKind.telemetry, device: 'Boiler-7', type: 'thermostat', body: '{"t":21}', points: 1, createdAt, bytes: 100 });

function storeWith(records: NewRecord[]): void {
  const { store } = OutboxStore.open(path, 'normal');
  store.commit(records, []);
  store.close();
}

/** The outbox line as doctor prints it, for a gateway running (with its pid) or not. */
function outboxLine(runningPid?: number): Finding {
  const context = {
    config: { outbox: { enabled: true } } as GatewayConfig,
    stateDir: dir,
    runningPid,
    outbox: inspectOutbox(path, { createdAfter: NOW + 5 * MINUTE }),
  } as Context;
  const report = new Report(undefined);
  checkOutbox(report, context);
  expect(report.findings).toHaveLength(1);
  return report.findings[0]!;
}

describe("doctor's outbox line", () => {
  it('says the gateway creates the file at its first start when there is none', () => {
    expect(outboxLine()).toEqual({ status: 'ok', check: 'outbox', message: 'no outbox.sqlite yet: the gateway creates it at its first start' });
  });

  it('counts the readings a stopped gateway delivers first when it starts', () => {
    storeWith([record(NOW - 90 * MINUTE), record(NOW - 30 * MINUTE)]);
    const { status, message } = outboxLine();
    expect(status).toBe('ok');
    expect(message).toMatch(/^.*outbox\.sqlite, [\d.]+ KiB on disk: 2 readings waiting \(200 bytes\), the oldest from \d{4}-\d\d-\d\d \d\d:\d\d UTC; they are delivered first when the gateway starts$/);
  });

  it('warns when a running gateway has held readings for more than 15 minutes', () => {
    storeWith([record(NOW - 90 * MINUTE)]);
    expect(outboxLine(4242)).toMatchObject({ status: 'warn', message: expect.stringMatching(/1 reading waiting \(100 bytes\).*, 90 min ago: the running gateway is not delivering them; see the upstream line$/) });
    rmSync(path);
    storeWith([record(NOW - MINUTE)]);
    expect(outboxLine(4242)).toMatchObject({ status: 'ok', message: expect.stringMatching(/1 reading waiting \(100 bytes\), the oldest from [^;]*$/) });
  });

  it('says an empty outbox delivered everything, and notes a journal a gateway left behind', () => {
    storeWith([]);
    writeFileSync(`${path}-wal`, '');
    expect(outboxLine()).toMatchObject({
      status: 'ok',
      message: expect.stringMatching(/: empty, everything was delivered \(left over from a gateway that did not stop cleanly; what its journal holds is not counted\)$/),
    });
  });

  it('warns about a file that is not an outbox, with SQLite\'s reason', () => {
    writeFileSync(path, 'not a database; '.repeat(100));
    expect(outboxLine()).toEqual({ status: 'warn', check: 'outbox', message: `cannot read ${path}: not readable as an outbox: file is not a database` });
  });
});
