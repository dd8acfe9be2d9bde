import { randomInt } from 'node:crypto';
import type { LRUCache } from 'lru-cache';
import type { Peer } from './transport.js';
import { boundedCache } from '../bounded-cache.js';

/**
 * Message ids for messages the gateway originates (separate responses, NON responses, notifications).
 * RFC 7252 §4.4 asks for uniqueness per peer within EXCHANGE_LIFETIME; one global counter would wrap
 * after 65,536 messages (a few seconds at full load) and collide in a busy device's deduplicator, so
 * each peer gets its own counter, starting at a random point.
 */
export class MessageIdAllocator {
  private readonly counters: LRUCache<string, { next: number }>;

  constructor(maxPeers: number, idleMs: number) {
    // The idle time counts from the last use: a counter dropped while in use would restart at a random
    // point and could repeat an id the peer still remembers (Observe relations outlive EXCHANGE_LIFETIME).
    this.counters = boundedCache(maxPeers, { ttl: idleMs, updateAgeOnGet: true });
  }

  next(peer: Peer): number {
    let counter = this.counters.get(peer.key);
    if (!counter) {
      counter = { next: randomInt(0x10000) };
      this.counters.set(peer.key, counter);
    }
    const id = counter.next;
    counter.next = (id + 1) & 0xffff;
    return id;
  }

  clear(): void {
    this.counters.clear();
  }
}
