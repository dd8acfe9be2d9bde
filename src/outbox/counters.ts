// The outbox's own counts since start, shared by its parts and read by /metrics at scrape time.
export interface OutboxCounters {
  accepted: number;
  direct: number;
  spilled: number;
  delivered: number;
  publishes: number;
  resent: number;
  readonly dropped: { quota: number; expired: number; oversized: number };
  readonly rejected: { storage: number; lowDisk: number; stopping: number };
}

export function newOutboxCounters(): OutboxCounters {
  return {
    accepted: 0,
    direct: 0,
    spilled: 0,
    delivered: 0,
    publishes: 0,
    resent: 0,
    dropped: { quota: 0, expired: 0, oversized: 0 },
    rejected: { storage: 0, lowDisk: 0, stopping: 0 },
  };
}
