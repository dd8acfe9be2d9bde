// The one small interface between the CoAP message layer and whatever carries datagrams
// (a UDP socket, or DTLS sessions). The message layer never touches sockets.
import type { PeerCredential } from '../model.js';

export interface Peer {
  /** Stable identity of the remote endpoint on its transport; keys deduplication and exchanges. */
  readonly key: string;
  readonly address: string;
  readonly port: number;
  readonly transport: DatagramTransport;
  /** Set when the transport authenticated the peer (DTLS with a PSK identity or a client certificate). */
  readonly credential?: PeerCredential;
}

export interface DatagramTransport {
  /** Short label for logs and metrics, e.g. "udp". */
  readonly name: string;
  /** Largest Block2 payload that fits one datagram with room for CoAP's header and options; absent: no limit. */
  readonly maxBlockSize?: number;
  send(peer: Peer, datagram: Buffer): void;
}

/** Where a transport delivers what it receives. */
export type DatagramSink = (datagram: Buffer, peer: Peer) => void;

export { formatAddress as formatPeer } from '../net/udp-socket.js';
