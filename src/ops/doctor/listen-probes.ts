// Whether a port is free, learnt the only sure way: by listening on it for a moment (exclusive, so a
// gateway's port is never shared), then closing at once.
import dgram from 'node:dgram';
import net from 'node:net';
import { formatAddress as formatEndpoint } from '../../net/udp-socket.js';

export function tryBindUdp(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((done) => {
    let socket: dgram.Socket;
    try {
      socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: false });
    } catch (error) {
      done(error as NodeJS.ErrnoException);
      return;
    }
    socket.once('error', (error: NodeJS.ErrnoException) => {
      try {
        socket.close();
      } catch {
        // Never bound.
      }
      done(error);
    });
    socket.bind({ address: host, port, exclusive: true }, () => socket.close(() => done(undefined)));
  });
}

export function tryListenTcp(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((done) => {
    const server = net.createServer();
    server.once('error', (error: NodeJS.ErrnoException) => done(error));
    server.listen({ host, port, exclusive: true }, () => server.close(() => done(undefined)));
  });
}

/** "[::1]:1883" / "127.0.0.1:1883" */
export const formatAddress = (host: string, port: number): string => formatEndpoint({ address: host, port });
