// A small seeded PRNG, so a failing random test can be replayed exactly: every test that draws from it
// prints its seed, and the same seed given back (through the environment variable the test names) replays it.

export class Random {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A seed from `envName` when set (to replay a failure), otherwise a fresh one. */
  static fromEnv(envName: string, fallback?: number): Random {
    const fromEnv = process.env[envName];
    if (fromEnv !== undefined && fromEnv !== '') {
      const seed = Number(fromEnv);
      if (!Number.isInteger(seed)) throw new Error(`${envName} must be an integer seed, got "${fromEnv}"`);
      return new Random(seed);
    }
    return new Random(fallback ?? Math.floor(Math.random() * 0x7fffffff));
  }

  /** mulberry32: a uniform float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max], both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
}
