// Persistent MQTT sessions (CONNECT with clean session false): what a device subscribed to, kept while it
// is away so its subscriptions are open again the moment it reconnects. The RPCs that arrive meanwhile are
// not kept here: they queue in the device's session in the bridge (sessions.rpcQueueTtlMs,
// sessions.rpcQueueMax), as for every transport, and follow as soon as the subscription is open again.
import type { LRUCache } from 'lru-cache';
import { boundedCache } from '../../bounded-cache.js';

/** Filter → granted QoS. */
export type SavedSubscriptions = ReadonlyMap<string, 0 | 1>;

export class MqttSessions {
  private readonly saved: LRUCache<string, Map<string, 0 | 1>>;

  /** `max`: sessions kept; the least recently used is forgotten first. `ttlMs`: a session unused this long is forgotten. */
  constructor(max: number, ttlMs: number) {
    this.saved = boundedCache(max, ttlMs > 0 ? { ttl: ttlMs } : {});
  }

  /**
   * The session of `key` (device and client id) as the device connects: with clean session its saved
   * state is dropped (MQTT 3.1.1 §3.1.2.4); otherwise it is resumed, if there is one.
   */
  resume(key: string, clean: boolean): SavedSubscriptions | undefined {
    if (clean) {
      this.saved.delete(key);
      return undefined;
    }
    const saved = this.saved.get(key);
    if (saved) return saved;
    this.saved.set(key, new Map());
    return undefined;
  }

  remember(key: string, filter: string, qos: 0 | 1): void {
    const saved = this.saved.get(key) ?? new Map<string, 0 | 1>();
    saved.set(filter, qos);
    this.saved.set(key, saved);
  }

  forgetFilter(key: string, filter: string): void {
    this.saved.get(key)?.delete(filter);
  }

  /** Sessions kept now. */
  get size(): number {
    return this.saved.size;
  }
}
