// doctor's outbox line from a real outbox file read through the outbox's inspection: nothing yet, readings
// waiting for a stopped gateway, readings a running gateway is not delivering, a journal left behind, and
// a file that is not an outbox.
import { rmSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/load.js';
import { inspectOutbox } from '../../src/outbox/inspect.js';
import type { NewRecord } from '../../src/outbox/store.js';
import type { Context } from '../../src/ops/doctor/context.js';
import { checkOutbox } from '../../src/ops/doctor/outbox.js';
import { Report, type Finding } from '../../src/ops/doctor/report.js';
import { outboxRecord as record, useOutboxDir, writeOutbox } from '../helpers/outbox-file.js';

const NOW = Date.now();
const MINUTE = 60_000;
const outbox = useOutboxDir('coap2mqtt-doctor-outbox-');

const storeWith = (records: NewRecord[]): void => writeOutbox(outbox.path, records);

/** The outbox line as doctor prints it, for a gateway running (with its pid) or not. */
function outboxLine(runningPid?: number): Finding {
  const context = {
    config: { outbox: { enabled: true } } as GatewayConfig,
    stateDir: outbox.dir,
    runningPid,
    outbox: inspectOutbox(outbox.path, { createdAfter: NOW + 5 * MINUTE }),
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
    rmSync(outbox.path);
    storeWith([record(NOW - MINUTE)]);
    expect(outboxLine(4242)).toMatchObject({ status: 'ok', message: expect.stringMatching(/1 reading waiting \(100 bytes\), the oldest from [^;]*$/) });
  });

  it('says an empty outbox delivered everything, and notes a journal a gateway left behind', () => {
    storeWith([]);
    writeFileSync(`${outbox.path}-wal`, '');
    expect(outboxLine()).toMatchObject({
      status: 'ok',
      message: expect.stringMatching(/: empty, everything was delivered \(left over from a gateway that did not stop cleanly; what its journal holds is not counted\)$/),
    });
  });

  it('warns about a file that is not an outbox, with SQLite\'s reason', () => {
    writeFileSync(outbox.path, 'not a database; '.repeat(100));
    expect(outboxLine()).toEqual({ status: 'warn', check: 'outbox', message: `cannot read ${outbox.path}: not readable as an outbox: file is not a database` });
  });
});
