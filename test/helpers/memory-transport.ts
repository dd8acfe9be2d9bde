import * as coapPacket from 'coap-packet';
import type { DatagramTransport, Peer } from '../../src/coap/transport.js';

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
