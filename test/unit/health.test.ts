// The /healthz rule, on stand-ins for the upstream connection and the outbox.
import { describe, expect, it } from 'vitest';
import { healthReport, type HealthSources } from '../../src/ops/health.js';
import type { OutboxStats } from '../../src/outbox/outbox.js';
import type { UpstreamStats } from '../../src/upstream/connection.js';

const T0 = Date.parse('2026-11-22T10:00:00Z');

const connected: UpstreamStats = {
  connected: true,
  since: T0 - 60_000,
  connects: 1,
  failedAttempts: 0,
  acknowledged: 10,
  failed: 0,
  inflight: 0,
  queued: 0,
  lastFailure: undefined,
};
const lost: UpstreamStats = { ...connected, connected: false, since: T0 - 30_000, failedAttempts: 3, lastFailure: 'connection refused by 10.0.0.2' };
const neverYet: UpstreamStats = { ...connected, connected: false, since: T0 - 100, connects: 0 };
const neverReached: UpstreamStats = { ...neverYet, failedAttempts: 1, lastFailure: 'host name not found' };

const outboxStats: OutboxStats = {
  records: 12,
  bytes: 3400,
  oldestAgeMs: 42_345,
  inflight: 0,
  accepted: 12,
  direct: 0,
  spilled: 12,
  delivered: 0,
  publishes: 0,
  resent: 0,
  dropped: { quota: 0, expired: 0, oversized: 0 },
  rejected: { storage: 0, lowDisk: 0, stopping: 0 },
};

function sources(upstream: UpstreamStats, outbox: 'on' | 'off' | 'low-disk' | 'disk-full' = 'on'): HealthSources {
  return {
    upstream: { stats: () => upstream },
    outbox:
      outbox === 'off'
        ? undefined
        : { stats: () => outboxStats, refusing: outbox === 'on' ? undefined : outbox },
    devices: () => 7,
    observations: () => 2,
    dtlsSessions: () => undefined,
    upstreamUrl: 'mqtts://gateway:s3cret@tb.example.com:8883',
    startedAt: T0 - 90_000,
  };
}

describe('/healthz', () => {
  it('is 200 "ok" when connected and the outbox takes readings', () => {
    const { httpStatus, body } = healthReport(sources(connected), false, T0);
    expect(httpStatus).toBe(200);
    expect(body).toMatchObject({
      status: 'ok',
      ready: true,
      problems: [],
      uptimeSeconds: 90,
      devices: 7,
      upstream: { connected: true, since: '2026-11-22T09:59:00.000Z', reconnects: 0 },
      outbox: { enabled: true, records: 12, bytes: 3400, oldestAgeSeconds: 42.3 },
      coap: { observations: 2 },
    });
  });

  it('never shows the credentials of the broker URL', () => {
    const { body } = healthReport(sources(connected), false, T0);
    expect(body.upstream.url).toBe('mqtts://tb.example.com:8883');
    expect(JSON.stringify(body)).not.toContain('s3cret');
  });

  it('stays 200 but "degraded" with the broker down while the outbox stores readings', () => {
    const { httpStatus, body } = healthReport(sources(lost), false, T0);
    expect(httpStatus).toBe(200);
    expect(body).toMatchObject({ status: 'degraded', ready: true, upstream: { connected: false, lastFailure: 'connection refused by 10.0.0.2' } });
    expect(body.problems).toEqual([
      'not connected to the upstream broker (connection refused by 10.0.0.2) since 2026-11-22T09:59:30.000Z; readings wait in the outbox',
    ]);
  });

  it('is 503 with the broker down and no outbox: devices get 5.03', () => {
    const { httpStatus, body } = healthReport(sources(lost, 'off'), false, T0);
    expect(httpStatus).toBe(503);
    expect(body).toMatchObject({ status: 'degraded', ready: false, outbox: { enabled: false, records: 0, oldestAgeSeconds: 0 } });
    expect(body.problems[0]).toMatch(/devices are answered 5\.03 \(outbox\.enabled is false\)$/);
  });

  it('is 503 when the outbox refuses readings, connected or not', () => {
    for (const refusing of ['low-disk', 'disk-full'] as const) {
      const { httpStatus, body } = healthReport(sources(connected, refusing), false, T0);
      expect(httpStatus).toBe(503);
      expect(body).toMatchObject({ status: 'degraded', ready: false });
      expect(body.problems[0]).toMatch(/^the outbox refuses new readings \(5\.03\): the disk is/);
      expect(body.outbox.refusing).toMatch(/disk/);
    }
  });

  it('says "starting" while the first connection attempt is under way, and degraded once it failed', () => {
    expect(healthReport(sources(neverYet), false, T0)).toMatchObject({ httpStatus: 200, body: { status: 'starting', ready: true, problems: [] } });
    expect(healthReport(sources(neverYet, 'off'), false, T0)).toMatchObject({ httpStatus: 503, body: { status: 'starting', ready: false } });
    const failed = healthReport(sources(neverReached), false, T0);
    expect(failed).toMatchObject({ httpStatus: 200, body: { status: 'degraded' } });
    // Never connected: no "since" in the sentence, the reason instead.
    expect(failed.body.problems[0]).toBe('not connected to the upstream broker (host name not found); readings wait in the outbox');
  });

  it('is 503 "stopping" once the gateway stops, whatever else holds', () => {
    for (const upstream of [connected, lost]) {
      const { httpStatus, body } = healthReport(sources(upstream), true, T0);
      expect(httpStatus).toBe(503);
      expect(body).toMatchObject({ status: 'stopping', ready: false, problems: [] });
    }
  });
});
