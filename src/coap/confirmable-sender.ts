import type { Peer } from './transport.js';

export type DeliveryOutcome = 'acknowledged' | 'reset' | 'timed-out' | 'cancelled';

export interface RetransmissionParameters {
  readonly ackTimeoutMs: number;
  readonly ackRandomFactor: number;
  readonly maxRetransmit: number;
}

interface Pending {
  readonly peer: Peer;
  readonly datagram: Buffer;
  readonly onOutcome: ((outcome: DeliveryOutcome) => void) | undefined;
  timer: NodeJS.Timeout;
  timeoutMs: number;
  retransmissions: number;
}

/**
 * Confirmable messages the gateway sends (separate responses, Observe notifications): retransmitted with
 * exponential back-off from a randomised ACK_TIMEOUT (RFC 7252 §4.2) until the peer ACKs or RSTs, or
 * MAX_RETRANSMIT is spent.
 */
export class ConfirmableSender {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly parameters: RetransmissionParameters) {}

  send(peer: Peer, messageId: number, datagram: Buffer, onOutcome?: (outcome: DeliveryOutcome) => void): void {
    const key = `${peer.key}#${messageId}`;
    this.settle(key, 'cancelled');
    const { ackTimeoutMs, ackRandomFactor } = this.parameters;
    const timeoutMs = ackTimeoutMs * (1 + Math.random() * (ackRandomFactor - 1));
    const entry: Pending = {
      peer,
      datagram,
      onOutcome,
      timeoutMs,
      retransmissions: 0,
      timer: setTimeout(() => this.retransmit(key), timeoutMs),
    };
    this.pending.set(key, entry);
    peer.transport.send(peer, datagram);
  }

  /** An ACK or RST arrived from the peer; true if it matched a message still in flight. */
  settleFromPeer(peer: Peer, messageId: number, outcome: 'acknowledged' | 'reset'): boolean {
    return this.settle(`${peer.key}#${messageId}`, outcome);
  }

  /** Stops retransmitting a message nobody waits for any more (its Observe relation ended); outcome 'cancelled'. */
  cancel(peer: Peer, messageId: number): boolean {
    return this.settle(`${peer.key}#${messageId}`, 'cancelled');
  }

  stop(): void {
    for (const key of [...this.pending.keys()]) this.settle(key, 'cancelled');
  }

  private retransmit(key: string): void {
    const entry = this.pending.get(key);
    if (!entry) return;
    if (entry.retransmissions >= this.parameters.maxRetransmit) {
      this.settle(key, 'timed-out');
      return;
    }
    entry.retransmissions++;
    entry.timeoutMs *= 2;
    entry.timer = setTimeout(() => this.retransmit(key), entry.timeoutMs);
    entry.peer.transport.send(entry.peer, entry.datagram);
  }

  private settle(key: string, outcome: DeliveryOutcome): boolean {
    const entry = this.pending.get(key);
    if (!entry) return false;
    clearTimeout(entry.timer);
    this.pending.delete(key);
    entry.onOutcome?.(outcome);
    return true;
  }
}
