import dgram from 'node:dgram';
import type { Logger } from 'pino';
import type { DatagramSink, DatagramTransport, Peer } from './transport.js';

export interface UdpTransportOptions {
  readonly host: string;
  readonly port: number;
  /** Requested kernel buffer sizes; fan-outs of many notifications overflow the default receive buffer. */
  readonly socketBufferBytes: number;
}

export interface BoundAddress {
  readonly address: string;
  readonly port: number;
}

/**
 * Plain CoAP over UDP. "::" binds one dual-stack socket (IPv4 peers appear as ::ffff:a.b.c.d); on a box
 * whose kernel has IPv6 switched off it falls back to 0.0.0.0 and says so.
 */
export class UdpTransport implements DatagramTransport {
  readonly name = 'udp';
  private socket: dgram.Socket | undefined;

  constructor(
    private readonly options: UdpTransportOptions,
    private readonly sink: DatagramSink,
    private readonly log: Logger,
  ) {}

  async start(): Promise<BoundAddress> {
    const { host, port } = this.options;
    try {
      return await this.bind(host, port);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
        this.log.warn({ host, fallback: '0.0.0.0' }, 'IPv6 is not available on this host; listening on IPv4 only');
        return this.bind('0.0.0.0', port);
      }
      throw error;
    }
  }

  private bind(host: string, port: number): Promise<BoundAddress> {
    const socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: false });
    return new Promise((resolve, reject) => {
      socket.once('error', (error) => {
        socket.close();
        reject(error);
      });
      socket.bind({ address: host, port, exclusive: true }, () => {
        socket.removeAllListeners('error');
        socket.on('error', (error) => this.log.error({ err: error }, 'CoAP UDP socket error'));
        this.trySetBuffers(socket);
        socket.on('message', (datagram, remote) => {
          const peer: Peer = {
            key: `${remote.address}:${remote.port}`,
            address: remote.address,
            port: remote.port,
            transport: this,
          };
          this.sink(datagram, peer);
        });
        this.socket = socket;
        const bound = socket.address();
        resolve({ address: bound.address, port: bound.port });
      });
    });
  }

  private trySetBuffers(socket: dgram.Socket): void {
    try {
      socket.setRecvBufferSize(this.options.socketBufferBytes);
      socket.setSendBufferSize(this.options.socketBufferBytes);
    } catch (error) {
      // The kernel caps these at net.core.rmem_max/wmem_max; running with its default is fine.
      this.log.debug({ err: error }, 'could not enlarge UDP socket buffers');
    }
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
