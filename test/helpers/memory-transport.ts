import * as coapPacket from 'coap-packet';
import { decodeUint } from '../../src/coap/message.js';
import type { NotificationOutcome } from '../../src/coap/observe-api.js';
import type { DatagramTransport, Peer, PeerRecord } from '../../src/coap/transport.js';

/** A transport that keeps what the message layer sends, parsed, for unit tests. */
export class MemoryTransport implements DatagramTransport {
  readonly name = 'memory';
  readonly sent: Array<{ peer: Peer; packet: coapPacket.ParsedPacket }> = [];
  send(peer: Peer, datagram: Buffer): void {
    this.sent.push({ peer, packet: coapPacket.parse(datagram) });
  }
  /** Everything sent since the last take(), oldest first. */
  take(): coapPacket.ParsedPacket[] {
    return this.sent.splice(0).map((s) => s.packet);
  }
}

/**
 * A transport that keeps what is sent to whom, can say that a peer cannot be reached (DTLS without a
 * session), and writes peers down and brings them back as a real transport does across a restart.
 */
export class RestorableTransport implements DatagramTransport {
  readonly sent: Array<{ peer: Peer; packet: coapPacket.ParsedPacket }> = [];
  readonly unreachable = new Set<string>();
  constructor(
    readonly name: string,
    private readonly address = '192.0.2.1',
    /** False: what is sent is dropped unread (a model whose wire makes no real datagrams). */
    private readonly keep = true,
  ) {}
  send(peer: Peer, datagram: Buffer): void {
    if (this.keep) this.sent.push({ peer, packet: coapPacket.parse(datagram) });
  }
  reachable(peer: Peer): boolean {
    return !this.unreachable.has(peer.key);
  }
  record(peer: Peer): PeerRecord {
    return { transport: this.name, address: peer.address, port: peer.port };
  }
  restore(record: PeerRecord): Peer {
    return this.peer(record.port);
  }
  peer(port: number): Peer {
    return { key: `${this.name} ${this.address}:${port}`, address: this.address, port, transport: this };
  }
  /** Everything sent since the last take(), oldest first, with the port it went to. */
  take(): Array<{ port: number; packet: coapPacket.ParsedPacket }> {
    return this.sent.splice(0).map(({ peer, packet }) => ({ port: peer.port, packet }));
  }
}

/** An empty ACK or RST from the observer for the gateway's message `messageId`. */
export const ack = (messageId: number): Buffer => Buffer.from([0x60, 0x00, messageId >> 8, messageId & 0xff]);
export const reset = (messageId: number): Buffer => Buffer.from([0x70, 0x00, messageId >> 8, messageId & 0xff]);

/** The Observe option's value of a parsed packet, or undefined. */
export const observeOf = (packet: coapPacket.ParsedPacket): number | undefined => {
  const option = packet.options.find((o) => o.name === 'Observe');
  return option ? decodeUint(option.value) : undefined;
};

/** Records a notification's outcome once it settles, so tests can tell "not yet" from "failed". */
export function track(promise: Promise<NotificationOutcome>): { outcome: NotificationOutcome | undefined } {
  const holder: { outcome: NotificationOutcome | undefined } = { outcome: undefined };
  void promise.then((outcome) => (holder.outcome = outcome));
  return holder;
}
