import type dgram from 'node:dgram';
import type { Logger } from 'pino';
import { bindUdpSocket, type BoundAddress, type UdpSocketOptions } from '../net/udp-socket.js';
import type { DatagramSink, DatagramTransport, Peer, PeerRecord } from './transport.js';

export type { BoundAddress } from '../net/udp-socket.js';

/** Plain CoAP over UDP. */
export class UdpTransport implements DatagramTransport {
  readonly name = 'udp';
  private socket: dgram.Socket | undefined;

  constructor(
    private readonly options: UdpSocketOptions,
    private readonly sink: DatagramSink,
    private readonly log: Logger,
  ) {}

  async start(): Promise<BoundAddress> {
    const bound = await bindUdpSocket(
      this.options,
      (datagram, remote) => this.sink(datagram, this.peerAt(remote.address, remote.port)),
      'CoAP',
      this.log,
    );
    this.socket = bound.socket;
    return bound.address;
  }

  record(peer: Peer): PeerRecord {
    return { transport: this.name, address: peer.address, port: peer.port };
  }

  restore(record: PeerRecord): Peer {
    return this.peerAt(record.address, record.port);
  }

  private peerAt(address: string, port: number): Peer {
    return { key: `${address}:${port}`, address, port, transport: this };
  }

  send(peer: Peer, datagram: Buffer): void {
    const socket = this.socket;
    if (!socket) return;
    socket.send(datagram, peer.port, peer.address, (error) => {
      if (error) {
        // Unreachable peers are routine on lossy device networks; one debug line each keeps logs calm.
        this.log.debug({ err: error, peer: peer.key }, 'CoAP send failed');
      }
    });
  }

  async stop(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return;
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
