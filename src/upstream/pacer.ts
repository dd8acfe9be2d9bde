// Keeps publishes under ThingsBoard's rate limits: exceeding one makes the server close the whole gateway
// session, so every publish waits for room in each limit it counts against, at 80% of what was announced.
import { TokenBucket } from '../net/token-bucket.js';
import type { RateLimit, SessionLimits } from './gateway-api.js';

/** The share of an announced limit the gateway allows itself (docs/thingsboard.md, session limits). */
export const HEADROOM = 0.8;

export interface PublishCost {
  readonly telemetry: boolean;
  readonly points: number;
}

export class UpstreamPacer {
  private messages: TokenBucket[] = [];
  private telemetryMessages: TokenBucket[] = [];
  private telemetryDataPoints: TokenBucket[] = [];

  /** New limits (a new session); undefined lifts them all. Buckets start full, as ThingsBoard's do. */
  configure(limits: SessionLimits | undefined, now = Date.now()): void {
    const buckets = (list: readonly RateLimit[] | undefined): TokenBucket[] =>
      (list ?? []).map(({ capacity, seconds }) => {
        const allowed = Math.max(1, Math.floor(capacity * HEADROOM));
        return new TokenBucket(allowed / seconds, allowed, now);
      });
    this.messages = buckets(limits?.messages);
    this.telemetryMessages = buckets(limits?.telemetryMessages);
    this.telemetryDataPoints = buckets(limits?.telemetryDataPoints);
  }

  get limited(): boolean {
    return this.messages.length + this.telemetryMessages.length + this.telemetryDataPoints.length > 0;
  }

  /** Most data points one publish may carry and still fit every data-point limit at once. */
  maxPointsPerPublish(): number {
    return this.telemetryDataPoints.reduce((least, bucket) => Math.min(least, bucket.burst), Infinity);
  }

  /**
   * 0 when a publish of this cost may go now (its tokens are then taken from every limit), otherwise the
   * milliseconds to wait before asking again. A cost above a limit's whole burst is let through once the
   * bucket is full rather than never, as a single reading cannot be split any further.
   */
  take(cost: PublishCost, now = Date.now()): number {
    const wanted: Array<[TokenBucket, number]> = [];
    for (const bucket of this.messages) wanted.push([bucket, 1]);
    if (cost.telemetry) {
      for (const bucket of this.telemetryMessages) wanted.push([bucket, 1]);
      if (cost.points > 0) for (const bucket of this.telemetryDataPoints) wanted.push([bucket, Math.min(cost.points, bucket.burst)]);
    }
    let wait = 0;
    for (const [bucket, count] of wanted) wait = Math.max(wait, bucket.waitMs(count, now));
    if (wait > 0) return wait;
    for (const [bucket, count] of wanted) bucket.take(count, now);
    return 0;
  }
}
