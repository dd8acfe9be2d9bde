// The policy of the half-open handshake pool, without sockets: who gets in, who gives way, what stalls.
import { describe, expect, it } from 'vitest';
import { HalfOpenPool, type HalfOpen, type HalfOpenLimits } from '../../src/dtls/half-open-pool.js';

interface Entry extends HalfOpen {
  readonly name: string;
}

const LIMITS: HalfOpenLimits = { capacity: 4, perAddress: 2, stalledAfterMs: 3000 };

/** A pool and a helper that admits a handshake as the server does: whoever must give way goes first. */
function pool(limits: Partial<HalfOpenLimits> = {}) {
  const handshakes = new HalfOpenPool<Entry>({ ...LIMITS, ...limits });
  const gaveWay: Array<{ name: string; reason: string }> = [];
  const refused: string[] = [];
  const start = (name: string, address: string, port: number, now: number): Entry | undefined => {
    const admission = handshakes.admit(address, now);
    if (!admission.admitted) {
      refused.push(`${name} (${admission.reason})`);
      return undefined;
    }
    if (admission.givesWay) {
      handshakes.delete(admission.givesWay.entry);
      gaveWay.push({ name: admission.givesWay.entry.name, reason: admission.givesWay.reason });
    }
    const entry: Entry = { name, key: `${address}:${port}`, address, lastActivity: now };
    handshakes.add(entry);
    return entry;
  };
  const names = () => [...handshakes.values()].map((entry) => entry.name);
  return { handshakes, start, gaveWay, refused, names };
}

describe('half-open handshake pool', () => {
  it('when full, lets the handshake silent longest give way to a newcomer, stalled or not', () => {
    const { handshakes, start, gaveWay, refused, names } = pool();
    const a = start('a', '10.0.0.1', 1, 0)!;
    start('b', '10.0.0.2', 1, 10);
    start('c', '10.0.0.3', 1, 20);
    start('d', '10.0.0.4', 1, 30);
    // a answers: it is no longer the stalest.
    handshakes.touch(a, 40);
    start('e', '10.0.0.5', 1, 50);
    start('f', '10.0.0.6', 1, 60);
    expect(gaveWay).toEqual([
      { name: 'b', reason: 'pool_full' },
      { name: 'c', reason: 'pool_full' },
    ]);
    expect(refused).toEqual([]);
    expect(names()).toEqual(['d', 'a', 'e', 'f']);
    expect(handshakes.size).toBe(4);
  });

  it('holds one address to its limit: a newcomer from it waits until one of its handshakes has stalled, others are unaffected', () => {
    const { start, gaveWay, refused, names } = pool({ capacity: 10 });
    start('a1', '10.0.0.1', 1, 0);
    start('a2', '10.0.0.1', 2, 1000);
    start('a3', '10.0.0.1', 3, 2000);
    start('b1', '10.0.0.2', 1, 2000);
    expect(refused).toEqual(['a3 (address_limit)']);
    // a1 has been silent for 3 s: it gives way to a newcomer from its own address.
    start('a4', '10.0.0.1', 4, 3000);
    expect(gaveWay).toEqual([{ name: 'a1', reason: 'address_limit' }]);
    expect(names()).toEqual(['a2', 'b1', 'a4']);
  });

  it('counts an IPv6 /64 as one address, and an IPv4-mapped address as its IPv4 one', () => {
    const { start, refused } = pool();
    start('v6-a', '2001:db8:1:2::a', 1, 0);
    start('v6-b', '2001:db8:1:2:ffff::b', 1, 0);
    start('v6-c', '2001:db8:1:2::c', 1, 0);
    start('other-64', '2001:db8:1:3::a', 1, 0);
    expect(refused).toEqual(['v6-c (address_limit)']);
    const v4 = pool();
    v4.start('plain', '192.0.2.7', 1, 0);
    v4.start('mapped', '::ffff:192.0.2.7', 2, 0);
    v4.start('third', '192.0.2.7', 3, 0);
    expect(v4.refused).toEqual(['third (address_limit)']);
  });

  it('under pressure (more than half full) names the stalled handshakes, stalest first; not at half or below', () => {
    const { handshakes, start } = pool({ capacity: 4, perAddress: 4 });
    start('a', '10.0.0.1', 1, 0);
    start('b', '10.0.0.2', 1, 1000);
    expect(handshakes.stalled(10_000)).toEqual([]);
    start('c', '10.0.0.3', 1, 2500);
    expect(handshakes.stalled(4000).map((entry) => entry.name)).toEqual(['a', 'b']);
    expect(handshakes.stalled(2999).map((entry) => entry.name)).toEqual([]);
  });

  it('removes only the handshake it is given, not a newer one of the same peer', () => {
    const { handshakes, start } = pool();
    const old = start('old', '10.0.0.1', 1, 0)!;
    handshakes.delete(old);
    const fresh = start('fresh', '10.0.0.1', 1, 10)!;
    expect(handshakes.delete(old)).toBe(false);
    handshakes.touch(old, 20);
    expect(handshakes.get('10.0.0.1:1')).toBe(fresh);
    expect(fresh.lastActivity).toBe(10);
  });

  it('names its busiest address for the log', () => {
    const { handshakes, start } = pool({ capacity: 10, perAddress: 5 });
    expect(handshakes.busiestAddress()).toBeUndefined();
    start('a', '10.0.0.1', 1, 0);
    start('b1', '2001:db8::1', 1, 0);
    start('b2', '2001:db8::2', 1, 0);
    expect(handshakes.busiestAddress()).toEqual({ address: '2001:db8:0:0::/64', handshakes: 2 });
  });
});
