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
// collector never walks: (peer number, message id) → the index of the value. Values are either a few
// shared objects (the "processing" mark, a shared 2.01), kept once per generation, or bytes (an encoded
// answer) copied into the generation's own arena: a compact copy, never a view that would keep the
// request's whole datagram alive, and counted, so the table is bounded in bytes as well as entries.
// Bytes are also counted per source address: one address cannot take more than its share.

export interface DedupOptions {
  readonly lifetimeMs: number;
  readonly maxEntries: number;
  /** Cap on the bytes of stored answers (all generations together). Default: unbounded. */
  readonly maxBytes?: number;
  /** Cap on the bytes of stored answers one source address holds. Default: maxBytes. */
  readonly maxBytesPerSource?: number;
  readonly generations?: number;
  readonly now?: () => number;
}

/**
 * How setBytes went: stored, or not because the source already holds its share of the byte cap, or the
 * entry's generation its own (the entry is left as it was).
 */
export type StoreOutcome = 'stored' | 'over-share';

/** Slots a generation starts with; it doubles as it fills, and shrinks back when dropped. */
const INITIAL_SLOTS = 1024;
/** An arena's first size; it doubles as it fills (up to the generation's share), and is let go when dropped. */
const INITIAL_ARENA_BYTES = 16 * 1024;
/** A value index with this bit set is an arena offset: the stored bytes follow a 2-byte length there. */
const IN_ARENA = 0x8000_0000;
/** Distinct values a generation interns before it starts over (unique answers, e.g. 2.05 payloads, are not shared anyway). */
const MAX_INTERNED = 1024;

/** One generation: an open-addressing table (linear probing, at most half full) of typed arrays. */
class Generation<V> {
  /** `byteCap`: the arena's share of the byte cap, which one answer may overshoot. */
  constructor(private readonly byteCap: number) {}

  entries = 0;
  /** When the youngest entry was added: the whole generation is at least this old. */
  lastAddedAt = 0;
  private readonly peerNumbers = new Map<string, number>();
  /** peer number · 65,536 + message id + 1; 0 marks an empty slot. */
  private keys = new Float64Array(INITIAL_SLOTS);
  private valueIndexes = new Uint32Array(INITIAL_SLOTS);
  private values: V[] = [];
  private interned = new Map<V, number>();
  private arena: Buffer = Buffer.alloc(0);
  /** Arena bytes in use, and by source. */
  arenaBytes = 0;
  readonly bytesBySource = new Map<string, number>();

  get(peer: string, messageId: number): V | Buffer | undefined {
    const peerNumber = this.peerNumbers.get(peer);
    if (peerNumber === undefined) return undefined;
    const slot = this.find(peerNumber * 65_536 + messageId + 1);
    return slot < 0 ? undefined : this.valueAt(this.valueIndexes[slot]!);
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

  /** The slot of an entry this generation holds, or -1. */
  slotOf(peer: string, messageId: number): number {
    const peerNumber = this.peerNumbers.get(peer);
    return peerNumber === undefined ? -1 : this.find(peerNumber * 65_536 + messageId + 1);
  }

  setValueAt(slot: number, value: V): void {
    this.valueIndexes[slot] = this.intern(value);
  }

  /** Copies `bytes` (at most 65,535) into the arena as the value of `slot`, counted against `source`. */
  setBytesAt(slot: number, bytes: Buffer, source: string): void {
    const needed = this.arenaBytes + 2 + bytes.length;
    if (needed > this.arena.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, Math.min(Math.max(INITIAL_ARENA_BYTES, this.arena.length * 2), this.byteCap)));
      this.arena.copy(grown, 0, 0, this.arenaBytes);
      this.arena = grown;
    }
    const offset = this.arenaBytes;
    this.arena.writeUInt16BE(bytes.length, offset);
    bytes.copy(this.arena, offset + 2);
    this.arenaBytes = needed;
    this.bytesBySource.set(source, (this.bytesBySource.get(source) ?? 0) + 2 + bytes.length);
    this.valueIndexes[slot] = IN_ARENA | offset;
  }

  clear(): void {
    this.peerNumbers.clear();
    this.values = [];
    this.interned.clear();
    this.bytesBySource.clear();
    this.arena = Buffer.alloc(0);
    this.arenaBytes = 0;
    this.entries = 0;
    if (this.keys.length > INITIAL_SLOTS) {
      // A burst's large table is not kept for the quiet that follows.
      this.keys = new Float64Array(INITIAL_SLOTS);
      this.valueIndexes = new Uint32Array(INITIAL_SLOTS);
    } else {
      this.keys.fill(0);
    }
  }

  /** A view into the arena for stored bytes: valid until the generation is cleared. */
  private valueAt(index: number): V | Buffer | undefined {
    if ((index & IN_ARENA) === 0) return this.values[index];
    const offset = index & ~IN_ARENA;
    return this.arena.subarray(offset + 2, offset + 2 + this.arena.readUInt16BE(offset));
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

/**
 * (peer, message id) → what became of that message: a value of the caller's (never a Buffer) or bytes
 * stored with setBytes, which get() hands back as a view to copy before keeping.
 */
export class DedupCache<V> {
  private readonly generations: Generation<V>[];
  private readonly rotationPeriodMs: number;
  private readonly generationCap: number;
  private readonly generationByteCap: number;
  private readonly maxBytesPerSource: number;
  private readonly now: () => number;
  private lastRotation: number;
  private earlyDrops = 0;

  constructor(private readonly options: DedupOptions) {
    const count = Math.max(2, options.generations ?? 4);
    this.now = options.now ?? Date.now;
    this.lastRotation = this.now();
    this.rotationPeriodMs = Math.ceil(options.lifetimeMs / (count - 1));
    this.generationCap = Math.max(1, Math.floor(options.maxEntries / count));
    // Arena offsets are 31-bit.
    this.generationByteCap = Math.min(2 ** 30, Math.floor((options.maxBytes ?? Number.MAX_SAFE_INTEGER) / count));
    this.generations = Array.from({ length: count }, () => new Generation<V>(this.generationByteCap));
    this.maxBytesPerSource = options.maxBytesPerSource ?? options.maxBytes ?? Number.MAX_SAFE_INTEGER;
  }

  get(peer: string, messageId: number): V | Buffer | undefined {
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
    const newest = this.generations[0]!;
    if (newest.entries >= this.generationCap || newest.arenaBytes >= this.generationByteCap) {
      keptLifetime = this.rotate(now);
      this.lastRotation = now;
    }
    const current = this.generations[0]!;
    current.lastAddedAt = now;
    current.set(peer, messageId, value);
    return keptLifetime;
  }

  /** Replaces the value of an entry where it lives, keeping its age; a no-op if it has expired. */
  update(peer: string, messageId: number, value: V): void {
    for (const generation of this.generations) {
      const slot = generation.slotOf(peer, messageId);
      if (slot >= 0) return generation.setValueAt(slot, value);
    }
  }

  /**
   * Makes a compact copy of `bytes` (at most 65,535) the value of an entry where it lives, counted against
   * `source` (a source address). 'over-share' when that source already holds its share, or the entry's
   * generation its share of the byte cap: the entry is left as it was, for the caller to decide.
   */
  setBytes(peer: string, messageId: number, bytes: Buffer, source: string): StoreOutcome {
    for (const generation of this.generations) {
      const slot = generation.slotOf(peer, messageId);
      if (slot < 0) continue;
      // A generation may go past its share by the one answer that fills it; the next add() then rotates.
      if (this.bytesOf(source) + 2 + bytes.length > this.maxBytesPerSource || generation.arenaBytes >= this.generationByteCap) return 'over-share';
      generation.setBytesAt(slot, bytes, source);
      return 'stored';
    }
    return 'stored'; // expired meanwhile: nothing to keep
  }

  /** Bytes of stored answers a source holds, in all generations. */
  bytesOf(source: string): number {
    let total = 0;
    for (const generation of this.generations) total += generation.bytesBySource.get(source) ?? 0;
    return total;
  }

  get size(): number {
    let total = 0;
    for (const generation of this.generations) total += generation.entries;
    return total;
  }

  /** Bytes of stored answers, all generations together. */
  get bytes(): number {
    let total = 0;
    for (const generation of this.generations) total += generation.arenaBytes;
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
