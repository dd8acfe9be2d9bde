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
});
