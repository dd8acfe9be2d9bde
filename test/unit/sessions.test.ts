import { describe, expect, it } from 'vitest';
import { DeviceSessions } from '../../src/devices/sessions.js';
import type { RpcCall, Subscriber } from '../../src/model.js';

const call = (id: number): RpcCall => ({ id, method: 'm', params: {} });
const subscriber = (): Subscriber<RpcCall> => ({ deliver: async () => 'sent', replaced: () => undefined, revoked: () => undefined });

describe('device sessions', () => {
  it('keeps one subscriber per kind and hands back the one it replaces', () => {
    const sessions = new DeviceSessions({ ttlMs: 1000, maxPerDevice: 10 });
    const first = subscriber();
    const second = subscriber();
    expect(sessions.subscribe('B', 'rpc', first)).toBeUndefined();
    expect(sessions.subscribe('B', 'rpc', second)).toBe(first);
    // The replaced one ending later does not remove the newer one.
    expect(sessions.unsubscribe('B', 'rpc', first)).toBe(false);
    expect(sessions.subscriber('B', 'rpc')).toBe(second);
    expect(sessions.unsubscribe('B', 'rpc', second)).toBe(true);
    expect(sessions.subscriber('B', 'rpc')).toBeUndefined();
  });

  it('queues RPCs in order, expires them after their TTL and bounds the queue', () => {
    const sessions = new DeviceSessions({ ttlMs: 1000, maxPerDevice: 2 });
    expect(sessions.queueRpc('B', sessions.pendingRpc('X', call(1), 0), 0)).toEqual([]);
    sessions.queueRpc('B', sessions.pendingRpc('X', call(2), 500), 500);
    expect(sessions.queueRpc('B', sessions.pendingRpc('X', call(3), 600), 600)).toEqual([{ call: call(1), reason: 'queue full' }]);
    const { live, dropped } = sessions.takeRpcs('B', 1550);
    expect(dropped).toEqual([{ call: call(2), reason: 'expired' }]);
    expect(live.map((p) => p.call.id)).toEqual([3]);
    expect(sessions.takeRpcs('B', 1550).live).toEqual([]);
  });

  it('puts a failed delivery back in its original place', () => {
    const sessions = new DeviceSessions({ ttlMs: 1000, maxPerDevice: 10 });
    const first = sessions.pendingRpc('X', call(1), 0);
    sessions.queueRpc('B', sessions.pendingRpc('X', call(2), 0), 0);
    sessions.requeueRpc('B', first);
    expect(sessions.takeRpcs('B', 10).live.map((p) => p.call.id)).toEqual([1, 2]);
  });

  it('expires queues of devices that never come back', () => {
    const sessions = new DeviceSessions({ ttlMs: 100, maxPerDevice: 10 });
    sessions.queueRpc('A', sessions.pendingRpc('X', call(1), 0), 0);
    sessions.queueRpc('B', sessions.pendingRpc('X', call(2), 50), 50);
    expect(sessions.expireAll(120)).toEqual([{ device: 'A', call: call(1), reason: 'expired' }]);
  });
});
