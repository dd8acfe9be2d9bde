// How long server-side RPCs take: from their arrival on v1/gateway/rpc to the device's reply (POST
// /rpc/{id}), or to the gateway giving up on them (dropped from a sleeping device's queue). Kept per RPC in
// a bounded table, read by the metrics endpoint through listeners and stats().

export type RpcEnd = 'replied' | 'dropped';

export interface RpcStats {
  /** Server-side RPCs received from ThingsBoard since start. */
  readonly received: number;
  /** Received and neither replied to nor dropped yet. */
  readonly pending: number;
  /** Forgotten without a reply: one-way RPCs, devices that never answered, or beyond the table's size. */
  readonly unanswered: number;
}

/** RPCs remembered at most; an RPC-storm beyond it forgets the oldest (counted as unanswered). */
const MAX_TRACKED = 20_000;

export class RpcRoundTrips {
  /** "device\0id" → arrival (performance.now()), oldest first. */
  private readonly arrivals = new Map<string, number>();
  private readonly listeners: Array<(end: RpcEnd, seconds: number) => void> = [];
  private received = 0;
  private unanswered = 0;

  /** `horizonMs`: an RPC with no reply after this long is forgotten. */
  constructor(
    private readonly horizonMs: number,
    private readonly maxTracked = MAX_TRACKED,
  ) {}

  onEnd(listener: (end: RpcEnd, seconds: number) => void): void {
    this.listeners.push(listener);
  }

  arrived(device: string, id: number): void {
    this.received++;
    const key = `${device}\0${id}`;
    // ThingsBoard sending the same RPC again (a persistent RPC's retry) does not restart the clock.
    if (this.arrivals.has(key)) return;
    if (this.arrivals.size >= this.maxTracked) {
      const oldest = this.arrivals.keys().next().value;
      if (oldest !== undefined) this.arrivals.delete(oldest);
      this.unanswered++;
    }
    this.arrivals.set(key, performance.now());
  }

  /** The device replied, or the gateway dropped the RPC; a second reply to one RPC is not counted. */
  ended(device: string, id: number, end: RpcEnd): void {
    const key = `${device}\0${id}`;
    const arrivedAt = this.arrivals.get(key);
    if (arrivedAt === undefined) return;
    this.arrivals.delete(key);
    const seconds = (performance.now() - arrivedAt) / 1000;
    for (const listener of this.listeners) listener(end, seconds);
  }

  /** Forgets RPCs older than the horizon; run with the bridge's periodic sweep. */
  expire(now = performance.now()): void {
    for (const [key, arrivedAt] of this.arrivals) {
      if (now - arrivedAt < this.horizonMs) break;
      this.arrivals.delete(key);
      this.unanswered++;
    }
  }

  stats(): RpcStats {
    return { received: this.received, pending: this.arrivals.size, unanswered: this.unanswered };
  }
}
