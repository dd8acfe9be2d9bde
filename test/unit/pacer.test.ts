import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/net/token-bucket.js';
import { UpstreamPacer } from '../../src/upstream/pacer.js';

const limits = (messages: string, telemetryDataPoints = '') => ({
  maxPayloadSize: undefined,
  maxInflightMessages: undefined,
  messages: messages ? messages.split(',').map((l) => ({ capacity: Number(l.split(':')[0]), seconds: Number(l.split(':')[1]) })) : [],
  telemetryMessages: [],
  telemetryDataPoints: telemetryDataPoints
    ? telemetryDataPoints.split(',').map((l) => ({ capacity: Number(l.split(':')[0]), seconds: Number(l.split(':')[1]) }))
    : [],
});

describe('token bucket', () => {
  it('refills continuously up to its burst and says how long to wait', () => {
    const bucket = new TokenBucket(10, 5, 0);
    for (let i = 0; i < 5; i++) expect(bucket.take(1, 0)).toBe(true);
    expect(bucket.take(1, 0)).toBe(false);
    expect(bucket.waitMs(1, 0)).toBe(100);
    expect(bucket.take(1, 100)).toBe(true);
    expect(bucket.isFull(10_000)).toBe(true);
    expect(bucket.waitMs(6, 10_000)).toBe(Infinity);
  });
});

describe('upstream pacer', () => {
  it('lets everything through without limits', () => {
    const pacer = new UpstreamPacer();
    pacer.configure(undefined, 0);
    for (let i = 0; i < 10_000; i++) expect(pacer.take({ telemetry: true, points: 100 }, 0)).toBe(0);
    expect(pacer.limited).toBe(false);
  });

  it('keeps every limit at 80% of what ThingsBoard announced, the strictest deciding', () => {
    const pacer = new UpstreamPacer();
    pacer.configure(limits('100:1,600:60'), 0);
    let sent = 0;
    // Offer a publish every millisecond for two minutes.
    for (let t = 0; t < 120_000; t++) if (pacer.take({ telemetry: false, points: 0 }, t) === 0) sent++;
    // 600 per minute → 480 allowed per minute, plus the initial burst of 480.
    expect(sent).toBeLessThanOrEqual(480 + 2 * 480);
    expect(sent).toBeGreaterThan(2 * 480);
  });

  it('counts data points only for telemetry, and caps a publish\'s points at a limit\'s burst', () => {
    const pacer = new UpstreamPacer();
    pacer.configure(limits('', '100:1'), 0);
    expect(pacer.maxPointsPerPublish()).toBe(80);
    expect(pacer.take({ telemetry: true, points: 80 }, 0)).toBe(0);
    expect(pacer.take({ telemetry: true, points: 1 }, 0)).toBeGreaterThan(0);
    expect(pacer.take({ telemetry: false, points: 1_000 }, 0)).toBe(0);
    // More points than the whole burst: let through once the bucket is full again, not never.
    expect(pacer.take({ telemetry: true, points: 500 }, 1000)).toBe(0);
  });
});
