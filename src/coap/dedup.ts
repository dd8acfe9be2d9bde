// Message deduplication (RFC 7252 §4.5) without per-entry timers or timestamps.
//
// Entries live in a few generations ("crop rotation", as Californium calls it). Every
// lifetime/(generations-1) the oldest generation is dropped whole, so an entry survives at least the
// lifetime and at most lifetime·G/(G-1). The hard cap is kept by also rotating when the newest
// generation holds cap/G entries: under a load too heavy for the cap, the oldest quarter is forgotten
// early, never the whole table.
//
// At 40,000 requests a second the table holds a million entries. Kept as JS objects (a Map of message
// ids per peer) they cost 60 bytes each and a sixth of the gateway's CPU in garbage collection, which
// walks every one of them; so a generation is an open-addressing hash table in typed arrays, which the
// collector never walks: (peer number, message id) → the index of the value. Values are mostly a few
// shared objects (the "processing" mark, a shared 2.01), kept once per generation.

export interface DedupOptions {
  readonly lifetimeMs: number;
  readonly maxEntries: number;
  readonly generations?: number;
  readonly now?: () => number;
}

/** Slots a generation starts with; it doubles as it fills, and shrinks back when dropped. */
const INITIAL_SLOTS = 1024;
/** Distinct values a generation interns before it starts over (unique answers, e.g. 2.05 payloads, are not shared anyway). */
const MAX_INTERNED = 1024;

/** One generation: an open-addressing table (linear probing, at most half full) of typed arrays. */
class Generation<V> {
  entries = 0;
  /** When the youngest entry was added: the whole generation is at least this old. */
  lastAddedAt = 0;
  private readonly peerNumbers = new Map<string, number>();
  /** peer number · 65,536 + message id + 1; 0 marks an empty slot. */
  private keys = new Float64Array(INITIAL_SLOTS);
  private valueIndexes = new Uint32Array(INITIAL_SLOTS);
  private values: V[] = [];
  private interned = new Map<V, number>();

  get(peer: string, messageId: number): V | undefined {
    const peerNumber = this.peerNumbers.get(peer);
    if (peerNumber === undefined) return undefined;
    const slot = this.find(peerNumber * 65_536 + messageId + 1);
    return slot < 0 ? undefined : this.values[this.valueIndexes[slot]!];
  }

  /** Sets the value of an entry, adding it if new; true if it was new. */
  set(peer: string, messageId: number, value: V): boolean {
    let peerNumber = this.peerNumbers.get(peer);
    if (peerNumber === undefined) {
      peerNumber = this.peerNumbers.size;
      this.peerNumbers.set(peer, peerNumber);
    }
    const key = peerNumber * 65_536 + messageId + 1;
    const found = this.find(key);
    if (found >= 0) {
      this.valueIndexes[found] = this.intern(value);
      return false;
    }
    if (2 * (this.entries + 1) > this.keys.length) this.grow();
    const slot = this.emptySlotFor(key);
    this.keys[slot] = key;
    this.valueIndexes[slot] = this.intern(value);
    this.entries++;
    return true;
  }

  /** Replaces the value of an entry this generation holds; false if it holds none. */
  update(peer: string, messageId: number, value: V): boolean {
    const peerNumber = this.peerNumbers.get(peer);
    if (peerNumber === undefined) return false;
    const slot = this.find(peerNumber * 65_536 + messageId + 1);
    if (slot < 0) return false;
    this.valueIndexes[slot] = this.intern(value);
    return true;
  }

  clear(): void {
    this.peerNumbers.clear();
    this.values = [];
    this.interned.clear();
    this.entries = 0;
    if (this.keys.length > INITIAL_SLOTS) {
      // A burst's large table is not kept for the quiet that follows.
      this.keys = new Float64Array(INITIAL_SLOTS);
      this.valueIndexes = new Uint32Array(INITIAL_SLOTS);
    } else {
      this.keys.fill(0);
    }
  }

  private intern(value: V): number {
    let index = this.interned.get(value);
    if (index === undefined) {
      if (this.interned.size >= MAX_INTERNED) this.interned.clear();
      index = this.values.push(value) - 1;
      this.interned.set(value, index);
    }
    return index;
  }

  private find(key: number): number {
    const mask = this.keys.length - 1;
    for (let slot = hash(key) & mask; ; slot = (slot + 1) & mask) {
      const stored = this.keys[slot]!;
      if (stored === key) return slot;
      if (stored === 0) return -1;
    }
  }

  private emptySlotFor(key: number): number {
    const mask = this.keys.length - 1;
    let slot = hash(key) & mask;
    while (this.keys[slot] !== 0) slot = (slot + 1) & mask;
    return slot;
  }

  private grow(): void {
    const { keys, valueIndexes } = this;
    this.keys = new Float64Array(keys.length * 2);
    this.valueIndexes = new Uint32Array(keys.length * 2);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (key === 0) continue;
      const slot = this.emptySlotFor(key);
      this.keys[slot] = key;
      this.valueIndexes[slot] = valueIndexes[i]!;
    }
  }
}

/** Spreads (peer number, message id) keys over the table; keys stay below 2^53. */
function hash(key: number): number {
  return Math.imul((key / 65_536) | 0, 0x9e3779b1) ^ Math.imul(key & 0xffff, 0x85ebca6b);
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
    this.generations = Array.from({ length: count }, () => new Generation<V>());
    this.rotationPeriodMs = Math.ceil(options.lifetimeMs / (count - 1));
    this.generationCap = Math.max(1, Math.floor(options.maxEntries / count));
  }

  get(peer: string, messageId: number): V | undefined {
    this.rotateIfDue();
    for (const generation of this.generations) {
      const value = generation.get(peer, messageId);
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
    newest.set(peer, messageId, value);
    return keptLifetime;
  }

  /** Replaces the value of an entry where it lives, keeping its age; a no-op if it has expired. */
  update(peer: string, messageId: number, value: V): void {
    for (const generation of this.generations) {
      if (generation.update(peer, messageId, value)) return;
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
    for (const generation of this.generations) generation.clear();
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
    oldest.clear();
    this.generations.unshift(oldest);
    return !early;
  }
}
