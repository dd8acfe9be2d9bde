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
  /**
   * Whether a datagram sent to `peer` now can reach it; absent: always (plain UDP). A DTLS peer without a
   * session (after a restart, before the device's new handshake) cannot be reached.
   */
  reachable?(peer: Peer): boolean;
  /** The peer written down so it can come back after a restart; undefined when it cannot (a DTLS session without identity). */
  record?(peer: Peer): PeerRecord | undefined;
  /** A peer written down by record(), possibly by an earlier run. */
  restore?(record: PeerRecord): Peer;
}

/** What identifies a peer across restarts: its transport, address and port, and the identity DTLS proved. */
export interface PeerRecord {
  readonly transport: string;
  readonly address: string;
  readonly port: number;
  readonly credential?: PeerCredential;
}

/** Where a transport delivers what it receives. */
export type DatagramSink = (datagram: Buffer, peer: Peer) => void;

export { formatAddress as formatPeer } from '../net/udp-socket.js';
