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

  it('never holds more than the cap, dropping the oldest generation first', () => {
    const { dedup, advance } = cache(100);
    for (let i = 0; i < 60; i++) dedup.add('old', i, 'x');
    advance(100);
    for (let i = 0; i < 400; i++) {
      dedup.add(`new${i % 7}`, i, 'x');
      expect(dedup.size).toBeLessThanOrEqual(100);
    }
    expect(dedup.get('old', 0)).toBeUndefined();
    expect(dedup.get(`new${399 % 7}`, 399)).toBe('x');
    expect(dedup.earlyRotations).toBeGreaterThan(0);
  });
});
