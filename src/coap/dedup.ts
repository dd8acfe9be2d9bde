// Message deduplication (RFC 7252 §4.5) without per-entry timers or timestamps.
//
// Entries live in a few generations ("crop rotation", as Californium calls it). Every
// lifetime/(generations-1) the oldest generation is dropped whole, so an entry survives at least the
// lifetime and at most lifetime·G/(G-1). Within a generation entries are keyed peer → message id: the id
// is a small integer key and the peer's string is stored once, which keeps an entry near 60 bytes
// (a "peer#id" string key costs about 150). Values are references to shared objects.
//
// The hard cap is kept by also rotating when the newest generation holds cap/G entries: under a load
// too heavy for the cap, the oldest quarter is forgotten early, never the whole table.

export interface DedupOptions {
  readonly lifetimeMs: number;
  readonly maxEntries: number;
  readonly generations?: number;
  readonly now?: () => number;
}

interface Generation<V> {
  readonly peers: Map<string, Map<number, V>>;
  entries: number;
  /** When the youngest entry was added: the whole generation is at least this old. */
  lastAddedAt: number;
}

export class DedupCache<V> {
  private readonly generations: Generation<V>[];
  private readonly rotationPeriodMs: number;
  private readonly generationCap: number;
  private readonly now: () => number;
  private lastRotation: number;
  private earlyDrops = 0;

  constructor(private readonly options: DedupOptions) {
    const count = Math.max(2, options.generations ?? 4);
    this.now = options.now ?? Date.now;
    this.lastRotation = this.now();
    this.generations = Array.from({ length: count }, () => ({ peers: new Map(), entries: 0, lastAddedAt: 0 }));
    this.rotationPeriodMs = Math.ceil(options.lifetimeMs / (count - 1));
    this.generationCap = Math.max(1, Math.floor(options.maxEntries / count));
  }

  get(peer: string, messageId: number): V | undefined {
    this.rotateIfDue();
    for (const generation of this.generations) {
      const value = generation.peers.get(peer)?.get(messageId);
      if (value !== undefined) return value;
    }
    return undefined;
  }

  /** Records a first sighting; returns false when the cap forced entries younger than the lifetime out. */
  add(peer: string, messageId: number, value: V): boolean {
    const now = this.rotateIfDue();
    let keptLifetime = true;
    if (this.generations[0]!.entries >= this.generationCap) {
      keptLifetime = this.rotate(now);
      this.lastRotation = now;
    }
    const newest = this.generations[0]!;
    newest.lastAddedAt = now;
    let ids = newest.peers.get(peer);
    if (!ids) {
      ids = new Map();
      newest.peers.set(peer, ids);
    }
    if (!ids.has(messageId)) newest.entries++;
    ids.set(messageId, value);
    return keptLifetime;
  }

  /** Replaces the value of an entry where it lives, keeping its age; a no-op if it has expired. */
  update(peer: string, messageId: number, value: V): void {
    for (const generation of this.generations) {
      const ids = generation.peers.get(peer);
      if (ids?.has(messageId)) {
        ids.set(messageId, value);
        return;
      }
    }
  }

  get size(): number {
    let total = 0;
    for (const generation of this.generations) total += generation.entries;
    return total;
  }

  /** How often the cap made entries younger than the lifetime be forgotten: the cap is too small for the traffic. */
  get earlyRotations(): number {
    return this.earlyDrops;
  }

  clear(): void {
    for (const generation of this.generations) {
      generation.peers.clear();
      generation.entries = 0;
    }
  }

  /** Rotates once per elapsed period (keeping the schedule's phase); returns the current time. */
  private rotateIfDue(): number {
    const now = this.now();
    const elapsed = now - this.lastRotation;
    if (elapsed < this.rotationPeriodMs) return now;
    const periods = Math.floor(elapsed / this.rotationPeriodMs);
    for (let i = 0; i < Math.min(this.generations.length, periods); i++) this.rotate(now);
    this.lastRotation += periods * this.rotationPeriodMs;
    return now;
  }

  /** Drops the oldest generation; returns false if it still held entries younger than the lifetime. */
  private rotate(now: number): boolean {
    const oldest = this.generations.pop()!;
    const early = oldest.entries > 0 && now - oldest.lastAddedAt < this.options.lifetimeMs;
    if (early) this.earlyDrops++;
    oldest.peers.clear();
    oldest.entries = 0;
    this.generations.unshift(oldest);
    return !early;
  }
}
