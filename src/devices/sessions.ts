// Per-device downlink state: who listens for the device's shared-attribute pushes and RPCs, and the RPCs
// waiting for a sleeping device to listen again.
import type { JournalEntry } from '../coap/observe-journal.js';
import type { AttributeUpdate, RpcCall, Subscriber } from '../model.js';
import type { RpcJournal, SavedRpc } from '../state/session-store.js';

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
  /** Its row in the session store, from arrival until it is delivered or dropped (settle()). */
  entry: JournalEntry | undefined;
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

  constructor(
    private readonly rpcQueue: RpcQueueOptions,
    /** Where RPCs are written down until settled, so a restart or crash loses none; absent: memory only. */
    private readonly journal?: RpcJournal,
  ) {}

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

  /**
   * An RPC as it arrived: its place in line and its time to live start now. It is written down (after a
   * short delay: one the device acknowledges at once never reaches the disk) until settle().
   */
  pendingRpc(deviceName: string, call: RpcCall, now = Date.now()): PendingRpc {
    const pending: PendingRpc = { call, sequence: ++this.sequence, expiresAt: now + this.rpcQueue.ttlMs, entry: undefined };
    pending.entry = this.journal?.add({ device: deviceName, call, sequence: pending.sequence, expiresAt: pending.expiresAt });
    return pending;
  }

  /** The RPC reached the device, or was dropped: nothing of it stays written. */
  settle(pending: PendingRpc): void {
    if (pending.entry) this.journal?.remove(pending.entry);
    pending.entry = undefined;
  }

  /**
   * RPCs an earlier run wrote down, back in their devices' queues in arrival order; new ones line up after
   * them. Returns those that expired meanwhile or no longer fit, settled already.
   */
  restoreRpcs(saved: ReadonlyArray<{ readonly entry: JournalEntry; readonly saved: SavedRpc }>, now = Date.now()): Array<{ readonly device: string } & Dropped> {
    const dropped: Array<{ readonly device: string } & Dropped> = [];
    for (const { entry, saved: rpc } of saved) {
      this.sequence = Math.max(this.sequence, rpc.sequence);
      const pending: PendingRpc = { call: rpc.call, sequence: rpc.sequence, expiresAt: rpc.expiresAt, entry };
      if (rpc.expiresAt <= now) {
        this.settle(pending);
        dropped.push({ device: rpc.device, call: rpc.call, reason: 'expired' });
        continue;
      }
      for (const each of this.queueRpc(rpc.device, pending, now)) dropped.push({ device: rpc.device, ...each });
    }
    return dropped;
  }

  /** Numbers new RPCs after `sequence` (the highest the session store holds). */
  continueAfter(sequence: number): void {
    this.sequence = Math.max(this.sequence, sequence);
  }

  /** Keeps an RPC for a device that is not listening; returns what had to make room. */
  queueRpc(deviceName: string, pending: PendingRpc, now = Date.now()): Dropped[] {
    const dropped = this.expire(deviceName, now);
    const queue = this.open(deviceName).pendingRpcs;
    queue.push(pending);
    while (queue.length > this.rpcQueue.maxPerDevice) dropped.push(this.drop(queue.shift()!, 'queue full'));
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
    while (queue.length > 0 && queue[0]!.expiresAt <= now) dropped.push(this.drop(queue.shift()!, 'expired'));
    this.forgetIfEmpty(deviceName, session);
    return dropped;
  }

  private drop(pending: PendingRpc, reason: Dropped['reason']): Dropped {
    this.settle(pending);
    return { call: pending.call, reason };
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
