/**
 * A token bucket: `ratePerSecond` tokens refill continuously up to `burst`. One piece serves every rate
 * limit in the gateway, device-facing (4.29 answers) and upstream (pacing under ThingsBoard's limits).
 * Time comes from the caller so tests and batch decisions use one clock reading.
 */
export class TokenBucket {
  private tokens: number;
  private updatedAt: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    now: number = Date.now(),
  ) {
    if (!(ratePerSecond > 0) || !(burst > 0)) throw new RangeError('a token bucket needs a positive rate and burst');
    this.tokens = burst;
    this.updatedAt = now;
  }

  /** Takes `count` tokens if all are there; otherwise takes none. */
  take(count = 1, now: number = Date.now()): boolean {
    this.refill(now);
    if (this.tokens < count) return false;
    this.tokens -= count;
    return true;
  }

  /** Milliseconds until `count` tokens are there (0: now). A count above the burst never fits: Infinity. */
  waitMs(count = 1, now: number = Date.now()): number {
    if (count > this.burst) return Infinity;
    this.refill(now);
    if (this.tokens >= count) return 0;
    return Math.ceil(((count - this.tokens) / this.ratePerSecond) * 1000);
  }

  /** True when the bucket is full again, so whoever keeps buckets per key may forget this one. */
  isFull(now: number = Date.now()): boolean {
    this.refill(now);
    return this.tokens >= this.burst;
  }

  private refill(now: number): void {
    const elapsed = now - this.updatedAt;
    if (elapsed <= 0) return;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed / 1000) * this.ratePerSecond);
    this.updatedAt = now;
  }
}
