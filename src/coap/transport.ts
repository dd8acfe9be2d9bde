// The one small interface between the CoAP message layer and whatever carries datagrams
// (a UDP socket today, DTLS sessions later). The message layer never touches sockets.

export interface Peer {
  /** Stable identity of the remote endpoint on its transport; keys deduplication and exchanges. */
  readonly key: string;
  readonly address: string;
  readonly port: number;
  readonly transport: DatagramTransport;
}

export interface DatagramTransport {
  /** Short label for logs and metrics, e.g. "udp". */
  readonly name: string;
  send(peer: Peer, datagram: Buffer): void;
}

/** Where a transport delivers what it receives. */
export type DatagramSink = (datagram: Buffer, peer: Peer) => void;

/** "[2001:db8::1]:5683" / "10.0.0.5:5683" — the form technicians read in logs. */
export const formatPeer = (peer: Pick<Peer, 'address' | 'port'>): string =>
  peer.address.includes(':') ? `[${peer.address}]:${peer.port}` : `${peer.address}:${peer.port}`;
