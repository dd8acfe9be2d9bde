import { describe, expect, it } from 'vitest';
import { DedupCache } from '../../src/coap/dedup.js';

function cache(maxEntries = 1000) {
  let now = 0;
  const dedup = new DedupCache<string>({ lifetimeMs: 300, maxEntries, generations: 4, now: () => now });
  return { dedup, advance: (ms: number) => (now += ms) };
}

describe('DedupCache', () => {
  it('remembers an entry for at least the lifetime and forgets it within 4/3 of it', () => {
    const { dedup, advance } = cache();
    dedup.add('peer', 1, 'answer');
    advance(299);
    expect(dedup.get('peer', 1)).toBe('answer');
    advance(101);
    expect(dedup.get('peer', 1)).toBeUndefined();
  });

  it('keeps the age of an entry when its value is replaced', () => {
    const { dedup, advance } = cache();
    dedup.add('peer', 1, 'processing');
    advance(250);
    dedup.update('peer', 1, 'answer');
    expect(dedup.get('peer', 1)).toBe('answer');
    advance(150);
    expect(dedup.get('peer', 1)).toBeUndefined();
  });

  it('does not resurrect an expired entry on update', () => {
    const { dedup, advance } = cache();
    dedup.add('peer', 1, 'processing');
    advance(1000);
    dedup.update('peer', 1, 'answer');
    expect(dedup.get('peer', 1)).toBeUndefined();
    expect(dedup.size).toBe(0);
  });

  it('never holds more than the cap, forgetting only the oldest quarter under overload', () => {
    const { dedup, advance } = cache(100);
    for (let i = 0; i < 60; i++) dedup.add('old', i, 'x');
    advance(50);
    let allKept = true;
    for (let i = 0; i < 400; i++) {
      allKept = dedup.add(`new${i % 7}`, i, 'x') && allKept;
      expect(dedup.size).toBeLessThanOrEqual(100);
    }
    expect(allKept).toBe(false);
    expect(dedup.earlyRotations).toBeGreaterThan(0);
    expect(dedup.get('old', 0)).toBeUndefined();
    // What arrived last is still there: the cap never empties the whole table.
    for (let i = 330; i < 400; i++) expect(dedup.get(`new${i % 7}`, i)).toBe('x');
  });

  it('does not call it early when what the cap drops has outlived the lifetime anyway', () => {
    const { dedup, advance } = cache(100);
    for (let i = 0; i < 25; i++) dedup.add('a', i, 'x');
    advance(301);
    for (let i = 0; i < 100; i++) dedup.add('b', i, 'x');
    expect(dedup.earlyRotations).toBe(0);
  });

  it('agrees with a plain map through growth, many peers and updates', () => {
    const { dedup } = cache(1_000_000);
    const model = new Map<string, string>();
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      return seed % n;
    };
    for (let i = 0; i < 50_000; i++) {
      const peer = `10.0.${random(40)}.${random(250)}:${5683 + random(3)}`;
      const id = random(65_536);
      const key = `${peer}#${id}`;
      if (model.has(key) && random(2) === 0) {
        dedup.update(peer, id, `answer ${i}`);
        model.set(key, `answer ${i}`);
      } else if (!model.has(key)) {
        dedup.add(peer, id, 'processing');
        model.set(key, 'processing');
      }
    }
    expect(dedup.size).toBe(model.size);
    for (const [key, value] of model) {
      const [peer, id] = key.split('#') as [string, string];
      expect(dedup.get(peer, Number(id))).toBe(value);
    }
    expect(dedup.get('10.0.0.0:1', 1)).toBeUndefined();
  });

  it('keeps a compact copy of stored bytes, never a view that holds a larger buffer', () => {
    const { dedup } = cache();
    const datagram = Buffer.alloc(59_000, 0x61);
    dedup.add('peer', 1, 'processing');
    expect(dedup.setBytes('peer', 1, datagram.subarray(0, 40), 'source')).toBe('stored');
    datagram.fill(0x62);
    const stored = dedup.get('peer', 1);
    expect(Buffer.isBuffer(stored)).toBe(true);
    expect(stored).toEqual(Buffer.alloc(40, 0x61));
    expect(dedup.bytes).toBe(42);
    expect(dedup.bytesOf('source')).toBe(42);
  });

  it('holds at most its byte cap: the newest generation full rotates early, like the entry cap', () => {
    let now = 0;
    const dedup = new DedupCache<string>({ lifetimeMs: 300, maxEntries: 1_000_000, maxBytes: 4000, generations: 4, now: () => now });
    for (let i = 0; i < 1000; i++) {
      dedup.add(`peer${i % 50}`, i, 'processing');
      dedup.setBytes(`peer${i % 50}`, i, Buffer.alloc(100, i & 0xff), `source${i % 50}`);
      expect(dedup.bytes).toBeLessThanOrEqual(4000 + 102);
    }
    expect(dedup.earlyRotations).toBeGreaterThan(0);
    // What came last is kept.
    expect(dedup.get('peer49', 999)).toEqual(Buffer.alloc(100, 999 & 0xff));
    now += 1000;
    expect(dedup.get('peer49', 999)).toBeUndefined();
    expect(dedup.bytes).toBe(0);
  });

  it('refuses bytes beyond a source\'s share, leaving the entry as it was, while other sources still store', () => {
    const dedup = new DedupCache<string>({ lifetimeMs: 300, maxEntries: 1000, maxBytes: 1_000_000, maxBytesPerSource: 500 });
    let refused = 0;
    for (let i = 0; i < 10; i++) {
      dedup.add('flood:1', i, 'processing');
      if (dedup.setBytes('flood:1', i, Buffer.alloc(98), 'flood') === 'over-share') refused++;
    }
    expect(dedup.bytesOf('flood')).toBe(500);
    expect(refused).toBe(5);
    expect(dedup.get('flood:1', 9)).toBe('processing');
    dedup.add('device:1', 1, 'processing');
    expect(dedup.setBytes('device:1', 1, Buffer.alloc(98), 'device')).toBe('stored');
  });
});
