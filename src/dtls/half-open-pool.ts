// Half-open DTLS handshakes: sessions made once a peer has echoed its cookie (so its address is real) and
// not yet established. Each holds an OpenSSL object of ~55 KB, and any host can make one per source port
// with two datagrams and then fall silent. So they live in a pool of their own, bounded in total and per
// address, apart from established sessions, which they can never push out or keep out. This file holds
// the policy only; the server frees what it is told must go.
import { sourceKey } from '../net/source-key.js';

export interface HalfOpen {
  /** The peer's "address:port". */
  readonly key: string;
  readonly address: string;
  /** When the peer last sent a datagram of this handshake (or when it began). */
  lastActivity: number;
}

/** Why a half-open handshake was dropped or refused; also the label of the metric that counts them. */
export type DropReason = 'pool_full' | 'address_limit' | 'stalled';

export interface HalfOpenLimits {
  /** Handshakes in progress at once (dtls.maxHandshakes). */
  readonly capacity: number;
  /** Of which from one IPv4 address or IPv6 /64 (dtls.maxHandshakesPerAddress). */
  readonly perAddress: number;
  /** A handshake whose peer has been silent this long is stalled: it gives way under pressure. */
  readonly stalledAfterMs: number;
}

export type Admission<T> =
  | { readonly admitted: true; readonly givesWay?: { readonly entry: T; readonly reason: DropReason } }
  | { readonly admitted: false; readonly reason: DropReason };

export class HalfOpenPool<T extends HalfOpen> {
  /** By peer key, in order of last activity: the first is the stalest. */
  private readonly entries = new Map<string, T>();
  /** The same entries by sourceKey, in the same order. */
  private readonly bySource = new Map<string, Map<string, T>>();

  constructor(readonly limits: HalfOpenLimits) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string): T | undefined {
    return this.entries.get(key);
  }

  values(): IterableIterator<T> {
    return this.entries.values();
  }

  /**
   * Whether a peer at `address` that has just proved it owns it (a verified ClientHello) may start a
   * handshake, and who must give way for it. Its address at its limit: the address's stalest gives way if
   * stalled, else the newcomer waits (its device retransmits the ClientHello), so many devices behind one
   * NAT that reconnect together take turns instead of cutting each other off. The pool full: the stalest
   * of all gives way, stalled or not, so a flood from many addresses cannot keep newcomers out.
   */
  admit(address: string, now: number): Admission<T> {
    const source = this.bySource.get(sourceKey(address));
    if (source && source.size >= this.limits.perAddress) {
      const stalest = first(source);
      if (stalest === undefined || now - stalest.lastActivity < this.limits.stalledAfterMs) return { admitted: false, reason: 'address_limit' };
      return { admitted: true, givesWay: { entry: stalest, reason: 'address_limit' } };
    }
    const stalest = this.entries.size >= this.limits.capacity ? first(this.entries) : undefined;
    return stalest ? { admitted: true, givesWay: { entry: stalest, reason: 'pool_full' } } : { admitted: true };
  }

  /** Adds a handshake admit() let in, once whoever had to give way has been removed. */
  add(entry: T): void {
    this.remove(entry.key);
    this.entries.set(entry.key, entry);
    const source = sourceKey(entry.address);
    let peers = this.bySource.get(source);
    if (!peers) this.bySource.set(source, (peers = new Map()));
    peers.set(entry.key, entry);
  }

  /** The peer sent a datagram of this handshake: it moves to the back of the line. */
  touch(entry: T, now: number): void {
    if (this.entries.get(entry.key) !== entry) return;
    entry.lastActivity = now;
    this.add(entry);
  }

  /** Removes this handshake (not another one that has the same peer key by now); true if it was here. */
  delete(entry: T): boolean {
    if (this.entries.get(entry.key) !== entry) return false;
    this.remove(entry.key);
    return true;
  }

  /**
   * Under pressure (more than half full), the handshakes stalled now, stalest first: dropping them early
   * keeps room for devices that answer, and memory low, before the pool is full and has to evict.
   */
  stalled(now: number): T[] {
    if (this.entries.size <= this.limits.capacity / 2) return [];
    const found: T[] = [];
    for (const entry of this.entries.values()) {
      if (now - entry.lastActivity < this.limits.stalledAfterMs) break;
      found.push(entry);
    }
    return found;
  }

  /** The address (IPv6: /64) with the most handshakes in progress, for a log line; undefined when empty. */
  busiestAddress(): { readonly address: string; readonly handshakes: number } | undefined {
    let busiest: { address: string; handshakes: number } | undefined;
    for (const [address, peers] of this.bySource) {
      if (!busiest || peers.size > busiest.handshakes) busiest = { address, handshakes: peers.size };
    }
    return busiest;
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    const source = sourceKey(entry.address);
    const peers = this.bySource.get(source);
    peers?.delete(key);
    if (peers?.size === 0) this.bySource.delete(source);
  }
}

function first<T>(map: Map<string, T>): T | undefined {
  return map.values().next().value;
}
