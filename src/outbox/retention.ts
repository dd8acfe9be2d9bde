// What the outbox gives up to stay within its bounds: the oldest readings beyond outbox.maxBytes or older
// than outbox.maxAgeHours, and readings larger than ThingsBoard accepts; counted, and reported at most once
// a minute while drops go on.
import type { Logger } from 'pino';
import type { OutboxConfig } from '../config/load.js';
import type { OutboxCounters } from './counters.js';
import { mib, type DiskSpace } from './disk-space.js';
import type { Delivery } from './delivery.js';
import type { OutboxStore } from './store.js';

const AGE_SWEEP_INTERVAL_MS = 60_000;
const DROP_REPORT_INTERVAL_MS = 60_000;

export class Retention {
  private lastAgeSweep = 0;
  /** Drops since the last report. */
  private report = { quota: 0, expired: 0, oversized: 0, lastLoggedAt: 0 };

  constructor(
    private readonly store: OutboxStore,
    private readonly options: Pick<OutboxConfig, 'maxBytes' | 'maxAgeHours'>,
    private readonly counters: OutboxCounters,
    private readonly delivery: Pick<Delivery, 'dropped'>,
    private readonly disk: Pick<DiskSpace, 'failed'>,
    private readonly log: Logger,
  ) {}

  /** After a commit: over outbox.maxBytes, the oldest rows go, down to 95% in one go. */
  keepWithinQuota(): void {
    if (this.store.bytes <= this.options.maxBytes) return;
    // Down to 95% at once, so a full outbox drops in batches rather than a few rows on every commit.
    const excess = this.store.bytes - Math.floor(this.options.maxBytes * 0.95);
    this.drop('quota', () => this.store.dropOldest({ bytes: excess }));
  }

  /** Once a minute at most: rows older than outbox.maxAgeHours go. */
  expire(now: number): void {
    if (this.options.maxAgeHours <= 0 || now - this.lastAgeSweep < AGE_SWEEP_INTERVAL_MS) return;
    this.lastAgeSweep = now;
    const createdBefore = now - this.options.maxAgeHours * 3_600_000;
    this.drop('expired', () => this.store.dropOldest({ createdBefore }));
  }

  countOversized(): void {
    this.counters.dropped.oversized++;
    this.report.oversized++;
  }

  /** One warning per minute at most, with counts, while drops go on. */
  reportDrops(now: number): void {
    const report = this.report;
    const total = report.quota + report.expired + report.oversized;
    if (total === 0 || now - report.lastLoggedAt < DROP_REPORT_INTERVAL_MS) return;
    const { maxBytes, maxAgeHours } = this.options;
    this.log.warn(
      {
        droppedForSpace: report.quota,
        droppedForAge: report.expired,
        droppedOversized: report.oversized,
        maxBytes,
        maxAgeHours,
        records: this.store.records,
        droppedSinceStart: this.counters.dropped,
      },
      report.quota > 0
        ? `outbox full (outbox.maxBytes ${mib(maxBytes)}): dropped the oldest readings to keep the newest`
        : 'outbox dropped readings that waited longer than outbox.maxAgeHours',
    );
    this.report = { quota: 0, expired: 0, oversized: 0, lastLoggedAt: now };
  }

  private drop(reason: 'quota' | 'expired', drop: () => { records: number; lastSeq: number }): void {
    let result: { records: number; lastSeq: number };
    try {
      result = drop();
    } catch (error) {
      this.disk.failed(error, 0);
      return;
    }
    if (result.records === 0) return;
    this.counters.dropped[reason] += result.records;
    this.report[reason] += result.records;
    // Rows read ahead that no longer exist are not sent.
    this.delivery.dropped(result.lastSeq);
    this.reportDrops(Date.now());
  }
}
