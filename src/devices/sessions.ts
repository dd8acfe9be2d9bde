// Per-device downlink state: who listens for the device's shared-attribute pushes and RPCs, and the RPCs
// waiting for a sleeping device to listen again.
import type { AttributeUpdate, RpcCall, Subscriber } from '../model.js';

export interface SubscriberKinds {
  readonly attributes: Subscriber<AttributeUpdate>;
  readonly rpc: Subscriber<RpcCall>;
}
export type SubscriberKind = keyof SubscriberKinds;

export interface PendingRpc {
  readonly call: RpcCall;
  /** Arrival order, so RPCs handed back after a failed delivery keep their place. */
  readonly sequence: number;
  readonly expiresAt: number;
}

export interface RpcQueueOptions {
  readonly ttlMs: number;
  readonly maxPerDevice: number;
}

export type Dropped = { readonly call: RpcCall; readonly reason: 'expired' | 'queue full' };

class DeviceSession {
  readonly subscribers: { attributes?: Subscriber<AttributeUpdate>; rpc?: Subscriber<RpcCall> } = {};
  readonly pendingRpcs: PendingRpc[] = [];
}

export class DeviceSessions {
  private readonly sessions = new Map<string, DeviceSession>();
  private sequence = 0;

  constructor(private readonly rpcQueue: RpcQueueOptions) {}

  subscriber<K extends SubscriberKind>(deviceName: string, kind: K): SubscriberKinds[K] | undefined {
    return this.sessions.get(deviceName)?.subscribers[kind] as SubscriberKinds[K] | undefined;
  }

  /** One subscription per kind per device: returns the one the new subscriber replaces, if any. */
  subscribe<K extends SubscriberKind>(deviceName: string, kind: K, subscriber: SubscriberKinds[K]): SubscriberKinds[K] | undefined {
    const session = this.open(deviceName);
    const previous = session.subscribers[kind] as SubscriberKinds[K] | undefined;
    (session.subscribers as Record<SubscriberKind, unknown>)[kind] = subscriber;
    return previous;
  }

  /** Removes the subscriber if it is still the current one (a replaced one may end later). */
  unsubscribe<K extends SubscriberKind>(deviceName: string, kind: K, subscriber: SubscriberKinds[K]): boolean {
    const session = this.sessions.get(deviceName);
    if (!session || session.subscribers[kind] !== subscriber) return false;
    delete session.subscribers[kind];
    this.forgetIfEmpty(deviceName, session);
    return true;
  }

  /** An RPC as it arrived: its place in line and its time to live start now. */
  pendingRpc(call: RpcCall, now = Date.now()): PendingRpc {
    return { call, sequence: this.sequence++, expiresAt: now + this.rpcQueue.ttlMs };
  }

  /** Keeps an RPC for a device that is not listening; returns what had to make room. */
  queueRpc(deviceName: string, pending: PendingRpc, now = Date.now()): Dropped[] {
    const dropped = this.expire(deviceName, now);
    const queue = this.open(deviceName).pendingRpcs;
    queue.push(pending);
    while (queue.length > this.rpcQueue.maxPerDevice) dropped.push({ call: queue.shift()!.call, reason: 'queue full' });
    return dropped;
  }

  /** Puts back an RPC whose delivery failed, in its original place. */
  requeueRpc(deviceName: string, pending: PendingRpc): void {
    const queue = this.open(deviceName).pendingRpcs;
    let index = queue.length;
    while (index > 0 && queue[index - 1]!.sequence > pending.sequence) index--;
    queue.splice(index, 0, pending);
  }

  /** Everything queued for the device and still within its time to live, oldest first; the queue empties. */
  takeRpcs(deviceName: string, now = Date.now()): { readonly live: PendingRpc[]; readonly dropped: Dropped[] } {
    const dropped = this.expire(deviceName, now);
    const session = this.sessions.get(deviceName);
    if (!session) return { live: [], dropped };
    const live = session.pendingRpcs.splice(0);
    this.forgetIfEmpty(deviceName, session);
    return { live, dropped };
  }

  /** Drops expired RPCs of every device (run periodically, so memory does not hold what nobody fetches). */
  expireAll(now = Date.now()): Array<{ readonly device: string } & Dropped> {
    const dropped: Array<{ readonly device: string } & Dropped> = [];
    for (const name of [...this.sessions.keys()]) {
      for (const each of this.expire(name, now)) dropped.push({ device: name, ...each });
    }
    return dropped;
  }

  private expire(deviceName: string, now: number): Dropped[] {
    const session = this.sessions.get(deviceName);
    if (!session) return [];
    const dropped: Dropped[] = [];
    const queue = session.pendingRpcs;
    while (queue.length > 0 && queue[0]!.expiresAt <= now) dropped.push({ call: queue.shift()!.call, reason: 'expired' });
    this.forgetIfEmpty(deviceName, session);
    return dropped;
  }

  private open(deviceName: string): DeviceSession {
    let session = this.sessions.get(deviceName);
    if (!session) {
      session = new DeviceSession();
      this.sessions.set(deviceName, session);
    }
    return session;
  }

  private forgetIfEmpty(deviceName: string, session: DeviceSession): void {
    if (session.pendingRpcs.length === 0 && !session.subscribers.attributes && !session.subscribers.rpc) {
      this.sessions.delete(deviceName);
    }
  }
}
